"""The same promises on PostgreSQL: one store for many hosts (a real, throwaway server)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import feedparser
import pytest
from conftest import DEFAULT_SUBSCRIBERS, Clock, Project, dated
from test_store import NEW_PER_DUMP

from digest.config import load_config
from digest.errors import ConfigError
from digest.pgstore import LOCKS, PgStore, close_pools, pool, translate
from digest.pipeline import preview, run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _pools() -> Iterator[None]:
    yield
    close_pools()  # each test's database is dropped after it: no connection may linger


def pg_project(project: Project, url: str, subscribers: str = DEFAULT_SUBSCRIBERS) -> Project:
    project.write_config(subscribers, extra=f'[store]\nurl = "{url}"\n')
    return project


def test_parameters_are_translated_outside_strings_only() -> None:
    assert translate("SELECT ? , :name, 'a ? :b 50%' FROM t WHERE x LIKE '% partial'") == (
        "SELECT %s , %(name)s, 'a ? :b 50%%' FROM t WHERE x LIKE '%% partial'")
    assert translate("BEGIN IMMEDIATE") == "BEGIN"


def test_a_connection_given_back_to_the_pool_holds_no_lock(pg_url: str) -> None:
    import psycopg

    store = PgStore.connect(pg_url)
    store.conn.execute("SELECT pg_advisory_lock(?)", (LOCKS["ingest"],))  # never unlocked
    store.close()  # the connection stays open in the pool (reset by the pool's worker)
    with psycopg.connect(pg_url, autocommit=True) as other:
        other.execute("SET lock_timeout = '20s'")  # LockNotAvailable if it is kept
        other.execute("SELECT pg_advisory_lock(%s)", (LOCKS["ingest"],))
    assert pool(pg_url).get_stats().get("connections_num", 0) >= 1  # not closed: reset


def test_the_five_dumps_give_the_same_new_papers_as_on_sqlite(
        project: Project, pg_url: str, clock: Clock, shared_dumps: list[Path]) -> None:
    pg_project(project, pg_url)
    news = []
    for path in shared_dumps:
        dated(project.drop(path))
        news.append(run(project.config(), now=clock).new_papers)
        clock.tick()
    assert news == NEW_PER_DUMP
    assert not (project.root / "data" / "digest.sqlite3").exists()  # nothing on SQLite
    store = PgStore.connect(pg_url)
    try:
        assert store.paper_count() == sum(NEW_PER_DUMP)
        issues = store.latest_issues()
        assert set(issues) == {"ana", "all"} and issues["all"].number == len(shared_dumps)
    finally:
        store.close()


def test_an_idle_run_leaves_the_feeds_byte_identical(project: Project, pg_url: str,
                                                     clock: Clock,
                                                     shared_dumps: list[Path]) -> None:
    pg_project(project, pg_url, DEFAULT_SUBSCRIBERS.replace('name = "all"',
                                                            'name = "all"\nfeed = true'))
    for path in shared_dumps[:2]:
        dated(project.drop(path))
        run(project.config(), now=clock)
        clock.tick()
    feed = project.root / "feeds" / "all.atom"
    before = feed.read_bytes()
    assert len(feedparser.parse(before).entries) > 0
    clock.tick()
    report = run(project.config(), now=clock)
    assert not report.changed and report.feeds_written == []
    assert feed.read_bytes() == before


def test_preview_writes_nothing_to_the_database(project: Project, pg_url: str, clock: Clock,
                                                shared_dumps: list[Path]) -> None:
    pg_project(project, pg_url)
    dated(project.drop(shared_dumps[0]))
    run(project.config(), now=clock)
    dated(project.drop(shared_dumps[1]))
    report, rendered = preview(project.config(), now=clock)
    assert report.new_papers == NEW_PER_DUMP[1] and rendered
    store = PgStore.connect(pg_url)
    try:
        assert store.paper_count() == NEW_PER_DUMP[0]  # the preview's ingest is gone
    finally:
        store.close()
    clock.tick()
    assert run(project.config(), now=clock).new_papers == NEW_PER_DUMP[1]


def test_two_runs_on_two_hosts_double_nothing_and_skip_no_one(
        tmp_path: Path, pg_url: str, shared_dumps: list[Path]) -> None:
    """Two `digest run` processes, each with its own data folder and inbox holding the same
    dumps, on one store at the same time: every paper is new in exactly one run, and every
    subscriber gets every paper in exactly one issue."""
    hosts = []
    for name in ("host-a", "host-b"):
        root = tmp_path / name
        (root / "inbox").mkdir(parents=True)
        for path in shared_dumps:
            dated(Path(shutil.copy(path, root / "inbox")))
        Project(root).write_config(DEFAULT_SUBSCRIBERS, extra=f'[store]\nurl = "{pg_url}"\n'
                                   "[ranking]\nsemantic = false\n")
        hosts.append(root)
    env = {**os.environ, "DIGEST_ENRICH": "0"}
    digest = str(Path(sys.executable).with_name("digest"))
    procs = [subprocess.Popen([digest, "run", "--wait", "--json",
                               "--config", str(root / "config.toml")], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for root in hosts]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    reports = [json.loads(out) for out, _ in outs]
    assert sorted(r["new_papers"] for r in reports) == [0, sum(NEW_PER_DUMP)]
    store = PgStore.connect(pg_url)
    try:
        assert store.paper_count() == sum(NEW_PER_DUMP)
        for name in ("ana", "all"):
            items = [item.paper.key for issue in store.issues(name)
                     for item in store.issue_items(issue.id)]
            assert len(items) == len(set(items))  # no paper twice
        everyone = {item.paper.key for issue in store.issues("all")
                    for item in store.issue_items(issue.id)}
        assert len(everyone) == sum(NEW_PER_DUMP)  # the firehose reader missed none
    finally:
        store.close()


def test_a_password_in_the_url_is_refused_and_the_environment_wins(
        project: Project, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    project.write_config(DEFAULT_SUBSCRIBERS,
                         extra='[store]\nurl = "postgresql://digest:Sentinel-7@db/digest"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(project.config_path)
    assert "PGPASSWORD" in str(caught.value) and "Sentinel" not in str(caught.value)
    project.write_config(DEFAULT_SUBSCRIBERS, extra='[store]\nurl = '
                         '"postgresql://digest@db/digest?sslmode=require&password=Sentinel-7"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(project.config_path)
    assert "PGPASSWORD" in str(caught.value) and "Sentinel" not in str(caught.value)
    monkeypatch.setenv("DIGEST_STORE_URL", pg_url)
    assert load_config(project.config_path).store_url == pg_url


def test_every_store_command_works_on_postgresql(project: Project, pg_url: str, clock: Clock,
                                                 shared_dumps: list[Path],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from digest.cli import main

    pg_project(project, pg_url, DEFAULT_SUBSCRIBERS.replace('name = "all"',
                                                            'name = "all"\nfeed = true'))
    cfg = ["--config", str(project.config_path)]
    dated(project.drop(shared_dumps[0]))
    assert main(["run", *cfg]) == 0
    assert main(["ingest", *cfg, str(shared_dumps[1])]) == 0  # backfill: seen, in no digest
    capsys.readouterr()
    assert main(["status", "--json", *cfg]) == 0
    status = json.loads(capsys.readouterr().out)
    assert {s["name"]: s["last_issue"] for s in status["subscribers"]} == {"ana": 1, "all": 1}
    store = PgStore.connect(pg_url)
    try:
        assert store.paper_count() == NEW_PER_DUMP[0] + NEW_PER_DUMP[1]
        key = store.issue_items(store.latest_issues()["ana"].id)[0].paper.key
    finally:
        store.close()
    assert main(["feedback", "ana", *cfg, "--like", key]) == 0
    capsys.readouterr()
    assert main(["feedback", "ana", *cfg, "--list", "--json"]) == 0
    assert key in capsys.readouterr().out
    assert main(["unsubscribe", *cfg, "ana@example.org"]) == 0
    assert main(["subscribe", *cfg, "ana@example.org"]) == 0
    assert main(["build-site", *cfg]) == 0
    assert (project.root / "site" / "ana" / "index.html").is_file()
    dated(project.drop(shared_dumps[2]))
    assert main(["preview", *cfg]) == 0
    assert main(["daemon", "--once", *cfg]) == 0
    store = PgStore.connect(pg_url)
    try:
        assert store.paper_count() == sum(NEW_PER_DUMP[:3])
        assert store.latest_issues()["all"].number == 2
    finally:
        store.close()


def test_each_host_keeps_its_own_feeds_and_pages_current(
        tmp_path: Path, pg_url: str, clock: Clock, shared_dumps: list[Path]) -> None:
    """Two publishing hosts on one store: a paper that changes later (a link found) reaches
    both hosts' feeds and issue pages, not only those of the host that saw it first."""
    from digest.models import Resolution

    hosts = []
    for name in ("host-a", "host-b"):
        host = Project(tmp_path / name)
        host.root.mkdir()
        host.write_config(DEFAULT_SUBSCRIBERS.replace('name = "all"',
                                                      'name = "all"\nfeed = true'),
                          extra=f'[store]\nurl = "{pg_url}"\n')
        hosts.append(host)
    a, b = hosts
    dated(a.drop(shared_dumps[0]))
    run(a.config(), now=clock)  # a ingests and publishes
    clock.tick()
    run(b.config(), now=clock)  # b has nothing new, but builds its own feeds and pages
    feed_b = b.root / "feeds" / "all.atom"
    entry = feedparser.parse(feed_b.read_bytes()).entries[0]
    assert "huggingface.co/papers?q=" in entry.link  # a text dump: a search link
    store = PgStore.connect(pg_url)
    try:
        key = next(p.key for p in store.papers_after(0, 99) if p.title == entry.title)
        store.put_resolutions([Resolution(key=key, title=entry.title, arxiv_id="2611.09999",
                                          url="https://arxiv.org/abs/2611.09999",
                                          source="arxiv")], clock())
    finally:
        store.close()
    changes = []
    for host in (a, b):
        clock.tick()
        run(host.config(), now=clock)
        links = {e.title: e.link for e in
                 feedparser.parse((host.root / "feeds" / "all.atom").read_bytes()).entries}
        assert links[entry.title] == "https://arxiv.org/abs/2611.09999", host.root.name
        page, = (host.root / "site" / "all").glob("0001-*.html")
        assert "https://arxiv.org/abs/2611.09999" in page.read_text(encoding="utf-8")
        changes.append(pg_count(pg_url, "page_changes"))
    assert changes[0] > 0 and changes[1] == 0  # kept until every host built from them


def pg_count(url: str, table: str) -> int:
    store = PgStore.connect(url)
    try:
        return int(store.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        store.close()
