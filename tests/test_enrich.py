"""enrich: links and author names for papers from text copies, against a loopback server
that answers like the HF daily-papers API and the arXiv API."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from enrichserver import ARXIV, DAILY, EnrichServer

from digest.enrich import (
    ARXIV_SPACING,
    BUDGET_SPENT,
    MAX_DAYS,
    Client,
    MemoryCache,
    Resolution,
    arxiv_query,
    enrich,
    match_titles,
    same_title,
    search_url,
)
from digest.identity import paper_key
from digest.models import Paper

DATA = Path(__file__).resolve().parent / "data" / "enrich"
DAY = date(2025, 11, 21)

# Titles as a text copy of the HF daily page of DAY gives them (and two it does not list).
TIDAL = "Tidal Memory: Long-Context Recall with Sparse Anchors"  # exact
COLOR = "Color Constancy Modeling for Night–Time Drone Imagery"  # US spelling, en dash
PRETRAIN = "Pretraining Small Models on Curated Lecture Notes"  # listed as Pre-Training
VIDEO = "Video Diffusion With Temporal Anchors"  # listed: "... Without ..." (another paper)
CORAL = "Supervised Segmentation of Coral Reef Surveys"  # listed: "Unsupervised ..."
LIGHT = "Counting Lighthouses with Weak Labels"  # on arXiv only
HARBOUR = "Graph Priors for Harbour Traffic Forecasting"  # on arXiv only
NOBODY = "A Paper Nobody Wrote"  # nowhere


class FakeClock:
    """Monotonic seconds that move only when someone sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


def text_paper(title: str, authors: int = 2) -> Paper:
    """A paper as a text copy gives it: no URL, no arXiv id, an author count only."""
    return Paper(key=paper_key(title), title=title, abstract="An abstract.", authors=authors,
                 source="dump.txt", line=1)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server(clock: FakeClock) -> Iterator[EnrichServer]:
    web = EnrichServer(DATA / "arxiv_empty.xml", clock=clock).start()
    web.daily = {"2025-11-21": DATA / "hf_daily_2025-11-21.json",
                 "2025-11-22": DATA / "hf_daily_2025-11-22.json"}
    web.arxiv = {arxiv_query(LIGHT): DATA / "arxiv_lighthouses.xml",
                 arxiv_query(HARBOUR): DATA / "arxiv_harbour.xml",
                 arxiv_query(VIDEO): DATA / "arxiv_near_miss.xml"}
    yield web
    web.stop()


@pytest.fixture
def client(server: EnrichServer) -> Iterator[Client]:
    with Client(hf_base=server.base, arxiv_base=server.base, timeout=0.5,
                user_agent="digest/0.1 (+https://example.org/digest/)") as c:
        yield c


def run(papers: list[Paper], client: Client, clock: FakeClock, *, day: date | None = DAY,
        cache: MemoryCache | None = None, budget: float = 60.0) -> dict[str, Resolution]:
    return enrich(papers, day, cache if cache is not None else MemoryCache(), client, budget,
                  clock, sleep=clock.sleep)


def test_a_daily_page_is_resolved_in_one_request(server: EnrichServer, client: Client,
                                                  clock: FakeClock) -> None:
    papers = [text_paper(TIDAL, 3), text_paper(COLOR), text_paper(PRETRAIN, 4)]
    got = run(papers, client, clock)
    assert [(r.path, r.query) for r in server.requests] == [(DAILY, {"date": "2025-11-21"})]
    assert server.requests[0].headers["User-Agent"].startswith("digest/")
    tidal = got[paper_key(TIDAL)]
    assert tidal.source == "hf-daily" and tidal.arxiv_id == "2511.05101"
    assert tidal.url == tidal.link == "https://huggingface.co/papers/2511.05101"
    assert tidal.author_names == ("Ines Varga", "Tomás Ferreira", "Kalani Moss")
    assert got[paper_key(COLOR)].arxiv_id == "2511.05102"  # fuzzy: spelling, dash
    assert got[paper_key(PRETRAIN)].author_names == (
        "Priya Raman", "Jonas Berg", "Eun-ji Park", "Omar Haddad")
    assert all(r.resolved and r.final and not r.reason for r in got.values())
    assert clock.sleeps == []


