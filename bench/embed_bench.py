"""Embedding speed of the semantic extra: papers/s per core, and what a known paper costs.

    python bench/embed_bench.py [--dumps ../shared/dumps] [--papers 200]

Embeds the shared dumps' papers ("title. abstract", as ingest does) into an empty cache,
then asks for the same papers again (a paper already embedded must cost no model call; a
run reads stored vectors the same way, see tests/test_semantic_pipeline.py). Prints papers
per CPU-second (the process's own CPU time over all its threads, so a busy machine neither
flatters nor punishes it) and wall papers/s, against the target of 10 per core.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from digest import embed
from digest.models import Paper
from digest.sources import read_dump

HERE = Path(__file__).resolve().parent


def _papers(dumps: Path, limit: int) -> list[Paper]:
    seen: dict[str, Paper] = {}
    for path in sorted(dumps.glob("*.txt")):
        for p in read_dump(path).papers:
            seen.setdefault(p.key, p)
    return list(seen.values())[:limit]


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dumps", type=Path, default=HERE.parent.parent / "shared" / "dumps")
    parser.add_argument("--papers", type=int, default=200)
    args = parser.parse_args()
    if not embed.available():
        raise SystemExit(f"the semantic extra is not installed: {embed.INSTALL}")
    papers = _papers(args.dumps, args.papers)
    texts = [embed.paper_text(p) for p in papers]
    start = time.perf_counter()
    model = embed.load()
    load_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        cache = embed.VectorCache(Path(tmp) / "vectors.sqlite")
        cpu0, wall0 = time.process_time(), time.perf_counter()
        _, computed = embed.embed_texts(model, texts, cache=cache)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        cpu1, wall1 = time.process_time(), time.perf_counter()
        _, again = embed.embed_texts(model, texts, cache=cache)
        cpu_again, wall_again = time.process_time() - cpu1, time.perf_counter() - wall1
        cache.close()
    words = sum(len(t.split()) for t in texts) / len(texts)
    print(f"model {model.id}, loaded in {load_s:.2f} s; {len(texts)} papers, "
          f"{words:.0f} words each on average, {embed.MAX_TOKENS} tokens at most")
    print(f"first pass:  {computed} embedded, {wall:.1f} s wall, {cpu:.1f} s CPU over "
          f"{os.cpu_count()} cores -> {computed / cpu:.1f} papers per CPU-second "
          f"(target >= 10), {computed / wall:.1f} papers/s wall")
    print(f"second pass: {again} embedded, {wall_again * 1000:.1f} ms wall, "
          f"{cpu_again * 1000:.1f} ms CPU (read from the cache)")
    print(f"a known paper costs {wall_again / len(texts) * 1e6:.0f} us against "
          f"{wall / max(1, computed) * 1e3:.0f} ms to embed: "
          f"{(wall / max(1, computed)) / max(1e-9, wall_again / len(texts)):.0f}x")


if __name__ == "__main__":
    main()
