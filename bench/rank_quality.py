"""Ranking quality: digest's ranking vs plain BM25 on graded relevance judgments.

    python bench/rank_quality.py [--dumps ../shared/dumps] [--labels bench/relevance/labels.json]
                                 [--no-semantic] [--per-query]

Every run ranks the same 318 papers for each labelled reader and reports MAP (whole
ranking; relevant papers not offered count as misses) and nDCG@10:

- ``bm25``: Okapi BM25 on the bag of the keywords' words (weights as term weights);
- ``keywords`` / ``+ interest``: digest's ranker with the keywords, then with the reader's
  interest sentence too; each again with the semantic signal when the extra is installed;
- ``feedback``: the reader judges the top 10 of the ``+ interest`` ranking (👍 when the
  labels grade it above 0, else 👎), digest re-ranks with those votes, and both rankings
  are measured on the papers not judged (judged papers are never shown again).

Nothing is tuned per query: every setting is a module constant of digest.rank.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

from digest.identity import normalise_title
from digest.models import Keyword, Paper, Profile, Vote
from digest.rank import Corpus, query_texts, ranking
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


def _keywords(q: dict[str, Any]) -> tuple[Keyword, ...]:
    return tuple(Keyword(k) if isinstance(k, str) else Keyword(k["term"], float(k.get("weight", 1)))
                 for k in q["keywords"])


def _semantic(plist: list[Paper], labels: list[dict[str, Any]]) -> tuple[Any, Any] | None:
    """(paper vectors, query text -> vector) from the semantic extra, or None without it."""
    from digest import embed

    if not embed.available():
        return None
    embedder = embed.load()
    cache = embed.VectorCache(embed.default_cache_path())
    start = time.perf_counter()
    docs, computed = embed.embed_texts(embedder, [embed.paper_text(p) for p in plist],
                                       cache=cache, progress=True)
    texts = sorted({t for q in labels for t in query_texts(
        Profile("q", keywords=_keywords(q), interest=q.get("interest", "")))})
    vecs, _ = embed.embed_texts(embedder, texts, cache=cache)
    cache.close()
    print(f"semantic: {embedder.id}, {computed} papers embedded now "
          f"({time.perf_counter() - start:.1f} s), the rest from the cache")
    return docs, dict(zip(texts, vecs, strict=True))


def _measure(ranked: list[str], grades: dict[str, int]) -> tuple[float, float]:
    return average_precision(ranked, grades), ndcg(ranked, grades, 10)


def main() -> None:
    """Print the comparison table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dumps", type=Path, default=HERE.parent.parent / "shared" / "dumps")
    parser.add_argument("--labels", type=Path, default=HERE / "relevance" / "labels.json")
    parser.add_argument("--no-semantic", action="store_true", help="Skip the semantic rows.")
    parser.add_argument("--per-query", action="store_true", help="Print every query's MAP.")
    args = parser.parse_args()
    papers: dict[str, Paper] = {}
    for path in sorted(args.dumps.glob("*.txt")):
        for p in read_dump(path).papers:
            papers.setdefault(p.key, p)
    plist = list(papers.values())
    labels = json.loads(args.labels.read_text())["queries"]
    semantic = None if args.no_semantic else _semantic(plist, labels)
    corpora = {False: Corpus.build(plist)}
    if semantic is not None:
        corpora[True] = Corpus.build(plist, vectors=semantic[0])
    print(f"{len(plist)} papers, {len(labels)} queries "
          f"({sum(1 for q in labels if q.get('interest'))} with an interest sentence)\n")
    rows: dict[str, list[tuple[float, float]]] = {}

    def add(name: str, value: tuple[float, float]) -> None:
        rows.setdefault(name, []).append(value)

    for q in labels:
        grades = {k: int(v) for k, v in q["judgments"].items()}
        kws = _keywords(q)
        add("bm25 (keywords)", _measure(bm25(plist, list(kws)), grades))
        for sem, corpus in corpora.items():
            tag = " + semantic" if sem else ""
            vectors = semantic[1] if sem and semantic else None
            for interest in ("", q.get("interest", "")):
                profile = Profile("q", keywords=kws, interest=interest)
                got = ranking(corpus, profile, vectors=vectors)
                name = ("keywords + interest" if interest else "keywords") + tag
                add(name, _measure([label_key(r.paper.title) for r in got], grades))
                if not interest:
                    continue
                judged = got[:10]
                votes = [Vote(r.paper, grades.get(label_key(r.paper.title), 0) > 0)
                         for r in judged]
                gone = {r.paper.key for r in judged}
                rest = [p for p in plist if p.key not in gone]
                keep = [i for i, p in enumerate(plist) if p.key not in gone]
                sub = Corpus.build(rest, vectors=None if corpus.vectors is None
                                   else corpus.vectors[keep])
                left = {k: g for k, g in grades.items()
                        if k not in {label_key(r.paper.title) for r in judged}}
                plain = [label_key(r.paper.title) for r in ranking(sub, profile,
                                                                   vectors=vectors)]
                fed = [label_key(r.paper.title) for r in ranking(sub, profile, votes,
                                                                 vectors=vectors)]
                add(f"unjudged, no feedback{tag}", _measure(plain, left))
                add(f"unjudged, 10 votes{tag}", _measure(fed, left))
    base = sum(m for m, _ in rows["bm25 (keywords)"]) / len(labels)
    print(f"{'run':<36}{'MAP':>8}{'nDCG@10':>9}{'MAP/bm25':>10}")
    for name, values in rows.items():
        mean_map = sum(m for m, _ in values) / len(values)
        mean_ndcg = sum(n for _, n in values) / len(values)
        print(f"{name:<36}{mean_map:>8.3f}{mean_ndcg:>9.3f}{mean_map / base:>10.2f}"
              + ("   " + " ".join(f"{m:.2f}" for m, _ in values) if args.per_query else ""))
    for tag in ("", " + semantic"):
        if f"unjudged, 10 votes{tag}" in rows:
            gain = (sum(m for m, _ in rows[f"unjudged, 10 votes{tag}"])
                    - sum(m for m, _ in rows[f"unjudged, no feedback{tag}"])) / len(labels)
            print(f"feedback on 10 papers{tag}: MAP on the rest {gain:+.3f}")
    if semantic is None and not args.no_semantic:
        print("(no semantic rows: the extra is not installed: pip install '.[semantic]')")


if __name__ == "__main__":
    main()
