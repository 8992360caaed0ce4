"""How fast is one run? Each stage timed beside a naive baseline, in the same run.

    python bench/pipeline_bench.py [--papers 10000] [--store 100000] [--subscribers 100]
                                   [--keywords 20]

Builds a synthetic page dump of --papers papers and a store pre-filled with --store
others, then times parse, diff (ingest), rank and render against naive baselines, and
finally the whole ``digest run`` in a fresh process (wall time and peak memory).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from digest.config import load_config
from digest.identity import normalise_title, paper_key
from digest.models import Digest, Keyword, Paper, ParsedDump, Profile, Ranked
from digest.rank import Corpus, highlight_spans, rank
from digest.render import Renderer
from digest.sources import read_dump
from digest.store import Store

SEED = 20261123
HEADER = "new\n\nGet trending papers in your email inbox!\n\nSubscribe\n\n" \
         "byAK and the research community\n\nNov 23\n\n"


def vocabulary(rng: random.Random, size: int = 6000) -> list[str]:
    """Pronounceable pseudo-words, so keyword frequencies follow a long tail."""
    syllables = ["ka", "lo", "mi", "ten", "ra", "vo", "sil", "qu", "ne", "dor", "pa", "xi",
                 "tra", "mo", "len", "gi", "fu", "ber", "sa", "cor"]
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))))
    return sorted(words)


def synthetic_papers(n: int, rng: random.Random, vocab: list[str], prefix: str) -> list[Paper]:
    """n papers with Zipf-distributed words; titles unique via the prefix and index."""
    weights = [1.0 / (i + 1) for i in range(len(vocab))]
    out = []
    for i in range(n):
        title = f"{prefix} {i} " + " ".join(rng.choices(vocab, weights, k=rng.randint(5, 10)))
        abstract = " ".join(rng.choices(vocab, weights, k=rng.randint(120, 180))) + "."
        out.append(Paper(key=paper_key(title), title=title.capitalize(), abstract=abstract))
    return out


def write_dump(path: Path, papers: list[Paper]) -> None:
    """A blank-line separated text dump, as a scheduler would save it."""
    path.write_text(HEADER + "\n\n".join(f"{p.title}\n\n{p.abstract}" for p in papers),
                    encoding="utf-8")


def profiles(rng: random.Random, vocab: list[str], n: int, k: int) -> list[Profile]:
    """n subscribers with k keywords each (a quarter of them two-word phrases)."""
    middle = vocab[50:2000]  # neither the commonest words nor ones that never occur
    out = []
    for s in range(n):
        kws = []
        for j in range(k):
            term = " ".join(rng.sample(middle, 2)) if j % 4 == 3 else rng.choice(middle)
            kws.append(Keyword(term, float(rng.choice([1, 1, 2]))))
        out.append(Profile(f"s{s:03d}", f"s{s:03d}@example.org", tuple(kws), max_items=20))
    return out


T = TypeVar("T")


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    """Seconds taken by fn(), and its result."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def naive_rank(papers: list[Paper], profile: Profile) -> list[tuple[float, str]]:
    """The baseline: one regex per keyword per paper, counts weighted, no index."""
    scored = []
    for p in papers:
        score = 0.0
        for kw in profile.keywords:
            pattern = re.compile(rf"\b{re.escape(kw.term)}s?\b", re.I)
            score += kw.weight * (3 * len(pattern.findall(p.title)) +
                                  len(pattern.findall(p.abstract)))
        if score:
            scored.append((-score, p.title))
    return sorted(scored)[: profile.max_items]


def naive_diff(store: Store, papers: list[Paper]) -> int:
    """The baseline: read every stored key back, then diff in Python."""
    seen = {row[0] for row in store.conn.execute("SELECT title_norm FROM papers")}
    return sum(1 for p in papers if normalise_title(p.title) not in seen)


def indexed_diff(store: Store, papers: list[Paper]) -> int:
    """What ingest does per paper: indexed lookups, nothing read that is not asked for."""
    return sum(1 for p in papers if store._find_paper(p) is None)


def row(stage: str, n: int, ours: float, naive: float, note: str = "") -> None:
    print(f"{stage:<8}{n:>9,}{n / ours:>14,.0f}{n / naive:>14,.0f}{naive / ours:>9.1f}x  {note}")


