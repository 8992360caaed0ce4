"""``copy_store``: a SQLite store made by real runs, copied into a real PostgreSQL database,
keeps every row, every id, every Message-ID and every feed entry id; what it must refuse
it refuses, leaving both sides as they were."""

from __future__ import annotations

import shutil
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from conftest import DUMP_NAMES, SHARED_DUMPS, Clock, Project, dated, tree_state
from lxml import etree
from mailserver import SUBSCRIBERS, free_port, smtp_table
from pgcluster import pg_cluster, pg_url

import digest.storecopy as storecopy
from digest.errors import LockedError, StoreError, UsageError
from digest.pipeline import FEED_FINGERPRINT, FEEDS_BUILT, run
from digest.schema import MIGRATIONS
from digest.store import Store
from digest.storecopy import CopyReport, copy_store

__all__ = ["pg_cluster", "pg_url"]  # fixtures: pytest finds them in this module's namespace
ATOM = "{http://www.w3.org/2005/Atom}"
SMTP = smtp_table(free_port())  # mail is queued (send=False), never sent: no server needed


# -- the source: a store made by running the pipeline on the shared dumps --------------------
@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A deployment (once per module) whose store real runs filled: four dumps in three
    runs, so several runs, issues and queued mails; then a vote, vectors, a job, a source's
    state, an enrichment row, a stale page, an outbox claim, a send pace and a reader's
    claim, so that every table holds rows."""
    with pytest.MonkeyPatch.context() as env:
        env.delenv("DIGEST_STORE_URL", raising=False)  # this store is SQLite's
        return _build(tmp_path_factory)


def _build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dumps = [SHARED_DUMPS / n for n in DUMP_NAMES]
    assert all(p.is_file() for p in dumps), "the shared dumps must sit beside the repo"
    project = Project(tmp_path_factory.mktemp("built") / "site")
    project.root.mkdir()
    project.inbox.mkdir()
    project.write_config(SUBSCRIBERS, extra=SMTP)
    clock = Clock()
    for batch in (dumps[0:2], dumps[2:3], dumps[3:4]):
        for path in batch:
            dated(project.drop(path))
        run(project.config(), now=clock, send=False)
        clock.tick(24)
    store = Store.open(project.config().store_path)
    try:
        keys = [str(r[0]) for r in store.conn.execute("SELECT key FROM papers ORDER BY id"
                                                      " LIMIT 3")]
        store.record_votes("ana", [(keys[0], True), (keys[1], False)], clock())
        # every byte value, NUL and 0xff included: bytea must keep them
        store.put_vectors("test-model", {keys[0]: bytes(range(256)), keys[1]: b"\x00" * 8})
        store.set_job_slot("run:ana", clock(), clock())
        store.set_source_state("hf", clock(), "200", etag='"abc"', keep_validators=False,
                               url="https://example.org/papers")
        with store.transaction() as conn:
            conn.execute("INSERT INTO enrichment (paper_id, source, pending, reason,"
                         " checked_at) SELECT id, 'arxiv', 1, 'no link', ? FROM papers"
                         " ORDER BY id LIMIT 2", ("2026-11-23T08:00:00+00:00",))
            conn.execute("INSERT INTO stale_pages (issue_id) SELECT max(id) FROM issues")
            conn.execute("INSERT INTO page_changes (issue_id) SELECT max(id) FROM issues")
            conn.execute("INSERT INTO feed_changes (subscriber, n) VALUES ('ana', 2)")
            conn.execute("INSERT INTO outbox_claims (id, claimed_by, lease_until, tried)"
                         " SELECT min(id), 'host-1', '2026-11-23T08:05:00+00:00', 1"
                         " FROM outbox")
            conn.execute("UPDATE send_pace SET next_at = 1795420800.25")  # not the seed's 0
            conn.execute("INSERT INTO render_claims (subscriber, claimed_by, lease_until)"
                         " VALUES ('ana', 'host-1', '2026-11-23T08:15:00+00:00')")
    finally:
        store.close()
    return project.root


@pytest.fixture
def site(built: Path, tmp_path: Path) -> Project:
    """This test's own copy of the built deployment."""
    root = tmp_path / "site"
    shutil.copytree(built, root)
    return Project(root)


