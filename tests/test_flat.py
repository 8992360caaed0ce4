"""Work that follows the new work, not the store: preview and status read the store in place,
an idle run builds no feed and renders no kept entry again, archives read one row per issue."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import DUMP_DAY, Clock, Project, dated, tree_state

import digest.feed
from digest.pipeline import FEED_FINGERPRINT, FEEDS_BUILT, preview, run
from digest.render import Renderer
from digest.schema import MIGRATIONS
from digest.sources import read_dump
from digest.store import Store


def _in_memory_papers(store: Store) -> int:
    return int(store.conn.execute("SELECT count(*) FROM main.papers").fetchone()[0])


def test_a_snapshot_reads_papers_in_place_and_writes_nothing(
        project: Project, clock: Clock, shared_dumps: list[Path]) -> None:
    dated(project.drop(shared_dumps[0]))
    dated(project.drop(shared_dumps[1]))
    run(project.config(), now=clock)
    path = project.config().store_path
    before = tree_state(path.parent)
    on_disk = Store.open(path)
    total = on_disk.paper_count()
    on_disk.close()
    snap = Store.snapshot(path)
    try:
        assert snap.subscriber_rows() and snap.paper_count() == total
        assert _in_memory_papers(snap) == 0  # status-like reads copy no paper
        # A dump already stored is known; one re-listing stored papers adds none.
        again = read_dump(shared_dumps[1], today=DUMP_DAY)
        assert snap.find_dump(again.sha256) is not None
        result = snap.ingest(replace(again, sha256="other"), None, "run", clock(), ["ana"])
        assert result.new_keys == () and snap.paper_count() == total
        assert _in_memory_papers(snap) == len({p.key for p in again.papers})  # only those
        assert snap.latest_run() == result.run_id and snap.papers_after(result.run_id - 1,
                                                                        result.run_id) == []
    finally:
        snap.close()
    assert tree_state(path.parent) == before  # no -wal, no -shm, the same bytes


def test_preview_copies_only_the_papers_it_ranks(project: Project, clock: Clock,
                                                 shared_dumps: list[Path],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    for dump in shared_dumps[:3]:
        dated(project.drop(dump))
        run(project.config(), now=clock)
        clock.tick()
    dated(project.drop(shared_dumps[3]))
    seen: list[Store] = []
    real = Store.snapshot.__func__  # type: ignore[attr-defined]

    def spy(cls: type[Store], path: Path) -> Store:
        store = real(cls, path)
        seen.append(store)
        monkeypatch.setattr(store, "close", lambda: None)  # counted below, then closed
        return store

    monkeypatch.setattr(Store, "snapshot", classmethod(spy))
    before = tree_state(project.root)
    report, rendered = preview(project.config(), now=clock)
    assert rendered and report.new_papers == rendered[0].digest.new_count
    store, = seen
    copied = _in_memory_papers(store)
    assert copied < store.paper_count()  # the papers of earlier runs stayed on disk
    assert copied <= report.new_papers + len(read_dump(shared_dumps[3], today=DUMP_DAY).papers)
    store.conn.close()
    assert tree_state(project.root) == before


def test_an_idle_run_builds_no_feed_and_a_new_issue_renders_only_its_entries(
        project: Project, clock: Clock, shared_dumps: list[Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    dated(project.drop(shared_dumps[0]))
    run(project.config(), now=clock)
    feeds = project.root / "feeds"
    first = tree_state(feeds)
    built: list[str] = []
    rendered: list[str] = []
    real_build, real_entry = digest.feed.build_feed, Renderer.feed_entry

    def build(**kwargs: object) -> bytes:
        built.append(str(kwargs["name"]))
        return real_build(**kwargs)  # type: ignore[arg-type]

    def entry(self: Renderer, item: object, keywords: object) -> str:
        rendered.append("x")
        return real_entry(self, item, keywords)  # type: ignore[arg-type]

    monkeypatch.setattr("digest.pipeline.build_feed", build)
    monkeypatch.setattr(Renderer, "feed_entry", entry)
    clock.tick()
    report = run(project.config(), now=clock)
    assert built == [] and rendered == [] and report.feeds_written == []
    assert tree_state(feeds) == first
    # A built feed renders only entries it has not kept; its bytes are a scratch build's.
    dated(project.drop(shared_dumps[1]))
    clock.tick()
    report = run(project.config(), now=clock)
    got = {d["subscriber"]: d["matched"] for d in report.digests}
    assert sorted(built) == sorted(n for n in got)
    store = Store.open(project.config().store_path)
    shown = sum(len(store.feed_items(n, project.config().feed_size)) for n in got)
    # The new entries, and those of papers the new dump re-listed with other upvotes; the
    # rest were kept from the first run, not rendered again.
    assert sum(got.values()) <= len(rendered) < shown
    incremental = {n: (feeds / f"{n}.atom").read_bytes() for n in got}
    store.conn.execute("DELETE FROM feed_entries")
    store.conn.execute("DELETE FROM meta WHERE key LIKE ? OR key LIKE ?",
                         (FEED_FINGERPRINT + "%", FEEDS_BUILT + "%"))
    store.close()
    for name in got:
        (feeds / f"{name}.atom").unlink()
    clock.tick()
    run(project.config(), now=clock)
    assert {n: (feeds / f"{n}.atom").read_bytes() for n in got} == incremental


def test_a_re_sighted_paper_that_changed_rebuilds_the_feeds_showing_it(
        project: Project, clock: Clock, shared_dumps: list[Path]) -> None:
    dated(project.drop(shared_dumps[0]))
    run(project.config(), now=clock)
    path = project.config().store_path
    conn = sqlite3.connect(path)
    with conn:  # as if the paper had first been listed with a shorter abstract
        conn.execute("UPDATE papers SET abstract = substr(abstract, 1, 10) WHERE id ="
                     " (SELECT paper_id FROM issue_items ORDER BY issue_id, rank LIMIT 1)")
        conn.execute("DELETE FROM meta WHERE key LIKE ? OR key LIKE ?",
                         (FEED_FINGERPRINT + "%", FEEDS_BUILT + "%"))
    conn.close()
    assert run(project.config(), now=clock).feeds_written  # built from the short abstract
    conn = sqlite3.connect(path)
    with conn:  # the same dump is ingested (re-sighted) again
        conn.execute("DELETE FROM sightings")
        conn.execute("DELETE FROM dumps")
    conn.close()
    report = run(project.config(), now=clock)
    assert report.new_papers == 0 and report.feeds_written  # its abstract grew back


def test_issue_terms_are_kept_with_the_issue_and_filled_for_older_stores(
        project: Project, clock: Clock, shared_dumps: list[Path]) -> None:
    for dump in shared_dumps[:2]:
        dated(project.drop(dump))
        run(project.config(), now=clock)
        clock.tick()
    path = project.config().store_path
    store = Store.open(path)
    expected = {n: store.issue_terms_from_items(n) for n in ("ana", "all")}
    assert {n: store.issue_terms(n) for n in expected} == expected  # kept when recorded
    assert any(expected["ana"].values())
    store.close()
    conn = sqlite3.connect(path)  # back to the schema before migration 7
    conn.executescript("DROP TABLE feed_entries; DROP INDEX issue_items_paper;"
                       " ALTER TABLE issues DROP COLUMN terms; DROP TABLE enrichment;"
                       " DROP TABLE stale_pages;"
                       " DELETE FROM meta WHERE key = 'enriched_upto';"
                       " PRAGMA user_version = 6;")
    conn.close()
    store = Store.open(path)  # migration 7 fills the column from the items
    try:
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert {n: store.issue_terms(n) for n in expected} == expected
        rows = store.conn.execute("SELECT terms FROM issues").fetchall()
        assert rows and all(isinstance(json.loads(t), list) for t, in rows)
    finally:
        store.close()