def test_leftovers_go_to_arxiv_three_seconds_apart(server: EnrichServer, client: Client,
                                                   clock: FakeClock) -> None:
    papers = [text_paper(TIDAL), text_paper(LIGHT), text_paper(HARBOUR), text_paper(NOBODY)]
    got = run(papers, client, clock)
    assert len(server.asked(DAILY)) == 1
    asked = server.asked(ARXIV)
    assert [r.query for r in asked] == [
        {"search_query": f'ti:"{t}"', "max_results": "3"}
        for t in ("counting lighthouses with weak labels",
                  "graph priors for harbour traffic forecasting", "a paper nobody wrote")]
    times = [r.at for r in asked]
    assert all(b - a >= ARXIV_SPACING for a, b in itertools.pairwise(times))
    assert clock.now - 100.0 == pytest.approx(2 * ARXIV_SPACING)  # no wait before the first
    light = got[paper_key(LIGHT)]
    assert (light.source, light.arxiv_id, light.url) == (
        "arxiv", "2511.07301", "https://arxiv.org/abs/2511.07301")
    assert light.author_names == ("Rosa Pebble", "Tom Gravel", "Ines Harbour")
    assert got[paper_key(HARBOUR)].url == "https://arxiv.org/abs/2511.07302"
    nobody = got[paper_key(NOBODY)]
    assert not nobody.resolved and nobody.final and "not found" in nobody.reason
    assert nobody.link == "https://huggingface.co/papers?q=A+Paper+Nobody+Wrote"


def test_the_first_arxiv_request_waits_for_one_made_elsewhere_in_the_process(
        server: EnrichServer, client: Client, clock: FakeClock) -> None:
    heard: list[float] = []
    progress: list[tuple[int, int, int]] = []
    got = enrich([text_paper(LIGHT), text_paper(NOBODY)], None, MemoryCache(), client, 60.0,
                 clock, sleep=clock.sleep, arxiv_after=clock.now + 2.0,
                 on_arxiv=heard.append, progress=lambda *a: progress.append(a))
    first, second = (r.at for r in server.asked(ARXIV))
    assert first == pytest.approx(102.0)  # the arXiv source asked 1 s before: 2 s to wait
    assert second - first == pytest.approx(ARXIV_SPACING)
    assert heard == [first, second]  # so the source's next request waits for these
    assert progress == [(1, 2, 1), (2, 2, 1)]
    assert got[paper_key(LIGHT)].resolved and not got[paper_key(NOBODY)].resolved


def test_daily_pages_are_asked_per_day_most_papers_first(server: EnrichServer, client: Client,
                                                         clock: FakeClock) -> None:
    days = {paper_key(TIDAL): DAY, paper_key(COLOR): DAY,
            paper_key(VIDEO): date(2025, 11, 22)}
    got = enrich([text_paper(TIDAL), text_paper(COLOR), text_paper(VIDEO)], days,
                 MemoryCache(), client, 60.0, clock, sleep=clock.sleep)
    assert [r.query["date"] for r in server.asked(DAILY)] == ["2025-11-21", "2025-11-22"]
    assert got[paper_key(TIDAL)].source == got[paper_key(COLOR)].source == "hf-daily"


