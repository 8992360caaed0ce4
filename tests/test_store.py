"""The SQLite seen store: ingest per dump, no-op re-drops, all-or-nothing ingest."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import DUMP_DAY, Clock

from digest.errors import StoreError, UsageError
from digest.faults import InjectedFault
from digest.models import Paper, ParsedDump
from digest.schema import MIGRATIONS
from digest.sources import read_dump
from digest.store import Store

NEW_PER_DUMP = [103, 13, 47, 87, 68]


TABLES = ("runs", "dumps", "papers", "sightings", "subscribers", "issues")


def counts(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(path)
    try:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
    finally:
        conn.close()


def rows(store: Store) -> dict[str, int]:
    """Row counts through the store's own connection (either engine)."""
    return {t: int(store.conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0])
            for t in TABLES}


Opener = Callable[[], Store]


@pytest.fixture(params=["sqlite", "postgresql"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens the same store again and again: a SQLite file, or a fresh PostgreSQL database
    (the same tests run on both engines; ``pg_url`` skips only without a server)."""
    if request.param == "sqlite":
        yield lambda: Store.open(tmp_path / "s.db")
        return
    from digest.pgstore import PgStore, close_pools

    url = request.getfixturevalue("pg_url")
    yield lambda: PgStore.connect(url)
    close_pools()


def test_five_dumps_in_name_order(opener: Opener, shared_dumps: list[Path],
                                  clock: Clock) -> None:
    store = opener()
    news = []
    for path in shared_dumps:
        result = store.ingest(read_dump(path, today=DUMP_DAY), None, "run", clock())
        news.append(len(result.new_keys))
        clock.tick()
    assert news == NEW_PER_DUMP
    assert store.paper_count() == 318  # the kept count, the same as counting them
    assert store.conn.execute("SELECT count(*) FROM papers").fetchone()[0] == 318
    assert store.integrity_ok()
    if store.engine == "sqlite":
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.conn.execute("SELECT count(*) FROM sightings").fetchone()[0] == 390
    store.close()


def test_same_dump_under_another_name_is_found(tmp_path: Path, shared_dumps: list[Path],
                                              clock: Clock, opener: Opener) -> None:
    store = opener()
    first = read_dump(shared_dumps[0], today=DUMP_DAY)
    store.ingest(first, None, "run", clock())
    copy = tmp_path / "renamed.txt"
    copy.write_bytes(shared_dumps[0].read_bytes().replace(b"\n", b"\r\n"))  # CRLF copy
    again = read_dump(copy, today=DUMP_DAY)
    found = store.find_dump(again.sha256)
    assert found is not None and found.name == shared_dumps[0].name
    store.close()


def test_fault_mid_ingest_leaves_store_as_it_was(opener: Opener, shared_dumps: list[Path],
                                                 clock: Clock,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    store = opener()
    store.ingest(read_dump(shared_dumps[0], today=DUMP_DAY), None, "run", clock())
    before = rows(store)
    monkeypatch.setenv("DIGEST_FAULT", "ingest:mid")
    second = read_dump(shared_dumps[1], today=DUMP_DAY)
    with pytest.raises(InjectedFault):
        store.ingest(second, None, "run", clock())
    assert not store.in_transaction()
    assert rows(store) == before
    assert store.find_dump(second.sha256) is None
    store.close()
    again = opener()
    assert again.integrity_ok() and rows(again) == before
    again.close()
    monkeypatch.delenv("DIGEST_FAULT")
    store = opener()
    assert len(store.ingest(second, None, "run", clock()).new_keys) == 13
    store.close()


def test_later_sighting_fills_in_what_was_missing(opener: Opener, clock: Clock) -> None:
    store = opener()
    bare = Paper(key="title:a paper", title="A Paper", abstract="")
    full = Paper(key="title:a paper", title="A paper.", abstract="Now with an abstract.",
                 authors=3, upvotes=5)
    for i, paper in enumerate((bare, full)):
        dump = ParsedDump(f"d{i}.txt", f"hash{i}", "blank-separated", None, None, (paper,))
        store.ingest(dump, None, "run", clock())
    (stored,) = store.papers_after(0, 10)
    assert (stored.key, stored.title, stored.abstract, stored.authors, stored.upvotes) == (
        "title:a paper", "A Paper", "Now with an abstract.", 3, 5)
    store.close()


def test_arxiv_id_joins_a_paper_first_seen_by_title(opener: Opener, clock: Clock) -> None:
    store = opener()
    by_title = Paper(key="title:shared paper", title="Shared Paper", abstract="x")
    by_id = Paper(key="arxiv:2401.00001", title="Shared paper", abstract="x",
                  arxiv_id="2401.00001")
    news = []
    for i, paper in enumerate((by_title, by_id, by_id)):
        dump = ParsedDump(f"d{i}.txt", f"h{i}", "x", None, None, (paper,))
        news.append(len(store.ingest(dump, None, "run", clock()).new_keys))
    assert news == [1, 0, 0]
    assert store.paper_count() == 1
    store.close()


def test_schema_is_versioned_and_a_newer_store_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    Store.open(path).close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this digest understands"):
        Store.open(path)


def test_corrupt_store_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match=str(path)):
        Store.open(path)


def test_a_sighting_without_upvotes_keeps_the_known_count(opener: Opener, clock: Clock) -> None:
    store = opener()
    for i, upvotes in enumerate((250, None, 7, 300)):
        paper = Paper(key="title:p", title="P", abstract="x", upvotes=upvotes)
        store.ingest(ParsedDump(f"d{i}.txt", f"h{i}", "x", None, None, (paper,)), None, "run",
                     clock())
        (stored,) = store.papers_after(0, 99)
        assert stored.upvotes == (250 if i < 3 else 300)
    store.close()


def test_a_title_seen_first_with_an_arxiv_id_is_the_same_paper(opener: Opener,
                                                               clock: Clock) -> None:
    store = opener()
    first = Paper(key="arxiv:2611.00001", title="A Shared Paper", abstract="x",
                  arxiv_id="2611.00001")
    by_title = Paper(key="title:a shared paper", title="A shared paper!", abstract="x")
    other = Paper(key="arxiv:2611.00009", title="A Shared Paper", abstract="y",
                  arxiv_id="2611.00009")  # same title, another paper
    news = []
    for i, paper in enumerate((first, by_title, other)):
        dump = ParsedDump(f"d{i}.txt", f"h{i}", "x", None, None, (paper,))
        news.append(len(store.ingest(dump, None, "run", clock()).new_keys))
    assert news == [1, 0, 1]
    store.close()


def _paper(n: int) -> Paper:
    return Paper(key=f"arxiv:2612.{n:05d}", title=f"Paper {n}", abstract="x",
                 arxiv_id=f"2612.{n:05d}")


def test_migration_5_upgrades_a_store_of_the_previous_schema(
        tmp_path: Path, shared_dumps: list[Path], clock: Clock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import digest.store

    path = tmp_path / "s.db"
    monkeypatch.setattr(digest.store, "MIGRATIONS", MIGRATIONS[:4])  # the schema before 5
    old = Store.open(path)
    for dump in shared_dumps[:2]:
        old.ingest(read_dump(dump, today=DUMP_DAY), None, "run", clock(), ["ana"])
    old.close()
    before = counts(path)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 4
    assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'feedback'"
                        ).fetchone()[0] == 0
    keys = [r[0] for r in conn.execute("SELECT key FROM papers ORDER BY id LIMIT 2")]
    conn.close()
    monkeypatch.setattr(digest.store, "MIGRATIONS", MIGRATIONS)
    # A read-only look at the old store migrates nothing on disk.
    ro = Store.read_only(path)
    assert ro is not None and ro.votes("ana") == []
    ro.close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 4
    store = Store.open(path)
    assert store.conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) >= 6
    assert counts(path) == before and before["papers"] == 116
    assert store.integrity_ok()
    (vote,) = store.record_votes("ana", [(keys[0], True)], clock())
    assert vote.paper.key == keys[0] and vote.like
    assert store.put_vectors("m", {keys[1]: b"\x00" * 8}) == 1
    assert store.vectors("m", keys) == {keys[1]: b"\x00" * 8}
    store.close()


def test_votes_are_one_transaction_and_an_unknown_key_records_none(opener: Opener,
                                                                   clock: Clock) -> None:
    store = opener()
    store.ingest(ParsedDump("d.json", "h", "x", None, None, (_paper(1), _paper(2))), None,
                 "run", clock())
    with pytest.raises(UsageError, match=r"'arxiv:2612\.00009'.*digest parse --json"):
        store.record_votes("ana", [(_paper(1).key, True), ("arxiv:2612.00009", False)],
                           clock())
    assert store.votes("ana") == [] and not store.in_transaction()
    got = store.record_votes("ana", [(_paper(1).key, True), (_paper(2).key, True),
                                     (_paper(1).key, False)], clock())
    assert [(v.paper.key, v.like) for v in got] == [(_paper(1).key, False),
                                                    (_paper(2).key, True)]
    assert store.judged("ana") == {_paper(1).key, _paper(2).key}
    assert store.judged("bob") == set()
    assert store.reset_votes("ana") == 2 and store.votes("ana") == []
    store.close()


def test_vectors_go_in_with_the_dump_or_not_at_all(opener: Opener, clock: Clock,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    store = opener()
    papers = tuple(_paper(n) for n in range(4))
    blobs = {p.key: bytes([n]) * 8 for n, p in enumerate(papers)}
    monkeypatch.setenv("DIGEST_FAULT", "ingest:mid")
    with pytest.raises(InjectedFault):
        store.ingest(ParsedDump("d.json", "h", "x", None, None, papers), None, "run", clock(),
                     vectors=("m", blobs))
    assert store.conn.execute("SELECT count(*) FROM vectors").fetchone()[0] == 0
    monkeypatch.delenv("DIGEST_FAULT")
    store.ingest(ParsedDump("d.json", "h", "x", None, None, papers), None, "run", clock(),
                 vectors=("m", blobs))
    assert store.vectors("m", [p.key for p in papers] + ["arxiv:2612.09999"]) == blobs
    assert store.vectors("other-model", blobs) == {}
    assert store.put_vectors("m", {papers[0].key: b"new"}) == 0  # kept, not replaced
    assert store.vectors("m", [papers[0].key])[papers[0].key] == blobs[papers[0].key]
    store.close()


def test_read_only_never_creates_a_store(tmp_path: Path) -> None:
    assert Store.read_only(tmp_path / "none.db") is None
    assert list(tmp_path.iterdir()) == []


def test_feeds_keep_what_the_learned_signals_said(opener: Opener, clock: Clock) -> None:
    from digest.models import Match, Ranked

    store = opener()
    papers = (Paper(key="title:a", title="A", abstract="x"), Paper(key="title:b", title="B",
                                                                   abstract="y"))
    dump = ParsedDump("d.txt", "h", "blank-separated", None, None, papers)
    store.ingest(dump, None, "run", clock(), ("ana",))
    items = (Ranked(papers[0], 2.0, (Match("x", 1.0, 0, 1, 1.5),), 1, ("Liked one",)),
             Ranked(papers[1], 1.0, (), 2, (), True))
    store.record_issue("ana", 1, 0, store.latest_run(), clock(), 2, items, (None, None))
    got = {r.paper.key: (r.matches, r.similar, r.learned) for r in store.feed_items("ana", 10)}
    assert got == {"title:a": ((Match("x", 1.0, 0, 1, 1.5),), ("Liked one",), False),
                   "title:b": ((), (), True)}
    store.close()


Rows = list[tuple[object, ...]]


def _papers_and_sightings(store: Store) -> tuple[Rows, Rows]:
    papers = [tuple(r) for r in store.conn.execute(
        "SELECT id, key, arxiv_id, title, abstract, first_run, revision_only FROM papers"
        " ORDER BY id")]
    seen = [tuple(r) for r in store.conn.execute(
        "SELECT paper_id, dump_id, line FROM sightings ORDER BY dump_id, paper_id, line")]
    return papers, seen


def test_a_dump_read_at_once_finds_the_same_papers_as_one_by_one(
        opener: Opener, tmp_path: Path, shared_dumps: list[Path], clock: Clock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``_prefetch`` (three queries a dump) against ``_find_paper``'s queries per paper:
    the real dumps, then the cases where matching is subtle, within one dump and across."""
    tricky = [
        [Paper(key="title:graph nets", title="Graph Nets", abstract="a"),
         Paper(key="arxiv:2501.00001", title="Graph nets!", abstract="longer abstract",
               arxiv_id="2501.00001"),  # the same title, now with an id: the same paper
         Paper(key="arxiv:2501.00002", title="Graph Nets", abstract="b",
               arxiv_id="2501.00002"),  # the same title, another id: another paper
         Paper(key="title:graph nets", title="GRAPH NETS", abstract="c")],  # in-dump again
        [Paper(key="arxiv:2501.00002", title="Renamed", abstract="d", arxiv_id="2501.00002"),
         Paper(key="title:graph nets", title="Graph Nets", abstract="e"),
         Paper(key="arxiv:2501.00003", title="Graph Nets", abstract="f",
               arxiv_id="2501.00003")],
    ]
    found = []
    for batched in (True, False):
        monkeypatch.setattr(Store, "_PREFETCH", batched)
        store = opener() if batched else Store.open(tmp_path / "one-by-one.db")
        try:
            for path in shared_dumps:
                store.ingest(read_dump(path, today=DUMP_DAY), None, "run", clock())
            for n, papers in enumerate(tricky):
                store.ingest(ParsedDump(path=f"tricky-{n}.txt", sha256=f"{n:064d}",
                                        shape="test", page_date=None, page_date_raw=None,
                                        papers=tuple(papers)),
                             None, "run", clock())
            found.append(_papers_and_sightings(store))
            assert store.paper_count() == len(found[-1][0])
        finally:
            store.close()
    assert found[0] == found[1]
    keys = [row[1] for row in found[0][0]]
    assert len(keys) == len(set(keys))


def test_a_sqlite_too_old_for_the_store_is_named(tmp_path: Path) -> None:
    from digest.store import _check_sqlite

    with pytest.raises(StoreError, match=r"SQLite is 3\.34\.1; digest needs 3\.35\.0 or newer"):
        _check_sqlite(tmp_path / "s.db", (3, 34, 1))
    _check_sqlite(tmp_path / "s.db", (3, 35, 0))  # new enough: nothing said


def test_the_send_pace_survives_a_clock_stepping_back(opener: Opener) -> None:
    store = opener()
    try:
        assert store.pace(1.0, 1_000_000.0) == 1_000_000.0
        assert store.pace(1.0, 1_000_000.0) == 1_000_001.0  # the next slot, a second on
        # The clock went back an hour: the kept slot is not waited for.
        assert store.pace(1.0, 996_400.0) == 996_400.0
        assert store.pace(1.0, 996_400.0) == 996_401.0
    finally:
        store.close()
