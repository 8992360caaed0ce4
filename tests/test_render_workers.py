"""A run's digests made by several workers (processes here, hosts on PostgreSQL), on both
engines: each reader's next issue is made and recorded exactly once, the same as one
process makes it; a reader another worker holds is left to it until its lease ends; and a
worker whose lease ran out cannot record the issue a second time."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest
from conftest import Clock, Project, dated

from digest.cli import main
from digest.errors import MovedOn
from digest.models import RunReport
from digest.pipeline import (
    RENDER_LEASE,
    _publish_digest,
    _start_helpers,
    checked_renderer,
    ingest,
    iter_digests,
    make_digests,
    render_share,
    run,
)
from digest.sources import inbox_files
from digest.store import Store, open_store

READERS = 9
TOPICS = ["CLIP", "diffusion", "agents", "reasoning", "video", "robot", "medical", "speech",
          "code"]


@pytest.fixture(params=["sqlite", "postgresql"])
def store_table(request: pytest.FixtureRequest) -> str:
    """The config's [store] table: none (SQLite in data/) or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return ""
    return f'[store]\nurl = "{request.getfixturevalue("pg_url")}"\n'


def readers(n: int = READERS) -> str:
    return "".join(f'\n[[subscribers]]\nname = "r{i}"\nkeywords = ["{TOPICS[i % len(TOPICS)]}"]'
                   "\nmax_items = 5\n" for i in range(n))


def setup(project: Project, store_table: str, dump: Path) -> None:
    project.write_config(readers(), extra=store_table)
    dated(project.drop(dump))


def with_store(project: Project) -> Store:
    return open_store(project.config())


def issues_of(project: Project) -> dict[str, list[tuple[int, list[str]]]]:
    """Reader -> [(issue number, paper keys in rank order)] for every recorded issue."""
    store = with_store(project)
    try:
        return {f"r{i}": [(rec.number, [r.paper.key for r in store.issue_items(rec.id)])
                          for rec in store.issues(f"r{i}")] for i in range(READERS)}
    finally:
        store.close()


def test_workers_make_each_digest_once_and_the_same_as_one_process(
        tmp_path: Path, store_table: str, shared_dumps: list[Path], clock: Clock) -> None:
    one = Project(tmp_path / "one")
    many = Project(tmp_path / "many")
    one.root.mkdir()
    many.root.mkdir()
    setup(one, "", shared_dumps[0])  # the reference: SQLite, one process
    setup(many, store_table, shared_dumps[0])
    run(one.config(), now=clock, send=False)
    report = run(many.config(), now=clock, send=False, workers=3)

    made = Counter(str(d["subscriber"]) for d in report.digests)
    assert made == Counter(f"r{i}" for i in range(READERS))  # each once, none skipped
    assert issues_of(many) == issues_of(one)  # one issue each, ranked exactly the same
    assert [d["subscriber"] for d in report.digests] == [f"r{i}" for i in range(READERS)]
    for d in report.digests:
        assert Path(str(d["markdown"])).is_file() and Path(str(d["html"])).is_file()
    store = with_store(many)
    try:
        assert store.conn.execute("SELECT count(*) FROM render_claims").fetchone()[0] == 0
    finally:
        store.close()
    # Nothing left for a second run, with workers or without.
    again = run(many.config(), now=clock, send=False, workers=2)
    assert again.digests == []


def test_a_reader_another_worker_holds_waits_for_its_lease(
        project: Project, store_table: str, shared_dumps: list[Path], clock: Clock) -> None:
    setup(project, store_table, shared_dumps[0])
    config = project.config()
    run(config, now=clock, send=False)  # registers everyone with the first dump
    dated(project.drop(shared_dumps[1]))
    clock.tick()
    # Ingest the second dump without publishing: a run that is killed before its digests.
    store = with_store(project)
    try:
        ingest(store, [p for p in inbox_files(config.inbox) if not store.known_file(p)],
               RunReport(), clock)
        held = ["r1", "r4"]
        for name in held:
            assert store.claim_reader(name, "other-host:1", clock() + RENDER_LEASE, clock())
        assert not store.claim_reader("r1", "third:1", clock() + RENDER_LEASE, clock())
    finally:
        store.close()

    upto = latest_run(project)
    digests, _, left, error = render_share(config, clock, None, upto, 1, 0, os.getppid())
    assert error is None and sorted(left) == held
    assert sorted(str(d["subscriber"]) for d in digests) == sorted(
        f"r{i}" for i in range(READERS) if f"r{i}" not in held)
    assert all(len(v) == (1 if k in held else 2) for k, v in issues_of(project).items())

    clock.tick(RENDER_LEASE.total_seconds() / 3600 + 0.01)  # the other host died: lease over
    digests, _, left, error = render_share(config, clock, None, upto, 2, 0, os.getppid())
    assert error is None and left == []
    assert sorted(str(d["subscriber"]) for d in digests) == held
    assert all(len(v) == 2 for v in issues_of(project).values())


