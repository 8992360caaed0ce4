"""A real, throwaway PostgreSQL server for tests, run from the server's own binaries.

``Cluster`` makes a temporary folder, runs ``initdb`` in it and starts ``postgres`` on a
free loopback port (durability off: fsync, synchronous commit and full-page writes), then
hands out fresh databases. ``initdb`` refuses to run as root, so when the tests run as root
the server binaries are run as the ``postgres`` user (Debian's package creates it).

Fixtures (import them into a test module, or into conftest.py to share them)::

    from pgcluster import pg_cluster, pg_url

    def test_something(pg_url: str) -> None:
        with psycopg.connect(pg_url) as conn: ...

``pg_cluster`` is one server for the session; ``pg_url`` is a fresh database per test,
dropped afterwards. Without server binaries the tests skip, unless
``DIGEST_REQUIRE_POSTGRES=1`` is set (as CI does), when they fail.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import psycopg

BINARIES = ("initdb", "pg_ctl", "postgres")
DEBIAN_ROOT = Path("/usr/lib/postgresql")  # Debian's layout: /usr/lib/postgresql/<ver>/bin
RUN_AS = "postgres"  # the account the server runs under when we are root
REQUIRE_ENV = "DIGEST_REQUIRE_POSTGRES"


def _has_all(folder: Path) -> bool:
    return all(os.access(folder / name, os.X_OK) for name in BINARIES)


def _version_key(folder: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", folder.name)) or (-1,)


def find_bin_dir() -> Path | None:
    """The folder holding initdb, pg_ctl and postgres: from PATH, else Debian's newest."""
    found = shutil.which("initdb")
    if found:
        # A symlink on PATH (say into /usr/lib/postgresql/<ver>/bin) counts for its target's
        # folder, where the other binaries sit; else the folder on PATH itself.
        for folder in (Path(found).resolve().parent, Path(found).parent):
            if _has_all(folder):
                return folder
    if DEBIAN_ROOT.is_dir():
        versions = sorted((p for p in DEBIAN_ROOT.iterdir() if _has_all(p / "bin")),
                          key=_version_key, reverse=True)
        if versions:
            return versions[0] / "bin"
    return None


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


