"""Ranking quality: digest's ranking vs plain BM25 on graded relevance judgments.

    python bench/rank_quality.py [--dumps ../shared/dumps] [--labels bench/relevance/labels.json]

Both rankers get the same keywords (BM25 as a bag of their words, weights applied as
query-term weights) over the same 318 papers; prints nDCG@10, nDCG@20, MAP and P@10
per query and on average, and the ratio digest/BM25.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
from collections import Counter
from pathlib import Path

from digest.identity import normalise_title
from digest.models import Keyword, Paper
from digest.rank import Corpus, score_all
from digest.sources import read_dump

HERE = Path(__file__).resolve().parent


def label_key(title: str) -> str:
    """How labels.json names a paper: sha256 of the normalised title, 16 hex digits."""
    return hashlib.sha256(normalise_title(title).encode()).hexdigest()[:16]


def bm25(papers: list[Paper], keywords: list[Keyword], k1: float = 1.2,
         b: float = 0.75) -> list[str]:
    """Okapi BM25 over title + abstract, lower-cased word tokens, no stemming."""
    docs = [re.findall(r"\w+", f"{p.title} {p.abstract}".lower()) for p in papers]
    avg = sum(map(len, docs)) / len(docs)
    df: Counter[str] = Counter()
    for d in docs:
        df.update(set(d))
    query: dict[str, float] = {}
    for kw in keywords:
        for word in re.findall(r"\w+", kw.term.lower()):
            query[word] = query.get(word, 0.0) + kw.weight
    n = len(docs)
    scored = []
    for p, d in zip(papers, docs, strict=True):
        tf = Counter(d)
        s = 0.0
        for term, qw in query.items():
            if tf[term]:
                idf = math.log(1 + (n - df[term] + 0.5) / (df[term] + 0.5))
                s += qw * idf * tf[term] * (k1 + 1) / (tf[term] + k1 * (1 - b + b * len(d) / avg))
        if s > 0:
            scored.append((-s, p.title.casefold(), label_key(p.title)))
    return [k for _, _, k in sorted(scored)]


def ndcg(ranking: list[str], grades: dict[str, int], k: int) -> float:
    """Normalised discounted cumulative gain at k (gain 2^grade - 1)."""
    dcg = sum((2 ** grades.get(key, 0) - 1) / math.log2(i + 2)
              for i, key in enumerate(ranking[:k]))
    ideal = sorted(grades.values(), reverse=True)[:k]
    idcg = sum((2 ** g - 1) / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def average_precision(ranking: list[str], grades: dict[str, int]) -> float:
    """MAP over papers graded 1 or 2; relevant papers never retrieved count as misses."""
    hits, total = 0, 0.0
    for i, key in enumerate(ranking):
        if grades.get(key, 0) > 0:
            hits += 1
            total += hits / (i + 1)
    relevant = sum(1 for g in grades.values() if g > 0)
    return total / relevant if relevant else 0.0


def precision(ranking: list[str], grades: dict[str, int], k: int) -> float:
    """Share of the top k graded 1 or 2."""
    return sum(1 for key in ranking[:k] if grades.get(key, 0) > 0) / k


def main() -> None:
    """Print the comparison table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dumps", type=Path, default=HERE.parent.parent / "shared" / "dumps")
    parser.add_argument("--labels", type=Path, default=HERE / "relevance" / "labels.json")
    args = parser.parse_args()
    papers: dict[str, Paper] = {}
    for path in sorted(args.dumps.glob("*.txt")):
        for p in read_dump(path).papers:
            papers.setdefault(p.key, p)
    plist = list(papers.values())
    corpus = Corpus.build(plist)
    labels = json.loads(args.labels.read_text())["queries"]
    metrics = ("nDCG@10", "nDCG@20", "MAP", "P@10")
    totals = {name: {m: 0.0 for m in metrics} for name in ("digest", "bm25")}
    print(f"{len(plist)} papers, {len(labels)} queries\n")
    print(f"{'query':<24}" + "".join(f"{m:>10}{'(bm25)':>8}" for m in metrics))
    for q in labels:
        kws = [Keyword(k) if isinstance(k, str) else Keyword(k["term"], float(k.get("weight", 1)))
               for k in q["keywords"]]
        grades = {k: int(v) for k, v in q["judgments"].items()}
        runs = {"digest": [label_key(r.paper.title) for r in score_all(corpus, kws)],
                "bm25": bm25(plist, kws)}
        row = f"{q['id']:<24}"
        for m in metrics:
            vals = {}
            for name, ranking in runs.items():
                v = {"nDCG@10": ndcg(ranking, grades, 10), "nDCG@20": ndcg(ranking, grades, 20),
                     "MAP": average_precision(ranking, grades),
                     "P@10": precision(ranking, grades, 10)}[m]
                vals[name] = v
                totals[name][m] += v / len(labels)
            row += f"{vals['digest']:>10.3f}{vals['bm25']:>8.3f}"
        print(row)
    print(f"\n{'mean':<24}" + "".join(
        f"{totals['digest'][m]:>10.3f}{totals['bm25'][m]:>8.3f}" for m in metrics))
    print(f"{'ratio digest/bm25':<24}" + "".join(
        f"{totals['digest'][m] / totals['bm25'][m]:>10.2f}{'':>8}" for m in metrics))


if __name__ == "__main__":
    main()