def test_a_refused_listing_is_final_and_extra_days_wait(server: EnrichServer, client: Client,
                                                        clock: FakeClock) -> None:
    server.faults[DAILY] = "404"  # the question itself is refused: asking again won't help
    got = run([text_paper(TIDAL)], client, clock)
    tidal = got[paper_key(TIDAL)]
    assert not tidal.pending and not tidal.failed and "HTTP 404" in tidal.reason
    server.faults[DAILY] = "403"  # a proxy or a block may lift: asked again, a failure
    got = run([text_paper(COLOR)], client, clock)
    assert got[paper_key(COLOR)].pending and got[paper_key(COLOR)].failed
    del server.faults[DAILY]
    days = {paper_key(TIDAL): DAY, paper_key(PRETRAIN): DAY,  # the biggest day goes first
            paper_key(COLOR): date(2025, 11, 2), paper_key(LIGHT): date(2025, 11, 4),
            paper_key(VIDEO): date(2025, 11, 5)}
    got = enrich([text_paper(t) for t in (TIDAL, PRETRAIN, COLOR, LIGHT, VIDEO)], days,
                 MemoryCache(), client, 60.0, clock, sleep=clock.sleep)
    asked = [r.query["date"] for r in server.asked(DAILY)][2:]
    assert asked == ["2025-11-21", "2025-11-02", "2025-11-04"] and len(asked) == MAX_DAYS
    late = got[paper_key(VIDEO)]  # the fourth day is not asked of HF this run
    assert late.pending and not late.failed and "at most 3 daily listings" in late.reason
    assert got[paper_key(TIDAL)].resolved and not got[paper_key(COLOR)].resolved
    color = got[paper_key(COLOR)]  # its day's listing answered without it: not asked again
    assert color.listed


def test_the_budget_stops_requests_and_the_rest_is_asked_next_run(
        server: EnrichServer, client: Client, clock: FakeClock) -> None:
    titles = [f"Unlisted Study Number {w} of Harbour Fog" for w in
              ("One", "Two", "Three", "Four", "Five")]
    cache = MemoryCache()
    got = run([text_paper(t) for t in titles], client, clock, cache=cache, budget=7.0)
    assert len(server.asked(DAILY)) == 1
    assert len(server.asked(ARXIV)) == 3  # at +0, +3, +6; +9 is past the budget
    assert clock.now - 100.0 <= 7.0
    late = [got[paper_key(t)] for t in titles[3:]]
    assert all(r.pending and not r.final and BUDGET_SPENT in r.reason for r in late)
    assert all(r.link.startswith("https://huggingface.co/papers?q=") for r in late)
    assert all(got[paper_key(t)].final for t in titles[:3])  # looked for, not found

    server.requests.clear()
    again = run([text_paper(t) for t in titles], client, clock, cache=cache, budget=60.0)
    assert [r.query["search_query"] for r in server.asked(ARXIV)] == [
        arxiv_query(t) for t in titles[3:]]  # the two left over; the three final are cached
    assert all(again[paper_key(t)].final for t in titles)


def test_no_budget_means_no_request(server: EnrichServer, client: Client,
                                    clock: FakeClock) -> None:
    got = run([text_paper(TIDAL), text_paper(LIGHT)], client, clock, budget=0.0)
    assert server.requests == []
    assert all(r.pending and r.link.startswith("https://huggingface.co/papers?q=")
               for r in got.values())


def test_cached_results_cause_no_request(server: EnrichServer, client: Client,
                                         clock: FakeClock) -> None:
    cache = MemoryCache()
    first = run([text_paper(TIDAL), text_paper(LIGHT), text_paper(NOBODY)], client, clock,
                cache=cache)
    server.requests.clear()
    second = run([text_paper(TIDAL), text_paper(LIGHT), text_paper(NOBODY)], client, clock,
                 cache=cache)
    assert server.requests == []
    assert second == first


def test_papers_with_a_link_are_not_looked_up(server: EnrichServer, client: Client,
                                              clock: FakeClock) -> None:
    linked = Paper(key="arxiv:2511.05101", title=TIDAL, abstract="", arxiv_id="2511.05101",
                   url="https://arxiv.org/abs/2511.05101")
    page = Paper(key=paper_key("Some Blog Post"), title="Some Blog Post", abstract="",
                 url="https://example.org/post")
    assert run([linked, page], client, clock) == {}
    assert server.requests == []