class Cluster:
    """One PostgreSQL server in its own temporary folder, on 127.0.0.1 and a free port."""

    host = "127.0.0.1"

    def __init__(self, bin_dir: Path | None = None, *, start_timeout: int = 60,
                 settings: dict[str, str] | None = None) -> None:
        found = bin_dir or find_bin_dir()
        if found is None:
            raise RuntimeError("no PostgreSQL server binaries (initdb, pg_ctl, postgres) found")
        self.bin_dir: Path = found
        self.start_timeout = start_timeout
        self.settings = dict(settings or {})  # more server settings (a bench's memory)
        self.port = 0
        self.root: Path | None = None
        self._admin: psycopg.Connection[tuple[object, ...]] | None = None
        self._as_root = os.geteuid() == 0

    # -- paths ---------------------------------------------------------------------------
    def _need_root(self) -> Path:
        if self.root is None:
            raise RuntimeError("the cluster is not started")
        return self.root

    @property
    def data_dir(self) -> Path:
        return self._need_root() / "data"

    @property
    def socket_dir(self) -> Path:
        return self._need_root() / "sock"

    @property
    def log_path(self) -> Path:
        return self._need_root() / "server.log"

    def url_for(self, dbname: str) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{dbname}"

    @property
    def url(self) -> str:
        """The maintenance database ``postgres``: for setting up, not for tests' data."""
        return self.url_for("postgres")

    # -- running the server's tools ------------------------------------------------------
    def _run(self, args: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self._as_root:
            command = ["runuser", "-u", RUN_AS, "--", *command]
        return subprocess.run(command, cwd=self._need_root(), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout, check=False)

    def start(self) -> Cluster:
        """initdb a fresh data folder and start the server; RuntimeError (with the log) if not."""
        if self.root is not None:
            return self
        if self._as_root:
            try:
                import pwd

                account = pwd.getpwnam(RUN_AS)
            except KeyError:
                raise RuntimeError(f"running as root needs a {RUN_AS!r} account to run the "
                                   "server as (initdb refuses root)") from None
        self.root = Path(tempfile.mkdtemp(prefix="digest-pg-"))
        self.root.chmod(0o755)  # readable by anyone debugging; data/ itself stays 0700
        self.socket_dir.mkdir()
        if self._as_root:
            for folder in (self.root, self.socket_dir):
                os.chown(folder, account.pw_uid, account.pw_gid)
        init = self._run(["initdb", "-D", str(self.data_dir), "-A", "trust", "-U", "postgres",
                          "--no-sync", "-E", "UTF8", "--locale=C"], timeout=120)
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed (exit {init.returncode}); folder kept at "
                               f"{self.root}\n{init.stdout}{init.stderr}")
        for attempt in itertools.count(1):
            self.port = _free_port()
            options = " ".join([
                "-k", shlex.quote(str(self.socket_dir)), "-p", str(self.port),
                "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                "-c", "max_connections=200",
                *(f"-c {shlex.quote(f'{k}={v}')}" for k, v in self.settings.items()),
            ])
            started = self._run(["pg_ctl", "start", "-w", "-t", str(self.start_timeout),
                                 "-D", str(self.data_dir), "-l", str(self.log_path),
                                 "-o", options], timeout=self.start_timeout + 30)
            if started.returncode == 0:
                return self
            log = _tail(self.log_path)
            # Another process may have taken the free port between our look and the bind.
            if "Address already in use" in log and attempt < 3:
                continue
            self._stop_server()
            raise RuntimeError(
                f"PostgreSQL did not start (pg_ctl exit {started.returncode}); folder kept at "
                f"{self.root}\n{started.stdout}{started.stderr}\n"
                f"--- last lines of {self.log_path} ---\n{log}")
        raise AssertionError("unreachable")  # pragma: no cover

    def _stop_server(self) -> None:
        """Stop the server hard: pg_ctl's immediate mode, then SIGKILL if it is still up."""
        if self.root is None or not (self.data_dir / "postmaster.pid").exists():
            return
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            stopped = self._run(["pg_ctl", "stop", "-m", "immediate", "-w", "-t", "30",
                                 "-D", str(self.data_dir)], timeout=45)
            if stopped.returncode == 0:
                return
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGKILL)
            for _ in range(100):  # the postmaster's children die with it (quickly)
                os.kill(pid, 0)
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server and remove its folder. Safe to call twice or after a failed start."""
        if self._admin is not None:
            with contextlib.suppress(Exception):
                self._admin.close()
            self._admin = None
        if self.root is None:
            return
        try:
            self._stop_server()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- databases -----------------------------------------------------------------------
    def _admin_conn(self) -> psycopg.Connection[tuple[object, ...]]:
        import psycopg

        if self._admin is None or self._admin.closed:
            self._admin = psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        return self._admin

    def create_database(self, name: str) -> str:
        """CREATE DATABASE ``name`` (a copy of template1); its URL."""
        from psycopg import sql

        self._admin_conn().execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """DROP DATABASE ``name``, closing any connections a test left open to it."""
        from psycopg import sql

        self._admin_conn().execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# -- pytest fixtures -----------------------------------------------------------------------
# One server per session even when several modules import the fixture (each import makes
# pytest register a fixture of its own): the server is shared and counted.
_shared: Cluster | None = None
_users = 0
_names = itertools.count(1)


def bin_dir_or_skip() -> Path:
    """find_bin_dir(), or skip the test without one (fail it if DIGEST_REQUIRE_POSTGRES=1)."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        reason = ("PostgreSQL server binaries (initdb, pg_ctl, postgres) not found on PATH "
                  f"or in {DEBIAN_ROOT}/<version>/bin; install Debian's 'postgresql'")
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{reason} ({REQUIRE_ENV}=1: these tests must run)", pytrace=False)
        pytest.skip(reason)
    return bin_dir


def postgres_cluster() -> Iterator[Cluster]:
    """The session's server (a generator for a fixture). Skips without server binaries,
    or fails then if DIGEST_REQUIRE_POSTGRES=1."""
    global _shared, _users
    if _shared is None:
        _shared = Cluster(bin_dir_or_skip()).start()
    cluster = _shared
    _users += 1
    try:
        yield cluster
    finally:
        _users -= 1
        if _users == 0:
            _shared = None
            cluster.stop()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """A real PostgreSQL server for the whole session."""
    yield from postgres_cluster()


@pytest.fixture
def pg_url(pg_cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty database for this test (dropped afterwards): its URL."""
    slug = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")[:40]
    name = f"t{next(_names)}_{os.getpid()}_{slug}"
    url = pg_cluster.create_database(name)
    try:
        yield url
    finally:
        pg_cluster.drop_database(name)