def latest_run(project: Project) -> int:
    store = with_store(project)
    try:
        return store.latest_run()
    finally:
        store.close()


def test_two_workers_taking_turns_share_the_readers(
        project: Project, store_table: str, shared_dumps: list[Path], clock: Clock) -> None:
    """Two workers on two connections, stepped in turn from the same first reader: each
    takes the next reader the other has not, and every reader gets one issue."""
    setup(project, store_table, shared_dumps[0])
    config = project.config()
    run(config, now=clock, send=False)
    dated(project.drop(shared_dumps[1]))
    clock.tick()
    stores = [with_store(project), with_store(project)]
    try:
        ingest(stores[0], [p for p in inbox_files(config.inbox)
                           if not stores[0].known_file(p)], RunReport(), clock)
        renderer = checked_renderer(config.templates)
        rounds = [iter_digests(s, config, renderer, clock, worker=f"w{n}:1", start=0)
                  for n, s in enumerate(stores)]
        made: dict[int, list[str]] = {0: [], 1: []}
        live = [0, 1]
        while live:
            for n in list(live):
                rendered = next(rounds[n], None)
                if rendered is None:
                    live.remove(n)
                else:
                    made[n].append(rendered.digest.profile.name)
    finally:
        for s in stores:
            s.close()
    assert made[0] and made[1]  # both did some
    assert sorted(made[0] + made[1]) == sorted(f"r{i}" for i in range(READERS))
    assert all([n for n, _ in v] == [1, 2] for v in issues_of(project).values())


def test_a_worker_that_lost_its_reader_writes_no_file(
        project: Project, store_table: str, shared_dumps: list[Path], clock: Clock) -> None:
    """Worker A made r0's digest, but its lease ran out and worker B recorded the issue
    (the next day, so under another file name): A records nothing and touches no file,
    neither B's nor one of its own."""
    setup(project, store_table, shared_dumps[0])
    config = project.config()
    run(config, now=clock, send=False)
    dated(project.drop(shared_dumps[1]))
    store = with_store(project)
    try:
        ingest(store, [p for p in inbox_files(config.inbox) if not store.known_file(p)],
               RunReport(), clock)
        renderer = checked_renderer(config.templates)
        upto = store.latest_run()
        stale = store.cursor("r0")
        assert stale is not None
        slow, = make_digests(store, config, renderer, clock, only="r0", persist=False)
        clock.tick(24)
        fast, = iter_digests(store, config, renderer, clock, only="r0", worker="b:1")
        assert fast.paths is not None
        files = {p: Path(p).read_bytes() for p in fast.paths}
        assert _publish_digest(store, config, stale, upto, slow, None, claim="a:1") is None
        assert {p.name for p in (config.digests_dir / "r0").iterdir()} == {
            Path(p).name for p in [*files, *issue_files(store, "r0", 1)]}
        assert {p: Path(p).read_bytes() for p in fast.paths} == files
        assert [i.number for i in store.issues("r0")] == [1, 2]
    finally:
        store.close()


def issue_files(store: Store, name: str, number: int) -> list[str]:
    row = store.conn.execute("SELECT markdown_path, html_path FROM issues WHERE subscriber = ?"
                             " AND number = ?", (name, number)).fetchone()
    return [str(row[0]), str(row[1])]


def test_a_worker_whose_lease_ran_out_cannot_record_the_issue_again(
        project: Project, store_table: str, shared_dumps: list[Path], clock: Clock) -> None:
    setup(project, store_table, shared_dumps[0])
    config = project.config()
    run(config, now=clock, send=False)
    store = with_store(project)
    try:
        cursor = store.cursor("r0")
        assert cursor is not None and cursor.last_issue == 1
        rec = store.issues("r0")[0]
        # A second record of issue 1 from the same cursor (a slow worker, lease gone).
        with pytest.raises(MovedOn):
            store.record_issue("r0", 1, rec.from_run, rec.to_run, clock(), 1, (),
                               (None, None), claim="slow:1")
        assert [i.number for i in store.issues("r0")] == [1]
        assert store.cursor("r0") == cursor
    finally:
        store.close()