def sqlite_tables(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
    try:
        names = [str(r[0]) for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'"
            " AND name NOT LIKE 'sqlite!_%' ESCAPE '!'")]
        return {t: int(conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0])
                for t in names}
    finally:
        conn.close()


def sqlite_rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
    try:
        return [tuple(r) for r in conn.execute(sql)]
    finally:
        conn.close()


def pg_rows(url: str, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return [tuple(r) for r in conn.execute(sql, params or None)]


def every_row(rows: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
    """Rows in one order whatever order the engine gave them in."""
    return sorted(rows, key=repr)


def pg_counts(url: str, tables: list[str]) -> dict[str, int]:
    return {t: int(str(pg_rows(url, f'SELECT count(*) FROM "{t}"')[0][0])) for t in tables}


def pg_tables(url: str) -> set[str]:
    return {str(r[0]) for r in pg_rows(
        url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


def feed_ids(path: Path) -> list[str]:
    """The feed's own <id>, then every entry's, in order."""
    root = etree.fromstring(path.read_bytes())
    return [str(root.findtext(f"{ATOM}id"))] + [
        str(e.findtext(f"{ATOM}id")) for e in root.iter(f"{ATOM}entry")]


def point_at(project: Project, url: str) -> None:
    project.write_config(SUBSCRIBERS, extra=f'{SMTP}\n[store]\nurl = "{url}"\n')


def assert_empty(url: str) -> None:
    """The schema is there and holds nothing but what its migrations put in."""
    tables = pg_tables(url) - {"schema_version"}
    assert tables, "the schema was made"
    counts = pg_counts(url, sorted(tables))
    seeded = storecopy._fresh_rows()
    assert {t: n for t, n in counts.items() if n} == {t: len(r) for t, r in seeded.items()}
    assert set(pg_rows(url, "SELECT key, value FROM meta")) == seeded["meta"]
    assert seeded["meta"] == {("enriched_upto", "0")}


@pytest.fixture(autouse=True)
def no_store_url_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DIGEST_STORE_URL", raising=False)


# -- the copy ------------------------------------------------------------------------------
def test_every_table_and_row_arrives_and_nothing_of_the_source_changes(
        site: Project, pg_url: str) -> None:
    store = site.config().store_path
    counts = sqlite_tables(store)
    empty = [t for t, n in counts.items() if not n]
    assert not empty, f"give {empty} rows in the fixture `built`: every table is copied"
    before = tree_state(site.root)
    lines: list[str] = []
    report = copy_store(store, pg_url, progress=lines.append)
    assert tree_state(site.root) == before  # bytes, sizes and mtimes: and no file added
    assert report.tables == counts  # every table, none more, each with all its rows
    assert pg_counts(pg_url, list(counts)) == counts
    assert pg_tables(pg_url) == {*counts, "schema_version"}
    assert lines == [f"{t}: {n:,} rows" for t, n in report.tables.items()]
    assert report.rows == sum(counts.values()) and report.seconds > 0
    assert report.target == pg_url and report.source == str(store)
    assert report.lines()[-1].startswith(f"copied {report.rows:,} rows in {len(counts)} tables")
    # parents first: each table comes after every table its foreign keys name
    order = list(report.tables)
    for table in order:
        for fk in sqlite_rows(store, f"PRAGMA foreign_key_list({table})"):
            assert order.index(str(fk[2])) < order.index(table), (table, fk[2])
    # verbatim: meta (tag_authority, created_at, store_id, ...) and the outbox, raw bytes too
    assert (pg_rows(pg_url, "SELECT key, value FROM meta ORDER BY key")
            == sqlite_rows(store, "SELECT key, value FROM meta ORDER BY key"))
    outbox = "SELECT id, issue_id, message_id, recipient, subject, raw FROM outbox ORDER BY id"
    assert pg_rows(pg_url, outbox) == sqlite_rows(store, outbox)
    assert pg_rows(pg_url, "SELECT id, next_at FROM send_pace") == [(1, 1795420800.25)]
    assert pg_rows(pg_url, "SELECT vector FROM vectors WHERE model = 'test-model'"
                           " ORDER BY paper_id") == [(bytes(range(256)),), (b"\x00" * 8,)]
    for table in ("vectors", "papers", "issues", "issue_items", "dumps", "sightings",
                  "feed_entries"):
        query = f"SELECT * FROM {table}"
        assert every_row(pg_rows(pg_url, query)) == every_row(sqlite_rows(store, query)), table


def test_ids_handed_out_next_follow_the_copied_ones(site: Project, pg_url: str) -> None:
    store = site.config().store_path
    report = copy_store(store, pg_url)
    handed = {str(n): int(str(s)) for n, s in sqlite_rows(
        store, "SELECT name, seq FROM sqlite_sequence")}
    identity = pg_rows(pg_url, "SELECT table_name FROM information_schema.columns"
                               " WHERE is_identity = 'YES'")
    assert {str(t) for (t,) in identity} == set(report.next_ids) == set(handed)
    for table, seq in handed.items():
        top = sqlite_rows(store, f"SELECT coalesce(max(id), 0) FROM {table}")[0][0]
        assert report.next_ids[table] == max(seq, int(str(top))) + 1
        got = pg_rows(pg_url, "SELECT nextval(pg_get_serial_sequence(%s, 'id'))", (table,))
        assert got == [(report.next_ids[table],)], table


def test_feeds_and_message_ids_are_the_same_built_from_the_copy(
        site: Project, pg_url: str, shared_dumps: list[Path]) -> None:
    config = site.config()
    feeds = sorted(config.feeds_dir.glob("*.atom"))
    assert [p.stem for p in feeds] == ["ana", "bo", "cy"]
    on_sqlite = {p.stem: feed_ids(p) for p in feeds}
    sqlite_bytes = {p.stem: p.read_bytes() for p in feeds}
    assert all(len(ids) > 1 for ids in on_sqlite.values()), "every feed has entries"
    message_ids = sqlite_rows(config.store_path, "SELECT id, message_id FROM outbox ORDER BY id")
    assert message_ids

    copy_store(config.store_path, pg_url)
    point_at(site, pg_url)
    for path in feeds:
        path.unlink()
    with psycopg.connect(pg_url) as conn:
        conn.execute("DELETE FROM meta WHERE key LIKE %s OR key LIKE %s",
                     (FEEDS_BUILT + "%", FEED_FINGERPRINT + "%"))
        conn.execute("DELETE FROM feed_entries")  # no kept HTML: every entry rendered anew
    clock = Clock(datetime(2026, 11, 27, 8, 0, tzinfo=UTC))
    report = run(site.config(), now=clock, send=False)
    assert report.new_papers == 0 and not report.digests
    assert sorted(Path(p).stem for p in report.feeds_written) == ["ana", "bo", "cy"]
    for path in feeds:
        assert feed_ids(path) == on_sqlite[path.stem], path.name
        assert path.read_bytes() == sqlite_bytes[path.stem], path.name
    assert pg_rows(pg_url, "SELECT id, message_id FROM outbox ORDER BY id") == message_ids

    # new work on the copy gets new ids, after the copied ones, and old ids stay put
    dated(site.drop(shared_dumps[4]))
    clock.tick(24)
    report = run(site.config(), now=clock, send=False)
    assert report.new_papers > 0 and report.digests
    after = pg_rows(pg_url, "SELECT id, message_id FROM outbox ORDER BY id")
    assert after[:len(message_ids)] == message_ids and len(after) > len(message_ids)
    assert min(int(str(i)) for i, _ in after[len(message_ids):]) > max(
        int(str(i)) for i, _ in message_ids)
    for path in feeds:
        now = feed_ids(path)
        assert now[0] == on_sqlite[path.stem][0]  # the feed's own id
        kept = [i for i in on_sqlite[path.stem][1:] if i in now]
        assert kept == [i for i in now[1:] if i in on_sqlite[path.stem]]  # same, same order


# -- what is refused -----------------------------------------------------------------------
def test_a_second_copy_into_the_same_database_is_refused_and_changes_nothing(
        site: Project, pg_url: str) -> None:
    store = site.config().store_path
    first = copy_store(store, pg_url)
    tables = list(first.tables)
    every = {t: every_row(pg_rows(pg_url, f"SELECT * FROM {t}")) for t in tables}
    with pytest.raises(UsageError, match=r"already holds digest data \(.*papers: .*"
                                         r"copy into an empty database"):
        copy_store(store, pg_url)
    assert {t: every_row(pg_rows(pg_url, f"SELECT * FROM {t}")) for t in tables} == every
    seq = pg_rows(pg_url, "SELECT last_value FROM pg_sequences WHERE sequencename LIKE 'runs%'")
    assert seq == [(first.next_ids["runs"] - 1,)]


def test_a_database_a_run_has_used_is_refused(site: Project, pg_url: str,
                                              tmp_path: Path) -> None:
    other = Project(tmp_path / "other")
    other.root.mkdir()
    other.inbox.mkdir()
    point_at(other, pg_url)
    run(other.config(), now=Clock(), send=False)  # an empty run: only meta and subscribers
    with pytest.raises(UsageError, match="already holds digest data"):
        copy_store(site.config().store_path, pg_url)


@pytest.mark.parametrize("version", [len(MIGRATIONS) - 1, 1])
def test_an_older_store_is_refused_until_digest_migrates_it(tmp_path: Path, pg_url: str,
                                                            version: int) -> None:
    old = tmp_path / "digest.sqlite3"
    conn = sqlite3.connect(old)
    for migration in MIGRATIONS[:version]:
        conn.executescript(migration)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.close()
    before = old.read_bytes()
    with pytest.raises(StoreError, match=rf"schema version {version}, older than this "
                                         rf"digest's \({len(MIGRATIONS)}\); run `digest run`"):
        copy_store(old, pg_url)
    assert old.read_bytes() == before
    assert pg_tables(pg_url) == set()  # the target was not even opened
    Store.open(old).close()  # what `digest run` does first: then the copy goes through
    assert copy_store(old, pg_url).tables["meta"] == 1


def test_a_newer_store_or_no_store_is_refused(tmp_path: Path, pg_url: str) -> None:
    newer = tmp_path / "newer.sqlite3"
    conn = sqlite3.connect(newer)
    conn.executescript("".join(MIGRATIONS))
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this digest understands"):
        copy_store(newer, pg_url)
    with pytest.raises(UsageError, match="does not exist: there is no SQLite store to copy"):
        copy_store(tmp_path / "missing.sqlite3", pg_url)
    with pytest.raises(UsageError, match="is not a file"):
        copy_store(tmp_path, pg_url)
    text = tmp_path / "notes.txt"
    text.write_text("not a database at all, just some words\n" * 100)
    with pytest.raises(StoreError, match="cannot read the store: file is not a database"):
        copy_store(text, pg_url)
    empty = tmp_path / "empty.sqlite3"
    empty.touch()
    with pytest.raises(StoreError, match="not a digest store"):
        copy_store(empty, pg_url)
    assert pg_tables(pg_url) == set()


# -- nothing half-done ---------------------------------------------------------------------
def test_a_failure_midway_leaves_the_target_empty_and_a_retry_works(
        site: Project, pg_url: str) -> None:
    store = site.config().store_path

    def fail_after_issues(line: str) -> None:
        if line.startswith("issues:"):
            raise RuntimeError("the disk is full (as it were)")

    with pytest.raises(RuntimeError, match="disk is full"):
        copy_store(store, pg_url, progress=fail_after_issues)
    assert_empty(pg_url)
    assert copy_store(store, pg_url).tables == sqlite_tables(store)


@pytest.mark.parametrize(("update", "message"), [
    # SQLite keeps a NUL in text; PostgreSQL's text cannot hold one
    ("UPDATE papers SET abstract = 'a' || char(0) || 'b' WHERE id = (SELECT max(id) FROM"
     " papers)", r"table papers cannot be copied \(row \d+ or before\): .*nothing was kept"),
    # an INTEGER column of SQLite takes any text that is no number; a BIGINT does not
    ("UPDATE papers SET upvotes = 'many' WHERE id = 3",
     r"table papers, row 3: column upvotes holds 'many', which PostgreSQL's int8 cannot"
     r" take .*nothing was kept"),
])
def test_a_row_postgresql_refuses_names_its_table_and_keeps_nothing(
        site: Project, pg_url: str, update: str, message: str) -> None:
    store = site.config().store_path
    conn = sqlite3.connect(store, isolation_level=None)
    conn.execute(update)
    conn.close()
    with pytest.raises(StoreError, match=message):
        copy_store(store, pg_url)
    assert_empty(pg_url)


def test_a_store_written_during_the_copy_is_refused(site: Project, pg_url: str) -> None:
    store = site.config().store_path

    def write_meanwhile(line: str) -> None:
        if line.startswith("papers:"):
            writer = Store.open(store)  # as a run starting now would
            writer.set_meta("written", "meanwhile")
            writer.close()

    with pytest.raises(StoreError, match="written while it was copied"):
        copy_store(store, pg_url, progress=write_meanwhile)
    assert_empty(pg_url)


def test_a_store_open_elsewhere_is_read_with_its_wal_and_left_alone(
        site: Project, pg_url: str) -> None:
    store = site.config().store_path
    holder = Store.open(store)  # a daemon between runs: it has the store (and its WAL) open
    try:
        holder.conn.execute("PRAGMA wal_autocheckpoint = 0")
        holder.set_meta("only_in_the_wal", "yes")
        wal = store.with_name(store.name + "-wal")
        assert wal.stat().st_size > 0
        before = tree_state(site.root)
        report = copy_store(store, pg_url)
        assert tree_state(site.root) == before
    finally:
        holder.close()
    assert pg_rows(pg_url, "SELECT value FROM meta WHERE key = 'only_in_the_wal'") == [("yes",)]
    assert report.tables == sqlite_tables(store)


def test_a_database_in_use_is_not_waited_for_forever(site: Project, pg_url: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storecopy, "LOCK_TIMEOUT", "200ms")
    Store.close(_pg_store(pg_url))  # the schema exists, so it can be locked
    held = threading.Event()
    done = threading.Event()

    def hold() -> None:
        with psycopg.connect(pg_url) as conn, conn.transaction():
            conn.execute("LOCK TABLE papers IN ROW EXCLUSIVE MODE")  # a writer's lock
            held.set()
            done.wait(30)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert held.wait(30)
        with pytest.raises(LockedError, match="another digest is using the database"):
            copy_store(site.config().store_path, pg_url)
    finally:
        done.set()
        thread.join()
    assert_empty(pg_url)


def _pg_store(url: str) -> Store:
    from digest.pgstore import PgStore

    return PgStore.connect(url)


# -- the order of tables -------------------------------------------------------------------
def test_tables_are_ordered_parents_first_and_cycles_are_refused() -> None:
    parents = {"c": {"b"}, "b": {"a"}, "a": set(), "d": set()}
    assert storecopy._parents_first(["c", "b", "a", "d"], parents, Path("s")) == [
        "a", "d", "b", "c"]
    with pytest.raises(StoreError, match="go round in a circle: x, y"):
        storecopy._parents_first(["x", "y"], {"x": {"y"}, "y": {"x"}}, Path("s"))
    with pytest.raises(StoreError, match="refers to tables it does not have: z"):
        storecopy._parents_first(["x"], {"x": {"z"}}, Path("s"))


def test_the_report_reads_as_lines_and_json() -> None:
    report = CopyReport("a.sqlite3", "postgresql://h/db", {"meta": 3, "runs": 1000},
                        {"runs": 1001}, 2.0)
    assert report.rows == 1003 and report.rows_per_second == 501.5
    assert report.lines() == ["meta          3 rows", "runs      1,000 rows",
                              "copied 1,003 rows in 2 tables from a.sqlite3 to "
                              "postgresql://h/db in 2.0s"]
    assert report.as_dict()["next_ids"] == {"runs": 1001}

