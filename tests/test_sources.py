"""Live sources served from a real HTTP server on 127.0.0.1: parsing, ETag/304, failures."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DATA, Clock, Project, dated
from webserver import Web

from digest.daemon import Daemon
from digest.store import Store

LIVE = DATA / "live"
ROUTES = {
    "/api/daily_papers": (LIVE / "daily.json", "application/json"),
    "/papers": (LIVE / "page.html", "text/html; charset=utf-8"),
    "/api/query": (LIVE / "arxiv.xml", "application/atom+xml"),
    "/blog.rss": (LIVE / "blog.rss", "application/rss+xml"),
}


@pytest.fixture
def web() -> Iterator[Web]:
    w = Web(ROUTES).start()
    yield w
    w.stop()


def sources_config(project: Project, web: Web) -> None:
    folder = project.root / "shared-folder"
    folder.mkdir(exist_ok=True)
    dated(Path(shutil.copy(DATA / "shape_blank.txt", folder / "dump.txt")))
    project.write_config(
        '[[subscribers]]\nname = "all"\nmax_items = 1000\n'
        '[[subscribers]]\nname = "ana"\nkeywords = ["CLIP", "medical"]\n',
        extra=f"""also_new = 1000
[[sources]]
name = "hf"
type = "hf-daily"
url = "{web.url('/api/daily_papers')}"
[[sources]]
name = "hfpage"
type = "hf-page"
url = "{web.url('/papers')}"
[[sources]]
name = "arxiv-cv"
type = "arxiv"
url = "{web.url('/api/query')}"
query = "cat:cs.CV"
max_results = 50
[[sources]]
name = "blog"
type = "feed"
url = "{web.url('/blog.rss')}"
[[sources]]
name = "lab"
type = "folder"
path = "shared-folder"
""")


def daemon(project: Project, clock: Clock, naps: list[float] | None = None) -> Daemon:
    return Daemon(project.config(), now=clock, sleep=(naps.append if naps is not None
                                                      else lambda _s: None),
                  http_timeout=0.5, send=False)


def stored(project: Project) -> dict[str, tuple[str | None, int | None, int | None]]:
    store = Store.open(project.config().store_path)
    try:
        return {p.title: (p.arxiv_id, p.authors, p.upvotes) for p in store.papers_after(0, 99)}
    finally:
        store.close()


def test_every_source_parses_and_the_same_paper_is_one_paper(project: Project, web: Web,
                                                             clock: Clock) -> None:
    sources_config(project, web)
    report = daemon(project, clock).tick()
    assert report.poll.failed == [] and len(report.poll.saved) == 4
    assert {Path(p).name.split("-2026")[0] for p in report.poll.saved} == {
        "hf", "hfpage", "arxiv-cv", "blog"}
    papers = stored(project)
    assert papers["Contrastive CLIP Pretraining on Curated Pairs"] == ("2611.00001", 2, 42)
    assert papers["Medical Report Grounding for Radiology Models"][0] == "2611.00002"
    assert papers["Pruning Vision Transformers Without Retraining"] == ("2611.00006", 2, None)
    assert papers["Quantized KV Caches for Long Context"][0] == "2611.00005"
    assert papers["Graph Transformers & Spectral Encodings"][0] == "2611.00004"
    assert "Self-Supervised Ultrasound Pretraining" in papers
    assert "Tiny Benchmarks for Parser Testing" in papers  # from the folder source
    # 3 from JSON + 2 more from HTML + 1 more from arXiv + 1 more from RSS + 4 from the folder
    assert len(papers) == 3 + 2 + 1 + 1 + 4
    assert report.run is not None and report.run.new_papers == 11
    query = [path for path, _ in web.requests if path.startswith("/api/query")]
    assert query and "search_query=cat%3Acs.CV" in query[0] and "max_results=50" in query[0]
    assert all(h.get("User-Agent", "").startswith("digest/") for _, h in web.requests)


def test_an_unchanged_source_costs_a_304(project: Project, web: Web, clock: Clock) -> None:
    sources_config(project, web)
    daemon(project, clock).tick()
    files = sorted(p.name for p in project.inbox.iterdir())
    web.requests.clear()
    clock.tick(1)
    report = daemon(project, clock).tick()
    assert sorted(report.poll.unchanged) == ["arxiv-cv", "blog", "hf", "hfpage"]
    assert sorted(p.name for p in project.inbox.iterdir()) == files
    assert all(h.get("If-None-Match", "").startswith('"') for _, h in web.requests)
    assert report.run is not None and report.run.new_papers == 0


@pytest.mark.parametrize("fault", ["500", "slow", "junk"])
def test_a_failing_source_is_reported_and_the_others_go_on(project: Project, web: Web,
                                                           clock: Clock, fault: str) -> None:
    sources_config(project, web)
    web.faults["/api/daily_papers"] = fault
    naps: list[float] = []
    report = daemon(project, clock, naps).tick()
    assert [name for name, _ in report.poll.failed] == ["hf"]
    assert sorted(Path(p).name.split("-2026")[0] for p in report.poll.saved) == [
        "arxiv-cv", "blog", "hfpage"]
    if fault in ("500", "slow"):
        assert naps[:2] == [1.0, 2.0]  # retried with back-off before giving up
    before = stored(project)
    assert "Contrastive CLIP Pretraining on Curated Pairs" in before  # from the HTML page
    del web.faults["/api/daily_papers"]
    clock.tick(1)
    report = daemon(project, clock).tick()
    assert report.poll.failed == [] and len(report.poll.saved) == 1
    after = stored(project)
    assert set(before) <= set(after)
    assert after["Contrastive CLIP Pretraining on Curated Pairs"] == ("2611.00001", 2, 42)


def test_retry_after_is_honoured(project: Project, web: Web, clock: Clock) -> None:
    sources_config(project, web)
    web.faults["/blog.rss"] = "429"
    naps: list[float] = []
    report = daemon(project, clock, naps).tick()
    assert report.poll.failed == [] and 7.0 in naps


def test_arxiv_gets_one_request_every_three_seconds(project: Project, web: Web,
                                                    clock: Clock) -> None:
    project.write_config('[[subscribers]]\nname = "all"\n', extra="".join(
        f'[[sources]]\nname = "ax{i}"\ntype = "arxiv"\nurl = "{web.url("/api/query")}"\n'
        f'query = "cat:cs.CV"\n' for i in range(3)))
    naps: list[float] = []
    report = daemon(project, clock, naps).tick()
    assert len(report.poll.saved) == 3 and report.poll.failed == []
    assert report.run is not None and len(report.run.dumps_duplicate) == 2  # same content
    assert len(naps) >= 2 and all(2.0 < n <= 3.0 for n in naps[-2:])


def test_hostile_documents_are_rejected_alone(project: Project, web: Web, clock: Clock) -> None:
    sources_config(project, web)
    (project.inbox / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    shutil.rmtree(project.root / "shared-folder")
    report = daemon(project, clock).tick()
    assert report.run is not None
    assert any("deep.json: nested too deeply" in r for r in report.run.dumps_rejected)
    assert ("lab", f"{project.root / 'shared-folder'} is not a folder (key [[sources]].path)"
            ) in report.poll.failed
    assert report.run.new_papers == 7  # the four web sources still went in


def test_the_same_document_without_validators_is_not_saved_again(project: Project, web: Web,
                                                                  clock: Clock) -> None:
    sources_config(project, web)
    daemon(project, clock).tick()
    store = Store.open(project.config().store_path)
    store.conn.execute("UPDATE source_state SET etag = NULL, last_modified = NULL")
    store.close()
    files = sorted(p.name for p in project.inbox.iterdir())
    clock.tick(1)
    report = daemon(project, clock).tick()
    assert sorted(report.poll.unchanged) == ["arxiv-cv", "blog", "hf", "hfpage"]
    assert sorted(p.name for p in project.inbox.iterdir()) == files


def test_a_new_url_does_not_reuse_the_old_validators(project: Project, web: Web,
                                                     clock: Clock) -> None:
    sources_config(project, web)
    daemon(project, clock).tick()
    web.routes["/other.rss"] = (LIVE / "blog.rss", "application/rss+xml")
    project.config_path.write_text(project.config_path.read_text().replace("/blog.rss",
                                                                           "/other.rss"))
    web.requests.clear()
    daemon(project, clock).tick()
    (headers,) = [h for path, h in web.requests if path == "/other.rss"]
    assert "If-None-Match" not in headers


def test_a_latin1_feed_and_an_error_page_instead_of_json(project: Project, web: Web,
                                                         clock: Clock, tmp_path: Path) -> None:
    latin = tmp_path / "latin.rss"
    latin.write_bytes(('<?xml version="1.0" encoding="ISO-8859-1"?><rss version="2.0"><channel>'
                       "<title>Caf\u00e9</title><item><title>Na\u00efve Bayes for Caf\u00e9 "
                       "Menus</title><description>Tasty.</description></item></channel></rss>"
                       ).encode("latin-1"))
    web.routes["/blog.rss"] = (latin, "application/rss+xml; charset=ISO-8859-1")
    web.routes["/api/daily_papers"] = (LIVE / "page.html", "text/html")
    sources_config(project, web)
    report = daemon(project, clock).tick()
    assert "Naïve Bayes for Café Menus" in stored(project)
    assert [n for n, _ in report.poll.failed] == ["hf"]
    assert "expected hf-daily content" in report.poll.failed[0][1]
