"""Shared fixtures: the real shared dumps, a project folder on tmp_path, a fixed clock."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from mailserver import SUBSCRIBERS, Server, smtp_table

from digest.config import Config, load_config

pytest_plugins = ["pgcluster"]  # pg_cluster, pg_url: a throwaway PostgreSQL server

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
SHARED_DUMPS = ROOT.parent / "shared" / "dumps"
DUMP_NAMES = (
    "000_345bcfecd1a8dc1e.txt", "001_678841eeb3dec03e.txt", "002_85c4cb1a3430f434.txt",
    "003_bb9585124912689a.txt", "004_64ec980823e0f5fb.txt",
)
# The day the shared dumps are taken to have been saved (their yearless dates resolve
# against it), so that results do not depend on when the files were copied.
DUMP_DAY = date(2026, 11, 23)


@pytest.fixture(scope="session", autouse=True)
def vector_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One embedding cache for the whole session, never the user's own (subprocesses too)."""
    folder = tmp_path_factory.mktemp("vector-cache")
    before = os.environ.get("DIGEST_CACHE_DIR")
    os.environ["DIGEST_CACHE_DIR"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("DIGEST_CACHE_DIR", None)
    else:
        os.environ["DIGEST_CACHE_DIR"] = before


@pytest.fixture(scope="session", autouse=True)
def no_lookups() -> Iterator[None]:
    """No test asks the real HF or arXiv APIs (subprocesses included): enrichment is off
    unless a test turns it on against its own loopback server (tests/test_links.py)."""
    before = os.environ.get("DIGEST_ENRICH")
    os.environ["DIGEST_ENRICH"] = "0"
    yield
    if before is None:
        os.environ.pop("DIGEST_ENRICH", None)
    else:
        os.environ["DIGEST_ENRICH"] = before


@pytest.fixture(scope="session")
def shared_dumps() -> list[Path]:
    """The five real page dumps. Missing dumps fail the test: they must never skip."""
    paths = [SHARED_DUMPS / n for n in DUMP_NAMES]
    missing = [str(p) for p in paths if not p.is_file()]
    assert not missing, f"the shared dumps must sit beside the repo: missing {missing}"
    return paths


@dataclass
class Clock:
    """A clock tests move by hand."""

    now: datetime = field(default_factory=lambda: datetime(2026, 11, 23, 8, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now

    def tick(self, hours: float = 1.0) -> None:
        self.now += timedelta(hours=hours)


@pytest.fixture
def clock() -> Clock:
    """A controllable UTC clock."""
    return Clock()


@dataclass
class Project:
    """A digest deployment in a temporary folder."""

    root: Path

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def config_path(self) -> Path:
        return self.root / "config.toml"

    def config(self) -> Config:
        return load_config(self.config_path)

    def drop(self, source: Path, name: str | None = None) -> Path:
        """Copy a dump into the inbox (as a scheduler would drop it)."""
        self.inbox.mkdir(exist_ok=True)
        target = self.inbox / (name or source.name)
        shutil.copyfile(source, target)
        return target

    def write_config(self, subscribers: str, extra: str = "") -> None:
        self.config_path.write_text(
            "[digest]\n"
            'title = "Test digest"\n'
            'inbox = "inbox"\n'
            'data_dir = "data"\n'
            'feeds_dir = "feeds"\n'
            'site_url = "https://digest.example.org/"\n'
            f"{extra}\n{subscribers}",
            encoding="utf-8",
        )


DEFAULT_SUBSCRIBERS = """
[[subscribers]]
name = "ana"
email = "ana@example.org"
keywords = ["CLIP", "data curation", { term = "medical", weight = 2 }]
exclude = ["survey"]

[[subscribers]]
name = "all"
max_items = 1000
"""


@pytest.fixture
def project(tmp_path: Path) -> Project:
    """An empty deployment with two subscribers: keyword-driven 'ana' and firehose 'all'."""
    p = Project(tmp_path / "site")
    p.root.mkdir()
    p.inbox.mkdir()
    p.write_config(DEFAULT_SUBSCRIBERS, extra="also_new = 1000")
    return p


def tree_state(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file under root with its size, mtime and content (to prove nothing changed)."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file()}


def dated(path: Path, day: date = DUMP_DAY) -> Path:
    """Give a dump a fixed modification date, so its yearless dates resolve the same way."""
    import os

    stamp = datetime(day.year, day.month, day.day, 12, tzinfo=UTC).timestamp()
    os.utime(path, (stamp, stamp))
    return path


Dropper = Callable[[Path], Path]


@pytest.fixture
def server() -> Iterator[Server]:
    """A real SMTP server on 127.0.0.1 whose replies a test can script."""
    s = Server().start()
    yield s
    s.stop()


@pytest.fixture
def mailing(project: Project, server: Server) -> Project:
    """The deployment with the mail tests' readers, sending through ``server``."""
    project.write_config(SUBSCRIBERS, extra=smtp_table(server.port))
    return project