def main() -> None:
    os.environ.setdefault("DIGEST_ENRICH", "0")  # no link lookups: not measured here
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--papers", type=int, default=10_000)
    parser.add_argument("--store", type=int, default=100_000)
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--keywords", type=int, default=20)
    args = parser.parse_args()
    rng = random.Random(SEED)
    vocab = vocabulary(rng)
    work = Path(tempfile.mkdtemp(prefix="digest-bench-"))
    now = datetime(2026, 11, 23, 8, tzinfo=UTC)

    print(f"setup: {args.store:,} stored papers, a dump of {args.papers:,} new ones, "
          f"{args.subscribers} subscribers x {args.keywords} keywords (in {work})")
    old = synthetic_papers(args.store, rng, vocab, "Archived study")
    new = synthetic_papers(args.papers, rng, vocab, "Fresh result")
    subs = profiles(rng, vocab, args.subscribers, args.keywords)
    store_path = work / "data" / "digest.sqlite3"
    store = Store.open(store_path)
    store.ingest(ParsedDump("prefill", "prefill", "synthetic", None, None, tuple(old)),
                 None, "backfill", now)
    store.close()
    del old
    (work / "inbox").mkdir()
    dump = work / "inbox" / "fresh.txt"
    write_dump(dump, new)
    backup = work / "prefilled.sqlite3"
    backup.write_bytes(store_path.read_bytes())

    print(f"\n{'stage':<8}{'papers':>9}{'ours/s':>14}{'naive/s':>14}{'ratio':>10}")
    t_parse, parsed = timed(lambda: read_dump(dump))
    t_floor, _ = timed(lambda: dump.read_text(encoding="utf-8").split("\n"))
    assert isinstance(parsed, ParsedDump) and len(parsed.papers) == args.papers
    row("parse", args.papers, t_parse, t_floor,
        "(not a competitor: read + split lines, the floor any parser pays)")

    store = Store.open(store_path)
    t_naive_diff, naive_new = timed(lambda: naive_diff(store, list(parsed.papers)))
    t_diff, ours_new = timed(lambda: indexed_diff(store, list(parsed.papers)))
    assert ours_new == naive_new == args.papers
    row("diff", args.papers, t_diff, t_naive_diff,
        f"(naive = read all {args.store:,} stored keys back)")
    t_ingest, _ = timed(lambda: store.ingest(parsed, None, "run", now, [p.name for p in subs]))
    print(f"{'ingest':<8}{args.papers:>9,}{args.papers / t_ingest:>14,.0f}{'':>14}{'':>10}  "
          "(diff + writing papers and sightings in one transaction; no baseline)")

    fresh = store.papers_after(0, store.latest_run())

    def rank_all() -> list[tuple[list[Ranked], list[Paper]]]:
        corpus = Corpus.build(fresh)  # built once, shared by every subscriber
        return [rank(corpus, p) for p in subs]

    t_rank, ranked = timed(rank_all)
    sample = max(1, args.subscribers // 20)
    t_naive_sample, _ = timed(lambda: [naive_rank(fresh, p) for p in subs[:sample]])
    t_naive_rank = t_naive_sample * args.subscribers / sample
    pairs = args.papers * args.subscribers
    row("rank", pairs, t_rank, t_naive_rank,
        f"(paper x subscriber pairs; naive = regex per keyword, timed on {sample} "
        "subscribers and scaled)")

    renderer = Renderer()
    digests = [Digest("Bench", p, 1, now, None, now, len(fresh), tuple(items),
                      tuple(rest[:30]), len(rest)) for p, (items, rest) in
               zip(subs, ranked, strict=True)]

    def naive_render() -> None:
        for d in digests:
            fresh_renderer = Renderer()  # templates compiled again for every digest
            fresh_renderer.markdown(d), fresh_renderer.html_page(d)

    t_naive_render, _ = timed(naive_render)
    highlight_spans.cache_clear()
    t_render, _ = timed(lambda: [(renderer.markdown(d), renderer.html_page(d)) for d in digests])
    row("render", len(digests), t_render, t_naive_render,
        "(digests, md + html; naive = templates compiled per digest)")
    store.close()

    # The whole run, in a fresh process: ingest + digests + feeds for every subscriber.
    store_path.write_bytes(backup.read_bytes())
    for suffix in ("-wal", "-shm"):
        Path(str(store_path) + suffix).unlink(missing_ok=True)
    config = work / "config.toml"
    lines = ['[digest]\nsite_url = "https://bench.example.org/"\n']
    for p in subs:
        kws = ", ".join(f'{{ term = "{k.term}", weight = {k.weight} }}' for k in p.keywords)
        lines.append(f'[[subscribers]]\nname = "{p.name}"\nkeywords = [{kws}]\n')
    config.write_text("\n".join(lines))
    load_config(config)
    script = ("import json, time\n"
              "from digest import load_config, run\n"
              "t = time.perf_counter()\n"
              f"r = run(load_config({str(config)!r}))\n"
              "print(json.dumps({'seconds': time.perf_counter() - t, 'new': r.new_papers,"
              " 'digests': len(r.digests), 'feeds': len(r.feeds_written),"
              " 'rss_mb': [int(x.split()[1]) for x in open('/proc/self/status')"
              " if x.startswith('VmHWM')][0] / 1024}))\n")  # ru_maxrss survives exec
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True)
    wall = time.perf_counter() - start
    whole = json.loads(out.stdout)
    print(f"\nwhole run (fresh process): {whole['new']:,} new papers, {whole['digests']} digests,"
          f" {whole['feeds']} feeds in {whole['seconds']:.2f} s ({wall:.2f} s with interpreter "
          f"start-up); peak memory {whole['rss_mb']:.0f} MB")
    print(f"targets: under 5 s ({'met' if whole['seconds'] < 5 else 'MISSED'}), under 300 MB "
          f"({'met' if whole['rss_mb'] < 300 else 'MISSED'})")
    print(f"(bench process peak: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}"
          " MB, includes building the synthetic data)")


if __name__ == "__main__":
    main()