def test_without_a_page_date_only_arxiv_is_asked(server: EnrichServer, client: Client,
                                                 clock: FakeClock) -> None:
    got = run([text_paper(LIGHT)], client, clock, day=None)
    assert [r.path for r in server.requests] == [ARXIV]
    assert got[paper_key(LIGHT)].source == "arxiv"


@pytest.mark.parametrize("fault", ["500", "slow", "junk", "html", "big", "429"])
def test_a_failing_daily_listing_falls_back_to_arxiv(
        server: EnrichServer, client: Client, clock: FakeClock, fault: str) -> None:
    server.faults[DAILY] = fault
    got = run([text_paper(TIDAL), text_paper(LIGHT)], client, clock)
    tidal = got[paper_key(TIDAL)]  # arXiv's empty answer is no proof while HF failed
    assert not tidal.resolved and tidal.pending and "HF daily papers:" in tidal.reason
    assert tidal.link == "https://huggingface.co/papers?q=Tidal+Memory%3A+Long-Context+Recall" \
                         "+with+Sparse+Anchors"
    assert got[paper_key(LIGHT)].source == "arxiv"


@pytest.mark.parametrize(("fault", "reason"), [
    ("500", "HTTP 500"), ("slow", "no answer in time"), ("junk", "not an arXiv API feed"),
    ("html", "not an arXiv API feed"), ("big", "over 5000000 bytes")])
def test_arxiv_failures_leave_papers_pending_with_a_reason(
        server: EnrichServer, client: Client, clock: FakeClock, fault: str,
        reason: str) -> None:
    server.faults[ARXIV] = fault
    titles = [LIGHT, HARBOUR, NOBODY]
    got = run([text_paper(t) for t in titles], client, clock, day=None)
    assert len(server.asked(ARXIV)) == 2  # two failures in a row: arXiv rests till next run
    for title in titles:
        r = got[paper_key(title)]
        assert not r.resolved and r.pending and r.link.startswith(
            "https://huggingface.co/papers?q=")
    assert reason in got[paper_key(LIGHT)].reason
    assert "busy or failing" in got[paper_key(NOBODY)].reason


def test_arxiv_429_is_waited_out_within_the_budget(server: EnrichServer, client: Client,
                                                   clock: FakeClock) -> None:
    server.once[ARXIV] = ["429"]
    got = run([text_paper(LIGHT), text_paper(HARBOUR)], client, clock, day=None)
    times = [r.at - 100.0 for r in server.asked(ARXIV)]
    assert times == [0.0, 7.0, 10.0]  # Retry-After: 7, then the usual 3 s
    assert got[paper_key(LIGHT)].source == got[paper_key(HARBOUR)].source == "arxiv"


def test_arxiv_429_beyond_the_budget_stops_asking(server: EnrichServer, client: Client,
                                                  clock: FakeClock) -> None:
    server.faults[ARXIV] = "429"
    server.retry_after = "120"
    got = run([text_paper(LIGHT), text_paper(HARBOUR)], client, clock, day=None)
    assert len(server.asked(ARXIV)) == 1
    assert clock.sleeps == []
    assert "HTTP 429" in got[paper_key(LIGHT)].reason
    assert all(r.pending for r in got.values())


def test_an_arxiv_error_entry_is_final(server: EnrichServer, client: Client,
                                       clock: FakeClock) -> None:
    server.arxiv[arxiv_query(NOBODY)] = DATA / "arxiv_error.xml"
    got = run([text_paper(NOBODY)], client, clock, day=None)
    r = got[paper_key(NOBODY)]
    assert not r.resolved and r.final and "arXiv API" in r.reason


def test_an_unreachable_server_is_a_reason_not_an_exception(clock: FakeClock) -> None:
    with Client(hf_base="http://127.0.0.1:9", arxiv_base="http://127.0.0.1:9",
                timeout=0.5) as dead:
        got = enrich([text_paper(TIDAL), text_paper(LIGHT)], DAY, MemoryCache(), dead, 30.0,
                     clock, sleep=clock.sleep)
    assert all(r.pending and r.reason for r in got.values())


