"""The throwaway PostgreSQL server (tests/pgcluster.py) is real and behaves as the
storage code will rely on: its own databases, advisory locks, SKIP LOCKED."""

from __future__ import annotations

import pgcluster
import psycopg
import pytest
from pgcluster import Cluster, bin_dir_or_skip, pg_cluster, pg_url

__all__ = ["pg_cluster", "pg_url"]  # fixtures: pytest finds them in this module's namespace


def test_bin_dir_holds_the_server_binaries() -> None:
    folder = bin_dir_or_skip()
    assert all((folder / name).is_file() for name in ("initdb", "pg_ctl", "postgres"))


def test_missing_binaries_skip_unless_postgres_is_required(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pgcluster, "find_bin_dir", lambda: None)
    monkeypatch.setattr(pgcluster, "_shared", None)  # as if no server had started yet
    monkeypatch.delenv("DIGEST_REQUIRE_POSTGRES", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not found"):
        next(pgcluster.postgres_cluster())
    monkeypatch.setenv("DIGEST_REQUIRE_POSTGRES", "1")
    with pytest.raises(pytest.fail.Exception, match="DIGEST_REQUIRE_POSTGRES=1"):
        next(pgcluster.postgres_cluster())


def test_server_is_postgresql_15_or_newer(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        version = conn.execute("SELECT version()").fetchone()
        number = conn.execute("SHOW server_version_num").fetchone()
    assert version is not None and str(version[0]).startswith("PostgreSQL ")
    assert number is not None and int(str(number[0])) >= 150000


def test_the_server_listens_on_loopback_with_its_settings(pg_cluster: Cluster) -> None:
    assert pg_cluster.host == "127.0.0.1" and pg_cluster.port > 0
    with psycopg.connect(pg_cluster.url) as conn:
        settings: dict[str, str] = dict(conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)",
            (["listen_addresses", "fsync", "max_connections", "server_encoding"],),
        ).fetchall())
    assert settings == {"listen_addresses": "127.0.0.1", "fsync": "off",
                        "max_connections": "200", "server_encoding": "UTF8"}


def test_fresh_databases_are_independent(pg_cluster: Cluster) -> None:
    first = pg_cluster.create_database("indep_a")
    second = pg_cluster.create_database("indep_b")
    try:
        assert first != second
        with psycopg.connect(first) as conn:
            conn.execute("CREATE TABLE only_here (id int)")
            conn.execute("INSERT INTO only_here VALUES (1)")
        with psycopg.connect(second) as conn:
            found = conn.execute("SELECT to_regclass('only_here')").fetchone()
        assert found == (None,)
        with psycopg.connect(first) as conn:
            assert conn.execute("SELECT count(*) FROM only_here").fetchone() == (1,)
    finally:
        pg_cluster.drop_database("indep_a")
        pg_cluster.drop_database("indep_b")


def test_each_test_gets_an_empty_database(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
        conn.execute("CREATE TABLE left_behind (id int)")  # the next test must not see it
    assert tables == (0,)


def test_the_next_test_does_not_see_the_last_ones_tables(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT to_regclass('left_behind')").fetchone() == (None,)


def test_dropping_a_database_closes_connections_left_open(pg_cluster: Cluster) -> None:
    url = pg_cluster.create_database("left_open")
    conn = psycopg.connect(url)
    try:
        pg_cluster.drop_database("left_open")  # WITH (FORCE): no "being accessed" error
        with psycopg.connect(pg_cluster.url) as admin:
            gone = admin.execute(
                "SELECT count(*) FROM pg_database WHERE datname = 'left_open'").fetchone()
        assert gone == (0,)
    finally:
        conn.close()


def test_advisory_lock_blocks_others_until_its_connection_closes(pg_url: str) -> None:
    holder = psycopg.connect(pg_url, autocommit=True)
    other = psycopg.connect(pg_url, autocommit=True)
    try:
        holder.execute("SELECT pg_advisory_lock(42)")
        assert other.execute("SELECT pg_try_advisory_lock(42)").fetchone() == (False,)
        assert other.execute("SELECT pg_try_advisory_lock(43)").fetchone() == (True,)
        holder.close()  # a session lock dies with its session
        # The server ends the session a moment after the client closed it: wait for the
        # lock (bounded) rather than try once.
        other.execute("SET lock_timeout = '20s'")
        other.execute("SELECT pg_advisory_lock(42)")  # LockNotAvailable if still held
        assert other.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 42 AND"
            " pid = pg_backend_pid()").fetchone() == (1,)
    finally:
        holder.close()
        other.close()


def test_skip_locked_claims_disjoint_rows(pg_url: str) -> None:
    with psycopg.connect(pg_url) as setup:
        setup.execute("CREATE TABLE jobs (id int PRIMARY KEY)")
        setup.execute("INSERT INTO jobs SELECT generate_series(1, 10)")
    claim = "SELECT id FROM jobs ORDER BY id LIMIT 4 FOR UPDATE SKIP LOCKED"
    with psycopg.connect(pg_url) as a, psycopg.connect(pg_url) as b:
        # Each connection holds its transaction (psycopg opens one per connection) open.
        first = {row[0] for row in a.execute(claim).fetchall()}
        second = {row[0] for row in b.execute(claim).fetchall()}
        assert first == {1, 2, 3, 4}
        assert second == {5, 6, 7, 8}
        a.rollback()  # a's claims go back; b still holds its own
        again = {row[0] for row in a.execute(claim).fetchall()}
        assert again == {1, 2, 3, 4}
        assert not again & second


def test_stop_removes_the_folder_and_is_safe_twice() -> None:
    cluster = Cluster(bin_dir_or_skip()).start()
    root = cluster.root
    assert root is not None and (root / "data" / "PG_VERSION").is_file()
    cluster.stop()
    cluster.stop()
    assert not root.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(cluster.url, connect_timeout=2).close()
