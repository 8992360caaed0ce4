"""End to end through the library: runs, the diff, preview, backfill, crashes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import Clock, Project, dated, tree_state

from digest.faults import InjectedFault
from digest.pipeline import backfill, preview, run
from digest.render import md_escape
from digest.store import Store

NEW_PER_DUMP = [103, 13, 47, 87, 68]


def digest_files(project: Project, name: str, ext: str = "md") -> list[Path]:
    return sorted((project.root / "data" / "digests" / name).glob(f"*.{ext}"))


def listed_titles(md: Path) -> list[str]:
    """Titles of the ranked items and the 'also new' list of a Markdown digest."""
    text = md.read_text(encoding="utf-8")
    listed = re.findall(r"^### \d+\. (.*)$", text, re.M) + re.findall(
        r"^- (?!and \d+ more)(.*)$", text, re.M)
    linked = [re.fullmatch(r"\[(.*)\]\(<https?://[^>]+>\)", line) for line in listed]
    assert all(linked), [line for line, m in zip(listed, linked, strict=True) if not m]
    return [m[1] for m in linked if m]


def test_one_dump_per_run_delivers_every_paper_once(project: Project, clock: Clock,
                                                    shared_dumps: list[Path]) -> None:
    for path, expected in zip(shared_dumps, NEW_PER_DUMP, strict=True):
        dated(project.drop(path))
        report = run(project.config(), now=clock)
        clock.tick()
        assert report.new_papers == expected
        assert {d["subscriber"]: d["new"] for d in report.digests} == {"ana": expected,
                                                                      "all": expected}
    assert report.total_papers == 318
    issues = digest_files(project, "all")
    assert len(issues) == 5
    titles = [t for md in issues for t in listed_titles(md)]
    assert len(titles) == len(set(titles)) == 318
    store = Store.open(project.config().store_path)
    every = {md_escape(p.title) for p in store.papers_after(0, 99)}
    store.close()
    assert set(titles) == every
    assert len(digest_files(project, "ana")) == 5


def test_all_dumps_at_once_make_one_issue(project: Project, clock: Clock,
                                          shared_dumps: list[Path]) -> None:
    for path in shared_dumps:
        dated(project.drop(path))
    report = run(project.config(), now=clock)
    assert report.new_papers == 318
    assert [d["issue"] for d in report.digests] == [1, 1]
    (md,) = digest_files(project, "all")
    assert len(listed_titles(md)) == 318


def test_redropping_a_dump_is_a_no_op(project: Project, clock: Clock,
                                      shared_dumps: list[Path]) -> None:
    dated(project.drop(shared_dumps[0]))
    run(project.config(), now=clock)
    before = tree_state(project.root)
    dated(project.drop(shared_dumps[0], "renamed-copy.txt"))
    clock.tick()
    report = run(project.config(), now=clock)
    assert report.new_papers == 0 and not report.changed
    assert report.dumps_duplicate == [(str(project.inbox / "renamed-copy.txt"),
                                       shared_dumps[0].name)]
    after = tree_state(project.root)
    after.pop("inbox/renamed-copy.txt")
    assert after == before


def test_subscriber_added_later_starts_with_its_first_run(project: Project, clock: Clock,
                                                          shared_dumps: list[Path]) -> None:
    dated(project.drop(shared_dumps[0]))
    run(project.config(), now=clock)
    project.write_config(
        "[[subscribers]]\nname = \"all\"\nmax_items = 1000\n"
        "[[subscribers]]\nname = \"late\"\nmax_items = 1000\n", extra="also_new = 1000")
    clock.tick()
    assert not run(project.config(), now=clock).digests  # nothing new: late waits
    dated(project.drop(shared_dumps[1]))
    clock.tick()
    report = run(project.config(), now=clock)
    assert {d["subscriber"]: (d["issue"], d["new"]) for d in report.digests} == {
        "all": (2, 13), "late": (1, 13)}


def test_crash_after_render_loses_nothing(project: Project, clock: Clock,
                                          shared_dumps: list[Path],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    dated(project.drop(shared_dumps[1]))
    monkeypatch.setenv("DIGEST_FAULT", "run:after-render")
    with pytest.raises(InjectedFault):
        run(project.config(), now=clock)
    monkeypatch.delenv("DIGEST_FAULT")
    clock.tick()
    report = run(project.config(), now=clock)
    assert report.new_papers == 0  # the papers were stored by the crashed run ...
    assert {d["subscriber"]: (d["issue"], d["new"]) for d in report.digests} == {
        "ana": (1, 35), "all": (1, 35)}  # ... and still reach every subscriber, once
    clock.tick()
    assert not run(project.config(), now=clock).digests


def test_crash_after_ingest_before_digests(project: Project, clock: Clock,
                                           shared_dumps: list[Path],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    dated(project.drop(shared_dumps[0]))
    run(project.config(), now=clock)
    dated(project.drop(shared_dumps[1]))
    monkeypatch.setenv("DIGEST_FAULT", "run:after-ingest")
    with pytest.raises(InjectedFault):
        run(project.config(), now=clock)
    monkeypatch.delenv("DIGEST_FAULT")
    report = run(project.config(), now=clock)
    assert {d["subscriber"]: (d["issue"], d["new"]) for d in report.digests} == {
        "ana": (2, 13), "all": (2, 13)}


def test_nothing_new_changes_nothing(project: Project, clock: Clock,
                                     shared_dumps: list[Path]) -> None:
    dated(project.drop(shared_dumps[2]))
    run(project.config(), now=clock)
    before = tree_state(project.root)
    clock.tick(24)
    report = run(project.config(), now=clock)
    assert not report.changed and report.new_papers == 0
    assert tree_state(project.root) == before


def test_preview_changes_nothing_on_disk(project: Project, clock: Clock,
                                         shared_dumps: list[Path]) -> None:
    dated(project.drop(shared_dumps[0]))
    run(project.config(), now=clock)
    dated(project.drop(shared_dumps[1]))
    before = tree_state(project.root)
    report, rendered = preview(project.config(), now=clock)
    assert report.new_papers == 13
    assert [(r.digest.profile.name, r.digest.number, r.digest.new_count) for r in rendered] == [
        ("ana", 2, 13), ("all", 2, 13)]
    _, extra = preview(project.config(), subscriber="ana", dumps=[dated(shared_dumps[2])],
                       now=clock)
    assert [r.digest.new_count for r in extra] == [13 + 47]
    assert extra[0].markdown.startswith("# Test digest: 60 new papers for ana")
    assert tree_state(project.root) == before
    assert run(project.config(), now=clock).new_papers == 13  # the real run still sees them


def test_preview_without_a_store_creates_none(project: Project, clock: Clock,
                                              shared_dumps: list[Path]) -> None:
    dated(project.drop(shared_dumps[1]))
    _, rendered = preview(project.config(), now=clock)
    assert [r.digest.new_count for r in rendered] == [35, 35]
    assert not (project.root / "data").exists() and not (project.root / "feeds").exists()


def test_backfill_marks_papers_seen_without_a_digest(project: Project, clock: Clock,
                                                     shared_dumps: list[Path]) -> None:
    report = backfill(project.config(), [dated(shared_dumps[0])], now=clock)
    assert report.new_papers == 103
    dated(project.drop(shared_dumps[1]))
    clock.tick()
    report = run(project.config(), now=clock)
    assert report.new_papers == 13
    assert {d["subscriber"]: d["new"] for d in report.digests} == {"ana": 13, "all": 13}


def test_bad_file_in_inbox_is_reported_and_the_rest_ingested(project: Project, clock: Clock,
                                                             shared_dumps: list[Path]) -> None:
    (project.inbox / "000-notes.txt").write_text("just some notes\n")
    dated(project.drop(shared_dumps[1]))
    report = run(project.config(), now=clock)
    assert report.new_papers == 35
    assert len(report.dumps_rejected) == 1
    assert report.dumps_rejected[0].startswith(str(project.inbox / "000-notes.txt"))


def test_a_second_run_is_refused_while_one_holds_the_lock(project: Project, clock: Clock,
                                                          shared_dumps: list[Path]) -> None:
    from digest.errors import LockedError
    from digest.lock import exclusive

    dated(project.drop(shared_dumps[1]))
    config = project.config()
    with exclusive(config.data_dir, "test"), pytest.raises(LockedError) as info:
        run(config, now=clock)
    assert "held by digest test (pid" in str(info.value)
    assert info.value.exit_code == 2
    assert run(config, now=clock).new_papers == 35  # released: the next run goes ahead
    assert not (config.data_dir / "digest.lock.holder").exists()


def test_two_processes_cannot_interleave(project: Project, shared_dumps: list[Path]) -> None:
    import subprocess
    import sys

    for path in shared_dumps:
        dated(project.drop(path))
    script = ("import sys; from digest.cli import main; "
              f"sys.exit(main(['run', '--config', {str(project.config_path)!r}]))")
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(), p.stdout.read() if p.stdout else "", p.stderr.read() if p.stderr
                else "") for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes in ([0, 0], [0, 2]), results
    for code, _, err in results:
        if code == 2:
            assert "digest.lock: held by" in err  # the holder may not have signed in yet
    store = Store.open(project.config().store_path)
    assert store.paper_count() == 318
    issues = store.conn.execute("SELECT subscriber, sum(new_papers) FROM issues"
                                " GROUP BY subscriber").fetchall()
    store.close()
    assert dict(issues) == {"ana": 318, "all": 318}


def test_crash_after_render_leaves_no_second_copy(project: Project, clock: Clock,
                                                  shared_dumps: list[Path],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    dated(project.drop(shared_dumps[1]))
    clock.now = clock.now.replace(hour=23, minute=59)
    monkeypatch.setenv("DIGEST_FAULT", "run:after-render")
    with pytest.raises(InjectedFault):
        run(project.config(), now=clock)
    monkeypatch.delenv("DIGEST_FAULT")
    clock.tick(0.1)  # past midnight: the re-made issue carries another date
    run(project.config(), now=clock)
    assert [p.name for p in digest_files(project, "all")] == ["0001-2026-11-24.md"]
    assert [p.name for p in digest_files(project, "all", "html")] == ["0001-2026-11-24.html"]


def test_preview_leaves_a_live_wal_alone(project: Project, clock: Clock,
                                         shared_dumps: list[Path]) -> None:
    dated(project.drop(shared_dumps[0]))
    run(project.config(), now=clock)
    holder = Store.open(project.config().store_path)  # another process mid-run keeps a WAL
    holder.conn.execute("BEGIN IMMEDIATE")
    holder.conn.execute("INSERT INTO meta (key, value) VALUES ('x', 'y')")
    holder.conn.execute("COMMIT")
    dated(project.drop(shared_dumps[1]))
    before = tree_state(project.root)
    assert any(name.endswith("-wal") for name in before)
    _, rendered = preview(project.config(), now=clock)
    assert [r.digest.new_count for r in rendered] == [13, 13]
    assert tree_state(project.root) == before
    holder.close()
