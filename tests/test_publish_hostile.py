"""Publishing survives what a crash or an older version left behind.

Temporary files of a killed run are removed by the next one (ours only, never a user's
file), are never readable by others while written, and never sit in a published folder
between runs. A paper stored with control characters cannot break a feed or a digest.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import feedparser
import pytest
from conftest import DATA, Project, dated
from lxml import etree

from digest.cli import main
from digest.fsutil import CLEAN_MARK
from digest.identity import search_url

ATOM = "{http://www.w3.org/2005/Atom}"
CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
CLI = "import sys; from digest.cli import main; sys.exit(main(sys.argv[1:]))"


def digest(project: Project, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["run", "--config", str(project.config_path)])
    out, err = capsys.readouterr()
    return code, out, err


def first_run(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    dated(project.drop(DATA / "shape_blank.txt"))
    code, _, err = digest(project, capsys)
    assert code == 0, err


def temp_like(folder: Path) -> list[str]:
    """Every file under ``folder`` that looks like a temporary file (any digest version)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.is_file() and p.name.endswith(".tmp"))


# -- temporary files left by a killed run ---------------------------------------------------

def test_leftover_temp_files_are_removed_and_user_files_kept(
        project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    first_run(project, capsys)
    feeds = project.root / "feeds"
    digests = project.root / "data" / "digests" / "all"
    outbox = project.root / "data" / "outbox"
    ours = [  # what a SIGKILL mid-write leaves: earlier versions' names, then this one's
        feeds / ".ana.atom.abcd1234.tmp", feeds / ".all.atom.z_9y8x7w.tmp",
        digests / ".0002-2026-11-23.md.q1w2e3r4.tmp",
        digests / ".0002-2026-11-23.html.t5y6u7i8.tmp",
        feeds / ".digest-tmp" / "ana.atom.mnbv0987.tmp",
        feeds / ".digest-tmp" / "all.atom.z_9y8x7w.tmp",
        digests / ".digest-tmp" / "0002-2026-11-23.html.lkjh6543.tmp",
        digests / ".digest-tmp" / "0002-2026-11-23.md.q1w2e3r4.tmp",
        outbox / ".digest-tmp" / "all-0001.eml.poiu1234.tmp",
        project.root / "site" / "ana" / ".digest-tmp" / "index.html.asdf1234.tmp",
    ]
    users = [  # look alike, but are not names digest ever gives its temporary files
        feeds / ".htaccess", feeds / ".notes.abcd1234.tmp", feeds / "ana.atom.abcd1234.tmp",
        feeds / ".ana.atom.abc.tmp", feeds / ".ana.atom.ABCD1234.tmp",
        feeds / ".ana.atom.abcd1234.tmp.bak", digests / ".keep", digests / "draft.md.tmp",
        feeds / ".digest-tmp" / "README", project.inbox / ".x.md.abcd1234.tmp",
    ]
    for path in ours + users:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("<feed>a full copy of a feed</feed>")
        path.chmod(0o644)
    # A kill mid-write also leaves the data folder without its clean mark (the first write
    # of a run takes it away): only then does a run look for leftovers.
    clean = project.root / "data" / CLEAN_MARK
    assert clean.is_file()
    clean.unlink()
    # Another writer meanwhile (it cleans only the site) leaves the mark off for the run.
    (project.root / "site" / "index.html").unlink()
    assert main(["build-site", "--config", str(project.config_path)]) == 0
    assert "1 page(s) written" in capsys.readouterr().out
    assert not clean.exists()
    code, out, err = digest(project, capsys)
    assert code == 0, err
    assert out.startswith("Nothing new")
    assert [p for p in ours if p.exists()] == []
    assert [p for p in users if not p.exists()] == []
    assert not (digests / ".digest-tmp").exists()  # emptied, so removed
    assert clean.is_file()  # and marked clean again: the next run looks nowhere

    stray = feeds / ".digest-tmp" / "all.atom.qwer5678.tmp"  # (not from a kill: stays)
    stray.write_text("x")
    assert digest(project, capsys)[0] == 0 and stray.exists()
    assert (project.root / "feeds" / "ana.atom").is_file()


def test_nothing_is_left_in_the_published_folder_between_runs(
        project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    first_run(project, capsys)
    for folder in (project.root / "feeds", project.root / "data" / "digests" / "all"):
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            p.name for p in folder.iterdir() if not p.name.startswith("."))
        assert temp_like(folder) == []
    for feed in (project.root / "feeds").iterdir():
        assert stat.S_IMODE(feed.stat().st_mode) == 0o644


def test_a_feed_keeps_the_mode_its_owner_gave_it(project: Project,
                                                 capsys: pytest.CaptureFixture[str],
                                                 shared_dumps: list[Path]) -> None:
    first_run(project, capsys)
    feed = project.root / "feeds" / "all.atom"
    feed.chmod(0o640)
    before = feed.read_bytes()
    dated(project.drop(shared_dumps[1]))
    code, _, err = digest(project, capsys)
    assert code == 0, err
    assert feed.read_bytes() != before and stat.S_IMODE(feed.stat().st_mode) == 0o640


@pytest.mark.parametrize(("fault", "folder"), [
    ("write:md:kill", "data/digests/ana"),
    ("write:atom:kill", "feeds"),
])
def test_sigkill_mid_write_leaves_only_a_private_temp_that_the_next_run_removes(
        project: Project, capsys: pytest.CaptureFixture[str], fault: str,
        folder: str) -> None:
    dated(project.drop(DATA / "shape_blank.txt"))
    proc = subprocess.run([sys.executable, "-c", CLI, "run", "--config",
                           str(project.config_path)],
                          env={**os.environ, "DIGEST_FAULT": fault}, capture_output=True,
                          text=True, check=False, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    where = project.root / folder
    temps = temp_like(where)
    assert len(temps) == 1 and temps[0].startswith(".digest-tmp/"), temps
    temp = where / temps[0]
    assert stat.S_IMODE(temp.stat().st_mode) == 0o600  # complete, yet readable by no one else
    assert stat.S_IMODE(temp.parent.stat().st_mode) == 0o700
    assert temp.stat().st_size > 0
    assert [p.name for p in where.iterdir() if p.name.startswith(".")] == [".digest-tmp"]
    code, _, err = digest(project, capsys)
    assert code == 0, err
    assert temp_like(project.root) == []
    assert not temp.parent.exists()
    for name in ("ana", "all"):
        parsed = feedparser.parse(str(project.root / "feeds" / f"{name}.atom"))
        assert parsed.bozo == 0 and parsed.entries


# -- stored values an older version let through ---------------------------------------------

BAD = "\x01"


def store_hostile_paper(project: Project) -> str:
    """Add a paper with control characters everywhere, as an older digest stored it, in a
    new run: the next ``digest run`` puts it in a digest and in the feeds."""
    conn = sqlite3.connect(project.root / "data" / "digest.sqlite3")
    try:
        with conn:
            run_id = conn.execute("INSERT INTO runs (kind, started_at) VALUES ('run', "
                                  "'2026-11-23T09:00:00+00:00')").lastrowid
            conn.execute(
                "INSERT INTO papers (key, title_norm, title, abstract, authors, author_names,"
                " links, url, first_run, first_dump, first_seen) VALUES"
                " (?, ?, ?, ?, ?, ?, ?, ?, ?, 1, '2026-11-23T09:00:00+00:00')",
                (f"title:bell{BAD}paper", f"bell{BAD}paper",
                 f"Ringing the CLIP bell{BAD} paper", f"An abstract{BAD} about CLIP{BAD}.", 2,
                 json.dumps([f"Ada{BAD} Lovelace", "Bob\x1b[31m"]),
                 json.dumps([f"https://evil.example/{BAD}x", "https://ok.example/paper",
                             "https://ok.example/\x0e", "http://"]),
                 f"https://evil.example/{BAD}abs", run_id))
    finally:
        conn.close()
    return "Ringing the CLIP bell paper"


def test_control_characters_in_a_stored_paper_publish_cleanly(
        project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    first_run(project, capsys)
    title = store_hostile_paper(project)
    code, out, err = digest(project, capsys)
    assert code == 0, err
    assert "internal error" not in err and "XML compatible" not in err
    assert "digest for all: issue 2, 1 new papers" in out
    for name in ("ana", "all"):
        raw = (project.root / "feeds" / f"{name}.atom").read_bytes()
        parsed = feedparser.parse(raw)
        assert parsed.bozo == 0, parsed.get("bozo_exception")
        tree = etree.fromstring(raw)
        entry = next(e for e in tree.iter(f"{ATOM}entry")
                     if e.findtext(f"{ATOM}title") == title)
        hrefs = [link.get("href") for link in entry.iter(f"{ATOM}link")]
        # Its own URL is refused, so the title links to a search for it (never to evil).
        assert hrefs == [search_url(title)] and hrefs[0].startswith(
            "https://huggingface.co/papers?q=Ringing+the+CLIP+bell")
        assert not CONTROL.search(raw.decode("utf-8"))
    for folder in ("ana", "all"):
        html, = (project.root / "data" / "digests" / folder).glob("0002-*.html")
        md, = (project.root / "data" / "digests" / folder).glob("0002-*.md")
        page = html.read_text(encoding="utf-8")
        assert "bell paper" in page and "An abstract about" in page  # kept, cleaned
        assert not CONTROL.search(page) and not CONTROL.search(md.read_text(encoding="utf-8"))
        assert "evil.example" not in "".join(re.findall(r'href="([^"]*)"', page))


def test_an_entry_that_cannot_be_built_is_left_out_with_a_warning(
        project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    first_run(project, capsys)
    conn = sqlite3.connect(project.root / "data" / "digest.sqlite3")
    try:
        with conn:  # an older version recorded a match without a term for one paper
            conn.execute("UPDATE issue_items SET matches = ? WHERE rank = 1 AND issue_id ="
                         " (SELECT id FROM issues WHERE subscriber = 'all')",
                         (json.dumps([[None, 1.0, 1, 0, 1.0, None]]),))
            # ... and this one meets it after an upgrade, whose new code is part of what
            # every feed is made from: each feed is looked at again.
            conn.execute("DELETE FROM meta WHERE key LIKE 'feeds_built:%'")
            key = conn.execute("SELECT p.key FROM issue_items ii JOIN papers p ON p.id ="
                               " ii.paper_id JOIN issues i ON i.id = ii.issue_id WHERE"
                               " i.subscriber = 'all' AND ii.rank = 1").fetchone()[0]
    finally:
        conn.close()
    feed = project.root / "feeds" / "all.atom"
    before = len(feedparser.parse(str(feed)).entries)
    code, _, err = digest(project, capsys)
    assert code == 0, err
    assert f"{feed}: warning: left paper {key!r} out of the feed" in err
    parsed = feedparser.parse(str(feed))
    assert parsed.bozo == 0 and len(parsed.entries) == before - 1
    assert (project.root / "feeds" / "ana.atom").is_file()
    code, _, err = digest(project, capsys)  # stays out, and is said again, every run
    assert code == 0 and f"left paper {key!r}" in err


def test_a_daemon_removes_what_a_killed_fetch_left_in_the_inbox(project: Project) -> None:
    import threading

    from digest.daemon import Daemon

    left = project.inbox / ".digest-tmp" / "hf-2026-11-23.json.abcd1234.tmp"
    left.parent.mkdir()
    left.write_text("[{}")
    mine = project.inbox / ".digest-tmp" / "notes.txt"  # not a name digest gives
    mine.write_text("keep")
    assert Daemon(project.config()).serve(threading.Event(), once=True)
    assert not left.exists() and mine.exists()
