"""Link lookups: requests and time for a copy of one daily page, beside the naive way.

    python bench/enrich_bench.py [--papers 100] [--listed 0.8]

A loopback server answers like the HF daily-papers API (a listing of the page's day with
``--listed`` of the copy's papers in it) and the arXiv API (every other title found).
``enrich`` runs on a simulated clock, so the seconds printed are what arXiv's 3 s spacing
costs for real, without waiting for them: first with no time budget, then with the
default 30 s. The naive way asks arXiv once per paper (what a per-paper lookup does).
A second pass over the same papers shows what the cache saves. The matching itself is
timed on the real clock.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from enrichserver import ARXIV, DAILY, EnrichServer  # type: ignore[import-not-found]  # noqa: E402

from digest.enrich import ARXIV_SPACING, Client, MemoryCache, arxiv_query, enrich  # noqa: E402
from digest.identity import paper_key  # noqa: E402
from digest.models import Paper  # noqa: E402

DAY = date(2025, 11, 21)
WORDS = ("sparse", "anchor", "tidal", "harbour", "graph", "prior", "lecture", "drone",
         "colour", "memory", "speech", "reef", "coral", "lighthouse", "weak", "label")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def title(n: int) -> str:
    picks = [WORDS[(n * 7 + k * 3) % len(WORDS)] for k in range(5)]
    return f"Study {n}: " + " ".join(w.capitalize() for w in picks)


def arxiv_feed(n: int) -> str:
    return (f'<?xml version="1.0" encoding="UTF-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
            f"<id>https://arxiv.org/api/x{n}</id><title>q</title><updated>2025-11-21T00:00:00Z"
            f"</updated><entry><id>http://arxiv.org/abs/2511.{n + 10000:05d}v1</id>"
            f"<updated>2025-11-21T00:00:00Z</updated><published>2025-11-21T00:00:00Z"
            f"</published><title>{title(n)}</title><summary>An abstract.</summary>"
            f"<author><name>Author {n}</name></author></entry></feed>")


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--papers", type=int, default=100)
    parser.add_argument("--listed", type=float, default=0.8)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="digest-enrich-bench-"))
    listed = int(args.papers * args.listed)
    (work / "daily.json").write_text(json.dumps([
        {"paper": {"id": f"2511.{n + 10000:05d}", "title": title(n), "summary": "An abstract.",
                   "authors": [{"name": f"Author {n}"}], "publishedAt": "2025-11-21T00:00:00Z"},
         "title": title(n), "publishedAt": "2025-11-21T00:00:00Z"} for n in range(listed)]))
    (work / "empty.xml").write_text(arxiv_feed(0).split("<entry>")[0] + "</feed>")
    server = EnrichServer(work / "empty.xml").start()
    server.daily = {DAY.isoformat(): work / "daily.json"}
    for n in range(listed, args.papers):
        (work / f"a{n}.xml").write_text(arxiv_feed(n))
        server.arxiv[arxiv_query(title(n))] = work / f"a{n}.xml"
    papers = [Paper(key=paper_key(title(n)), title=title(n), abstract="An abstract.")
              for n in range(args.papers)]
    print(f"a copy of one daily page: {args.papers} papers, {listed} of them in the day's "
          "HF listing (loopback server; seconds on a simulated clock at arXiv's "
          f"{ARXIV_SPACING:g} s spacing)")
    spent: list[float] = []
    with Client(hf_base=server.base, arxiv_base=server.base) as client:
        for budget, label in ((10_000.0, "no budget"), (30.0, "budget 30 s")):
            server.requests.clear()
            clock = Clock()
            cache = MemoryCache()
            start = time.perf_counter()
            got = enrich(papers, DAY, cache, client, budget, clock, sleep=clock.sleep)
            real = time.perf_counter() - start
            spent.append(clock.now)
            linked = sum(1 for r in got.values() if r.resolved)
            asked = len(server.asked(DAILY)), len(server.asked(ARXIV))
            print(f"  {label:>11}: {asked[0]} listing + {asked[1]} arXiv requests, "
                  f"{clock.now:6.1f} s at arXiv's pace ({real:.2f} s here), "
                  f"{linked}/{args.papers} linked, "
                  f"{sum(1 for r in got.values() if r.pending)} left for the next run")
            server.requests.clear()
            again = enrich(papers, DAY, cache, client, budget, Clock(), sleep=clock.sleep)
            print(f"  {'':>11}  next run (cache first): {len(server.requests)} requests, "
                  f"{sum(1 for r in again.values() if r.resolved)} linked in all")
    naive = (args.papers - 1) * ARXIV_SPACING
    print(f"  naive (arXiv once per paper): {args.papers} requests, {naive:.0f} s; ours "
          f"{spent[0]:.0f} s with no budget ({naive / max(spent[0], 1.0):.1f}x less time)")
    server.stop()


if __name__ == "__main__":
    main()