def test_run_workers_on_the_command_line(project: Project, shared_dumps: list[Path],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    setup(project, "", shared_dumps[0])
    code = main(["run", "--config", str(project.config_path), "--workers", "2", "--no-send",
                 "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert sorted(out["subscribers"]) == sorted(
        f"r{i}" for i in range(READERS))
    assert main(["run", "--config", str(project.config_path), "--workers", "0"]) == 2
    assert "--workers" in capsys.readouterr().err


def test_a_second_host_takes_the_readers_a_long_run_has_not_reached(
        tmp_path: Path, pg_url: str, shared_dumps: list[Path], clock: Clock) -> None:
    """Host A has ingested and holds some readers (it is busy making their digests); a
    `digest run` on host B, with its own data folder and an empty inbox, makes every other
    reader's digest into its own folder; A then makes only those it held."""
    a, b = Project(tmp_path / "a"), Project(tmp_path / "b")
    for host in (a, b):
        host.root.mkdir()
        host.write_config(readers(), extra=f'[store]\nurl = "{pg_url}"\n')
    dated(a.drop(shared_dumps[0]))
    config_a = a.config()
    store = with_store(a)
    try:
        ingest(store, list(inbox_files(config_a.inbox)), RunReport(), clock,
               subscribers=[p.name for p in config_a.subscribers])
        held = ["r0", "r1", "r2"]
        for name in held:
            assert store.claim_reader(name, "host-a:1", clock() + RENDER_LEASE, clock())
    finally:
        store.close()

    helped = run(b.config(), now=clock, send=False)
    by_b = sorted(str(d["subscriber"]) for d in helped.digests)
    assert by_b == [f"r{i}" for i in range(3, READERS)]
    assert all(Path(str(d["markdown"])).is_relative_to(b.root) for d in helped.digests)

    store = with_store(a)
    try:
        for name in held:  # A finishes its share: its claims go with its issues
            store.release_reader(name, "host-a:1")
    finally:
        store.close()
    rest = run(config_a, now=clock, send=False)
    assert sorted(str(d["subscriber"]) for d in rest.digests) == held
    assert all(len(v) == 1 for v in issues_of(a).values())


def test_a_helper_process_makes_the_digests_it_is_given(
        project: Project, store_table: str, shared_dumps: list[Path], clock: Clock) -> None:
    """The process path itself (spawned, the config and clock pickled, its own store
    connection): a helper started with nobody else working makes every reader's digest."""
    setup(project, store_table, shared_dumps[0])
    config = project.config()
    store = with_store(project)
    try:
        ingest(store, list(inbox_files(config.inbox)), RunReport(), clock,
               subscribers=[p.name for p in config.subscribers])
        upto = store.latest_run()
    finally:
        store.close()
    config.data_dir.mkdir(exist_ok=True)
    (config.data_dir / ".digest-clean").touch()  # as a clean run leaves it
    said: list[str] = []
    helpers, stop = _start_helpers(config, clock, None, upto, 2, said.append)
    assert len(helpers) == 1 and stop is not None and not said
    digests, _, held, error = helpers[0].result(timeout=120)
    assert error is None and held == []
    assert sorted(str(d["subscriber"]) for d in digests) == sorted(
        f"r{i}" for i in range(READERS))
    assert {d["worker"] for d in digests} == {1}
    assert all(len(v) == 1 for v in issues_of(project).values())
    # Its first write took the mark away, and a helper never puts it back (the run does).
    assert not (config.data_dir / ".digest-clean").exists()


def test_a_helper_that_fails_says_what_and_where(
        project: Project, shared_dumps: list[Path], clock: Clock) -> None:
    setup(project, "", shared_dumps[0])
    config = project.config()
    run(config, now=clock, send=False)
    config.store_path.write_bytes(b"not a database at all" * 100)  # broken under it
    for suffix in ("-wal", "-shm"):
        config.store_path.with_name(config.store_path.name + suffix).unlink(missing_ok=True)
    helpers, _ = _start_helpers(config, clock, None, 1, 2, lambda _line: None)
    digests, _, _, error = helpers[0].result(timeout=120)
    assert digests == [] and error is not None
    raised = error.exception(1)
    assert error.kind == "StoreError" and raised.exit_code == 1
    assert str(raised).startswith("digest worker 1: ") and str(config.store_path) in str(raised)
    assert error.trace is None  # a DigestError explains itself: no traceback
