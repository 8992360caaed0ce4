"""Every paper linked: a text copy of an HF daily page goes through a real run, with
enrichment asking a loopback server that answers like the HF daily-papers and arXiv APIs.
Digests, e-mail HTML and feeds are read back (feedparser for the feed)."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import feedparser
import pytest
from conftest import Clock, Project
from enrichserver import ARXIV, DAILY, EnrichServer

from digest.cli import main
from digest.enrich import ARXIV_SPACING, arxiv_query
from digest.identity import search_url
from digest.models import Resolution
from digest.pipeline import run
from digest.store import Store

DATA = Path(__file__).resolve().parent / "data" / "enrich"
COPY = DATA / "daily_copy.txt"
TIDAL = "Tidal Memory: Long-Context Recall with Sparse Anchors"
COLOR = "Color Constancy Modeling for Night–Time Drone Imagery"
LIGHT = "Counting Lighthouses with Weak Labels"
NOBODY = "A Paper Nobody Wrote"
EXPECTED = {
    TIDAL: "https://huggingface.co/papers/2511.05101",
    COLOR: "https://huggingface.co/papers/2511.05102",
    LIGHT: "https://arxiv.org/abs/2511.07301",
    NOBODY: search_url(NOBODY),
}
SUBSCRIBERS = """
[[subscribers]]
name = "all"
max_items = 100
feed = true
"""


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[EnrichServer]:
    web = EnrichServer(DATA / "arxiv_empty.xml").start()
    web.daily = {"2025-11-21": DATA / "hf_daily_2025-11-21.json"}
    web.arxiv = {arxiv_query(LIGHT): DATA / "arxiv_lighthouses.xml"}
    monkeypatch.delenv("DIGEST_ENRICH", raising=False)
    monkeypatch.setenv("DIGEST_ENRICH_URL", web.base)
    yield web
    web.stop()


def md_links(md: Path) -> dict[str, str]:
    """Title -> link of each ranked item of a Markdown digest (every heading must link)."""
    headings = re.findall(r"^### \d+\. (.*)$", md.read_text(encoding="utf-8"), re.M)
    found = [re.fullmatch(r"\[(.*)\]\(<(https?://[^>]+)>\)", h) for h in headings]
    assert headings and all(found), headings
    return {m[1]: m[2] for m in found if m}


class _Headings(HTMLParser):
    """(text, href) of each <h3> of an HTML digest; href None when it holds no link."""

    def __init__(self) -> None:
        super().__init__()
        self.items: list[tuple[str, str | None]] = []
        self._in: list[str] | None = None
        self._href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "h3":
            self._in, self._href = [], None
        elif tag == "a" and self._in is not None and self._href is None:
            self._href = dict(attrs).get("href")

    def handle_data(self, data: str) -> None:
        if self._in is not None:
            self._in.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "h3" and self._in is not None:
            text = re.sub(r"^\d+\.\s*", "", "".join(self._in).strip())
            self.items.append((text, self._href))
            self._in = None


def html_links(html: str) -> dict[str, str | None]:
    parser = _Headings()
    parser.feed(html)
    return dict(parser.items)


def test_every_paper_of_a_text_copy_links_to_its_page(project: Project, clock: Clock,
                                                      server: EnrichServer) -> None:
    project.write_config(SUBSCRIBERS)
    project.drop(COPY)
    report = run(project.config(), now=clock)

    # One listing request for the page's day; arXiv only for the two it lacks, spaced.
    assert [r.query["date"] for r in server.asked(DAILY)] == ["2025-11-21"]
    asked = server.asked(ARXIV)
    assert sorted(r.query["search_query"] for r in asked) == sorted(
        [arxiv_query(LIGHT), arxiv_query(NOBODY)])
    assert asked[1].at - asked[0].at >= ARXIV_SPACING - 0.05
    assert report.links is not None
    assert (report.links.looked_up, report.links.from_hf, report.links.from_arxiv,
            report.links.pending) == (4, 2, 1, 0)

    md = Path(str(report.digests[0]["markdown"]))
    assert md_links(md) == EXPECTED
    text = md.read_text(encoding="utf-8")
    assert "Ines Varga, Tomás Ferreira, Kalani Moss" in text  # names from the listing
    assert "Rosa Pebble" in text  # and from arXiv
    html = Path(str(report.digests[0]["html"])).read_text(encoding="utf-8")
    assert html_links(html) == EXPECTED

    feed = feedparser.parse((project.root / "feeds" / "all.atom").read_bytes())
    assert not feed.bozo and len(feed.entries) == 4
    assert {e.title: e.link for e in feed.entries} == EXPECTED
    tidal = next(e for e in feed.entries if e.title == TIDAL)
    assert [a["name"] for a in tidal.authors] == ["Ines Varga", "Tomás Ferreira", "Kalani Moss"]

    # The same paper seen later from arXiv is the same paper: it is not new again.
    store = Store.open(project.config().store_path)
    try:
        assert store.paper("arxiv:2511.07301") == store.paper(f"title:{LIGHT.lower()}")
    finally:
        store.close()
    shutil.copyfile(DATA / "arxiv_lighthouses.xml", project.inbox / "arxiv.xml")
    before = len(server.requests)
    clock.tick()
    again = run(project.config(), now=clock)
    assert again.new_papers == 1  # "Counting Ships with Strong Labels"; the lighthouses not
    assert len(server.requests) == before  # it came with its link: nothing to look up
    assert again.links is None


def test_without_enrichment_every_paper_still_links(project: Project, clock: Clock,
                                                    server: EnrichServer,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    project.write_config(SUBSCRIBERS, "enrich = false")
    project.drop(COPY)
    report = run(project.config(), now=clock)
    assert server.requests == [] and report.links is None
    md = Path(str(report.digests[0]["markdown"]))
    assert md_links(md) == {t: search_url(t) for t in EXPECTED}

    project.write_config(SUBSCRIBERS)  # on in the config, off in the environment
    monkeypatch.setenv("DIGEST_ENRICH", "0")
    (project.inbox / "second.txt").write_text(
        COPY.read_text(encoding="utf-8") + "\nOne More Paper About Harbours\n\n"
        "An abstract of one more paper. It has two sentences.\n", encoding="utf-8")
    clock.tick()
    assert run(project.config(), now=clock).new_papers == 1
    assert server.requests == []


def test_a_spent_budget_leaves_papers_for_the_next_run(project: Project, clock: Clock,
                                                       server: EnrichServer,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    project.write_config(SUBSCRIBERS,
                         "enrich_budget = 0")
    project.drop(COPY)
    first = run(project.config(), now=clock)
    assert server.requests == []
    assert first.links is not None and first.links.pending == 4
    assert "time budget" in first.links.line()
    md = Path(str(first.digests[0]["markdown"]))
    assert md_links(md) == {t: search_url(t) for t in EXPECTED}  # never nothing

    project.write_config(SUBSCRIBERS)
    clock.tick()
    capsys.readouterr()
    assert main(["run", "--json", "--config", str(project.config_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["links"] == {"looked_up": 4, "linked": 3, "from_hf": 2, "from_arxiv": 1,
                            "pending": 0, "seconds": out["links"]["seconds"],
                            "why_pending": []}
    assert out["subscribers"] == {}  # no new papers, so no new issue
    feed = feedparser.parse((project.root / "feeds" / "all.atom").read_bytes())
    assert {e.title: e.link for e in feed.entries} == EXPECTED  # the feed now links them
    page, = (project.root / "site" / "all").glob("0001-*.html")  # and so does the web page
    assert html_links(page.read_text(encoding="utf-8")) == EXPECTED

    asked = len(server.requests)
    clock.tick()
    assert main(["run", "--json", "--config", str(project.config_path)]) == 0
    assert json.loads(capsys.readouterr().out)["links"] is None
    assert len(server.requests) == asked  # nothing is asked twice


def test_a_lookup_that_keeps_failing_backs_off_then_gives_up(project: Project,
                                                             clock: Clock) -> None:
    project.write_config(SUBSCRIBERS)
    project.drop(COPY)
    run(project.config(), now=clock)  # DIGEST_ENRICH=0 here: the papers are only stored
    store = Store.open(project.config().store_path)
    try:
        key = f"title:{NOBODY.lower()}"
        failing = Resolution(key=key, title=NOBODY, pending=True, reason="HTTP 500",
                             failed=True)
        waits = []
        for _ in range(6):
            store.put_resolutions([failing], clock.now, retry=timedelta(minutes=30), tries=6)
            next_at = store.conn.execute("SELECT next_at, pending FROM enrichment").fetchone()
            waits.append(None if next_at[0] is None else
                         datetime.fromisoformat(next_at[0]) - clock.now)
        assert waits[:5] == [timedelta(minutes=30 * 2 ** n) for n in range(5)]  # doubling
        assert waits[5] is None  # the sixth failed try is the last
        row = store.conn.execute("SELECT pending, attempts, reason FROM enrichment").fetchone()
        assert row[0] == 0 and row[1] == 6 and "given up after 6 tries" in row[2]
        later = store.enrichment_todo(clock.now + timedelta(days=30))
        assert key not in [p.key for p, _ in later] and len(later) == 3  # the other three
        unasked = Resolution(key=key, title=NOBODY, pending=True, reason="not yet")
        store.put_resolutions([unasked], clock.now)  # the budget ran out before it: no try
        assert store.conn.execute("SELECT attempts, next_at FROM enrichment").fetchone()[0] \
            == 6
    finally:
        store.close()
