"""The SQLite seen store: ingest per dump, no-op re-drops, all-or-nothing ingest."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from conftest import DUMP_DAY, Clock

from digest.errors import StoreError
from digest.faults import InjectedFault
from digest.models import Paper, ParsedDump
from digest.schema import MIGRATIONS
from digest.sources import read_dump
from digest.store import Store

NEW_PER_DUMP = [103, 13, 47, 87, 68]


def counts(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(path)
    try:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("runs", "dumps", "papers", "sightings", "subscribers", "issues")}
    finally:
        conn.close()


def test_five_dumps_in_name_order(tmp_path: Path, shared_dumps: list[Path],
                                  clock: Clock) -> None:
    store = Store.open(tmp_path / "s.db")
    news = []
    for path in shared_dumps:
        result = store.ingest(read_dump(path, today=DUMP_DAY), None, "run", clock())
        news.append(len(result.new_keys))
        clock.tick()
    assert news == NEW_PER_DUMP
    assert store.paper_count() == 318
    assert store.integrity_ok()
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.conn.execute("SELECT count(*) FROM sightings").fetchone()[0] == 390
    store.close()


def test_same_dump_under_another_name_is_found(tmp_path: Path, shared_dumps: list[Path],
                                              clock: Clock) -> None:
    store = Store.open(tmp_path / "s.db")
    first = read_dump(shared_dumps[0], today=DUMP_DAY)
    store.ingest(first, None, "run", clock())
    copy = tmp_path / "renamed.txt"
    copy.write_bytes(shared_dumps[0].read_bytes().replace(b"\n", b"\r\n"))  # CRLF copy
    again = read_dump(copy, today=DUMP_DAY)
    found = store.find_dump(again.sha256)
    assert found is not None and found.name == shared_dumps[0].name
    store.close()


def test_fault_mid_ingest_leaves_store_as_it_was(tmp_path: Path, shared_dumps: list[Path],
                                                 clock: Clock,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.db"
    store = Store.open(path)
    store.ingest(read_dump(shared_dumps[0], today=DUMP_DAY), None, "run", clock())
    before = counts(path)
    with path.open("rb") as handle:
        before_bytes = handle.read()
    monkeypatch.setenv("DIGEST_FAULT", "ingest:mid")
    second = read_dump(shared_dumps[1], today=DUMP_DAY)
    with pytest.raises(InjectedFault):
        store.ingest(second, None, "run", clock())
    assert not store.conn.in_transaction
    assert counts(path) == before
    assert store.find_dump(second.sha256) is None
    store.close()
    assert Store.open(path).integrity_ok()
    assert before_bytes  # the file existed and was readable before the failure
    monkeypatch.delenv("DIGEST_FAULT")
    store = Store.open(path)
    assert len(store.ingest(second, None, "run", clock()).new_keys) == 13
    store.close()


def test_later_sighting_fills_in_what_was_missing(tmp_path: Path, clock: Clock) -> None:
    store = Store.open(tmp_path / "s.db")
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


def test_arxiv_id_joins_a_paper_first_seen_by_title(tmp_path: Path, clock: Clock) -> None:
    store = Store.open(tmp_path / "s.db")
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


def test_a_sighting_without_upvotes_keeps_the_known_count(tmp_path: Path, clock: Clock) -> None:
    store = Store.open(tmp_path / "s.db")
    for i, upvotes in enumerate((250, None, 7, 300)):
        paper = Paper(key="title:p", title="P", abstract="x", upvotes=upvotes)
        store.ingest(ParsedDump(f"d{i}.txt", f"h{i}", "x", None, None, (paper,)), None, "run",
                     clock())
        (stored,) = store.papers_after(0, 99)
        assert stored.upvotes == (250 if i < 3 else 300)
    store.close()


def test_a_title_seen_first_with_an_arxiv_id_is_the_same_paper(tmp_path: Path,
                                                               clock: Clock) -> None:
    store = Store.open(tmp_path / "s.db")
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