def test_near_misses_stay_unresolved(server: EnrichServer, client: Client,
                                     clock: FakeClock) -> None:
    got = run([text_paper(VIDEO), text_paper(CORAL)], client, clock)
    video, coral = got[paper_key(VIDEO)], got[paper_key(CORAL)]
    assert not video.resolved and not coral.resolved  # neither the listing nor arXiv's
    assert video.final and coral.final
    assert "2511.05103" not in video.link and video.link.startswith(
        "https://huggingface.co/papers?q=Video+Diffusion")


def test_a_title_two_listed_papers_share_matches_neither(
        server: EnrichServer, client: Client, clock: FakeClock) -> None:
    shared, judges = "Sparse Anchors for Streaming Speech", "Tiny Judges for Long Answers"
    got = run([text_paper(shared), text_paper(judges)], client, clock,
              day=date(2025, 11, 22))
    assert got[paper_key(judges)].arxiv_id == "2511.06203"
    assert not got[paper_key(shared)].resolved


@pytest.mark.parametrize(("a", "b"), [
    ("Colour Constancy Modelling for Night-Time Drone Imagery",
     "Color Constancy Modeling for Night Time Drone Imagery"),
    ("Pre-Training Small Models on Curated Lecture Notes",
     "Pretraining Small Models on Curated Lecture Notes"),
    ("Cats & Dogs: Learning Pets from Sparse Video",
     "Cats and Dogs: Learning Pets from Sparse Video"),
    ("Self-Supervised 3-D Scene Flow from Event Cameras",
     "Self-Supervised 3D Scene Flow from Event Cameras"),
    ("Reasoning about “Quotes” in Long Documents", 'Reasoning About "Quotes" in Long Documents'),
])
def test_same_title_accepts_spelling_variants(a: str, b: str) -> None:
    assert same_title(a, b)


@pytest.mark.parametrize(("a", "b"), [
    ("Video Diffusion With Temporal Anchors", "Video Diffusion Without Temporal Anchors"),
    ("Supervised Segmentation of Coral Reef Surveys",
     "Unsupervised Segmentation of Coral Reef Surveys"),
    ("Scaling Laws for Sparse Retrieval Models", "Scaling Laws for Dense Retrieval Models"),
    ("Aligning GPT-4 with Human Feedback at Scale", "Aligning GPT-5 with Human Feedback at Scale"),
    ("Video Diffusion", "Video Diffusion with Temporal Anchors"),
    ("Efficient Transformer for Long Speech", "Efficient Transformers for Long Speech"),
    ("Graph Networks for Molecule Design", "Molecule Design for Graph Networks"),
    ("LLaMA-2 Fine-Tuning on Legal Text", "LLaMA-3 Fine-Tuning on Legal Text"),
    ("Learning Image Priors", "Learning Video Priors"),
    ("", ""),
])
def test_same_title_refuses_near_misses(a: str, b: str) -> None:
    assert not same_title(a, b)


def test_match_titles_is_one_to_one() -> None:
    listed = [Paper(key="arxiv:2511.00001", title="Colour Modelling of Night Drone Imagery",
                    abstract="", arxiv_id="2511.00001")]
    wanted = {"title:a": "Color Modelling of Night Drone Imagery",
              "title:b": "Colour Modeling of Night Drone Imagery"}
    assert match_titles(wanted, listed) == {}  # two papers claim one: neither gets it
    wanted["title:c"] = "Colour Modelling of Night Drone Imagery"
    assert match_titles(wanted, listed) == {"title:c": listed[0]}  # exact wins


def test_search_url_encodes_the_title() -> None:
    assert search_url("Q&A: 50% <faster>?") == \
        "https://huggingface.co/papers?q=Q%26A%3A+50%25+%3Cfaster%3E%3F"
    assert Resolution(key="k", title="A  B\x00").link == "https://huggingface.co/papers?q=A+B"
