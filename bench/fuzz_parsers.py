"""Fuzz every parser: mutated real-structure documents, each must give papers or a clean error.

    python bench/fuzz_parsers.py [--runs 10000] [--seed 1] [--format feed ...]

Seeds are the repository's own fixtures of each format (tests/data). Each run takes a
seed document (or two spliced), applies a few mutations (hostile fragments inserted,
slices deleted, duplicated or repeated many times, truncation), then reads the bytes the
way the inbox does (``sources.decode`` then ``sources.parse_text``) and checks:

* the outcome is a ``ParsedDump`` or an ``InputError`` -- an error that says a parser
  *crashed* ("could not be read by the ... parser") counts as a failure;
* every text field is XML-safe and every URL is an absolute http(s) URL without white
  space or control characters;
* time per input: the slowest input and the slowest rate (ms per KB) are printed, so a
  quadratic pattern shows up as an outlier.

Prints one line per format and a total; exits 1 if any run failed.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from digest.errors import InputError
from digest.models import ParsedDump
from digest.sources import decode, parse_text

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
TODAY = date(2026, 11, 23)
FORMATS: dict[str, tuple[str, ...]] = {
    "hf-text": ("shape_*.txt", "hostile.txt"),
    "hf-markdown": ("md_*.md",),
    "hf-daily": ("live/*.json",),
    "hf-page": ("live/*.html",),
    "feed": ("live/*.xml", "live/*.rss"),
}
FRAGMENTS = (
    "\x00", "\x01", "\x1b", "\x0b", "\ufffe", "\ud800", "\u202e", "&#1114112;", "&#xD800;",
    "&#0;", "&#x1;", "&amp;", "&", "<", ">", "<a ", "<![x", "<!--", "]]>", "<script>",
    "<![CDATA[", '"', "'", "{", "}", "[", "]", ":", ",", "null", "true", "9" * 5000, "-1",
    "1e999", "\n", "\n\n", "  ", "\t", "https://", "http://x/", "file:///etc/passwd",
    "javascript:alert(1)", ")", ".", "•", "·", "Subscribe", "Nov 4", "May 14, 2024 12",
    "• 7 authors", "### [", "](https://huggingface.co/papers/2411.01234)", "<entry>",
    "</entry>", "<item>", "</item>", "<title>", "</title>", "<link href=", "<dc:creator>",
    "arXiv:2411.01234v2 Announce Type: replace Abstract:", '"paper": {', '"title": ',
    '"authors": [', "0000-00-00", "99999-12-31T00:00:00Z", "Ω", "😀", "e\u0301",
)
URL = re.compile(r"^https?://[^\s\x00-\x1f\x7f]+$")
XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


@dataclass
class Tally:
    runs: int = 0
    papers: int = 0
    errors: int = 0
    failures: list[str] = field(default_factory=list)
    slowest: float = 0.0
    worst_rate: float = 0.0  # ms per KB
    worst: str = ""  # the input with the worst rate, kept for a look
    outcomes: Counter[str] = field(default_factory=Counter)


def seeds(fmt: str) -> list[str]:
    found = sorted({p for pattern in FORMATS[fmt] for p in DATA.glob(pattern)})
    return [p.read_text(encoding="utf-8") for p in found]


def mutate(rng: random.Random, text: str, other: str) -> str:
    for _ in range(rng.randint(1, 6)):
        op = rng.random()
        at = rng.randint(0, len(text))
        if op < 0.35:
            text = text[:at] + rng.choice(FRAGMENTS) + text[at:]
        elif op < 0.5:
            end = min(len(text), at + rng.randint(1, 400))
            text = text[:at] + text[end:]
        elif op < 0.6:
            end = min(len(text), at + rng.randint(1, 200))
            text = text[:end] + text[at:end] + text[end:]
        elif op < 0.7:  # a fragment repeated many times: where quadratic parsers stall
            text = text[:at] + rng.choice(FRAGMENTS) * rng.randint(50, 3000) + text[at:]
        elif op < 0.8:
            text = text[:at]
        elif op < 0.9:
            cut = rng.randint(0, len(other))
            text = text[:at] + other[cut:cut + rng.randint(1, 2000)] + text[at:]
        else:
            chars = list(text)
            for _ in range(rng.randint(1, 20)):
                if chars:
                    chars[rng.randrange(len(chars))] = chr(rng.choice(
                        (rng.randint(0, 0x7f), rng.randint(0x80, 0x2fff), 0x0, 0xd800)))
            text = "".join(chars)
    return text


def check(parsed: ParsedDump) -> list[str]:
    problems = []
    for p in parsed.papers:
        texts = (p.title, p.abstract, p.summary, *p.author_names)
        if any(XML_ILLEGAL.search(t) for t in texts):
            problems.append(f"XML-illegal text in {p.title[:40]!r}")
        if any(u is not None and not URL.match(u) for u in (p.url, *p.links)):
            problems.append(f"bad URL in {p.title[:40]!r}: {p.url!r} {p.links!r}")
    return problems


def fuzz(fmt: str, runs: int, rng: random.Random) -> Tally:
    docs = seeds(fmt)
    tally = Tally()
    if not docs:
        tally.failures.append("no seed documents")
        return tally
    for n in range(runs):
        text = mutate(rng, rng.choice(docs), rng.choice(docs))
        start = time.perf_counter()
        try:
            name = f"fuzz-{fmt}-{n}"
            raw = text.encode("utf-8", "surrogatepass")  # a lone surrogate: invalid UTF-8
            parsed = parse_text(name, decode(name, raw), today=TODAY)
        except InputError as exc:
            outcome = "error"
            tally.errors += 1
            if "could not be read by the" in str(exc):
                tally.failures.append(f"run {n}: parser crashed: {exc}")
        except Exception as exc:  # anything else escaping parse_text is a bug
            outcome = "crash"
            tally.failures.append(f"run {n}: {type(exc).__name__}: {exc}")
        else:
            outcome = parsed.shape
            tally.papers += len(parsed.papers)
            tally.failures.extend(f"run {n}: {p}" for p in check(parsed))
        took = time.perf_counter() - start
        tally.runs += 1
        tally.outcomes[outcome] += 1
        tally.slowest = max(tally.slowest, took)
        rate = took * 1000 / max(len(text) / 1024, 1.0)
        if rate > tally.worst_rate:
            tally.worst_rate, tally.worst = rate, text
    return tally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--format", action="append", choices=sorted(FORMATS))
    parser.add_argument("--keep-worst", type=Path, metavar="DIR",
                        help="write each format's slowest-per-KB input into DIR")
    args = parser.parse_args(argv)
    failed = 0
    total = 0
    for fmt in args.format or list(FORMATS):
        rng = random.Random(f"{args.seed}:{fmt}")
        start = time.perf_counter()
        t = fuzz(fmt, args.runs, rng)
        took = time.perf_counter() - start
        total += t.runs
        failed += len(t.failures)
        shapes = ", ".join(f"{k} {v}" for k, v in t.outcomes.most_common())
        print(f"{fmt:12} {t.runs:6} inputs in {took:6.1f} s: {t.papers} papers, "
              f"{t.errors} clean errors, {len(t.failures)} failures; slowest input "
              f"{t.slowest * 1000:.0f} ms, worst {t.worst_rate:.1f} ms/KB ({shapes})")
        if args.keep_worst and t.worst:
            args.keep_worst.mkdir(parents=True, exist_ok=True)
            (args.keep_worst / f"{fmt}.worst").write_text(t.worst, "utf-8", "surrogatepass")
        for line in t.failures[:5]:
            print(f"    {line[:300]}")
    print(f"total: {total} inputs, {failed} failures")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
