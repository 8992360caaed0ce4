"""Ranking new papers by a subscriber's keywords (pure: no I/O).

The score is BM25F-like: for each keyword, matches in the title count ``TITLE_BOOST``
times a match in the abstract, the abstract count is normalised by its length, the
total saturates (``K1``) so ten repeats of one word cannot outweigh two different
keywords, and an inverse document frequency over the batch makes a keyword that
matches almost every paper count for less than a rare one. Matching is on word
boundaries, case-insensitive, through a light stemmer (plurals, -ed, -ing), with
phrases matched as phrases and hyphenated compounds matching either way
("pre-training" ~ "pretraining"). Papers matching an ``exclude`` keyword are dropped.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .models import Keyword, Match, Paper, Profile, Ranked

TITLE_BOOST = 3.0
K1 = 1.2
B = 0.75
COORDINATION = 0.3  # bonus per extra distinct keyword matched
PHRASE_WORDS = 1.0  # share of a phrase's weight its words earn when matched one by one
STOPWORDS = frozenset({
    "a", "an", "and", "as", "at", "by", "for", "from", "in", "into", "is", "of", "on", "or",
    "the", "to", "via", "with",
})

_TOKEN = re.compile(r"[^\W_]+(?:[-‐‑'’][^\W_]+)*")
_HYPHEN = re.compile(r"[-‐‑]")
_APOSTROPHE = re.compile(r"['’]")
_stems: dict[str, str] = {}


def _stem_uncached(word: str) -> str:
    if len(word) <= 3 or not word.isalpha():
        return word
    if word.endswith("ies") and len(word) > 4:
        word = word[:-3] + "y"
    elif word.endswith("sses") or word.endswith(("ches", "shes", "xes", "zes")):
        word = word[:-2]
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    for suffix in ("ing", "ed"):
        base = word[: -len(suffix)]
        if word.endswith(suffix) and len(base) >= 3 and any(c in "aeiouy" for c in base):
            word = base
            if len(word) >= 3 and word[-1] == word[-2] and word[-1] not in "lsz":
                word = word[:-1]  # running -> run
            break
    if word.endswith("e") and len(word) > 4:
        word = word[:-1]  # curate / curated / curating -> curat
    return word


def stem(word: str) -> str:
    """Light English stemmer, memoised: plurals and -ed/-ing inflections."""
    found = _stems.get(word)
    if found is None:
        found = _stems[word] = _stem_uncached(word)
    return found


def _normal(part: str) -> str:
    part = part.casefold()
    if part.endswith(("'s", "’s")):
        part = part[:-2]
    return _APOSTROPHE.sub("", part)


def analyse(text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Text -> (stems in order, stems of hyphenated compounds joined up)."""
    stems: list[str] = []
    compounds: list[str] = []
    for token in _TOKEN.findall(text):
        parts = [_normal(p) for p in _HYPHEN.split(token)]
        stems.extend(stem(p) for p in parts if p)
        if len(parts) > 1:
            compounds.append(stem("".join(parts)))
    return tuple(stems), tuple(compounds)


def word_queries(keywords: Sequence[Keyword]) -> list[Query]:
    """The single words of phrases, each with a share of its phrase's weight (backoff).

    A word shared by several phrases is scored once, with its largest share; a word
    that is also a keyword on its own is left to that keyword.
    """
    singles = {q.seq for q in map(Query.of, keywords) if len(q.seq) == 1}
    best: dict[str, Query] = {}
    for kw in keywords:
        words = [w for w in dict.fromkeys(Query.of(kw).seq) if w not in STOPWORDS]
        if len(words) < 2 or PHRASE_WORDS <= 0:
            continue
        share = kw.weight * PHRASE_WORDS
        for w in words:
            if (w,) in singles:
                continue
            prior = best.get(w)
            best[w] = Query(w, share + (prior.weight if prior else 0.0), (w,), None,
                            prior.via if prior else kw.term)
    return list(best.values())


@dataclass(frozen=True, slots=True)
class Query:
    """A keyword analysed for matching."""

    term: str
    weight: float
    seq: tuple[str, ...]
    joined: str | None  # "pre training" also matches the single word "pretraining"
    via: str | None = None  # for a word of a phrase: the phrase

    @classmethod
    def of(cls, keyword: Keyword) -> Query:
        """Analyse one keyword."""
        seq, _ = analyse(keyword.term)
        parts = [_normal(p) for p in re.split(r"[\s\-‐‑]+", keyword.term.strip()) if p]
        joined = stem("".join(parts)) if len(seq) > 1 else None
        return cls(keyword.term, keyword.weight, seq, joined)


def _count(seq: tuple[str, ...], joined: str | None, stems: tuple[str, ...],
           compounds: tuple[str, ...]) -> int:
    if not seq:
        return 0
    if len(seq) == 1:
        return stems.count(seq[0]) + compounds.count(seq[0])
    hits = stems.count(joined) if joined else 0
    first, m, start = seq[0], len(seq), 0
    while True:
        try:
            i = stems.index(first, start)
        except ValueError:
            return hits
        if stems[i:i + m] == seq:
            hits += 1
        start = i + 1


@dataclass(slots=True)
class _Doc:
    paper: Paper
    title: tuple[str, ...]
    title_compounds: tuple[str, ...]
    abstract: tuple[str, ...]
    abstract_compounds: tuple[str, ...]


@dataclass(slots=True)
class Corpus:
    """A batch of papers analysed once and ranked for any number of subscribers."""

    docs: list[_Doc]
    postings: dict[str, list[int]]
    avg_abstract: float
    _hits: dict[tuple[tuple[str, ...], str | None], dict[int, tuple[int, int]]] = field(
        default_factory=dict)

    @classmethod
    def build(cls, papers: Iterable[Paper]) -> Corpus:
        """Analyse every paper and index which papers contain which stems."""
        docs: list[_Doc] = []
        postings: dict[str, list[int]] = {}
        total = 0
        for i, paper in enumerate(papers):
            title, tcomp = analyse(paper.title)
            abstract, acomp = analyse(paper.abstract)
            docs.append(_Doc(paper, title, tcomp, abstract, acomp))
            total += len(abstract)
            for s in {*title, *tcomp, *abstract, *acomp}:
                bucket = postings.get(s)
                if bucket is None:
                    postings[s] = [i]
                else:
                    bucket.append(i)
        return cls(docs, postings, total / len(docs) if docs else 0.0)

    def hits(self, query: Query) -> dict[int, tuple[int, int]]:
        """doc index -> (title hits, abstract hits) for every paper the query matches."""
        cache_key = (query.seq, query.joined)
        found = self._hits.get(cache_key)
        if found is not None:
            return found
        candidates: set[int] = set()
        if query.seq:
            lists = [self.postings.get(s, []) for s in query.seq]
            smallest = min(lists, key=len)
            candidates = set(smallest).intersection(*lists) if len(lists) > 1 else set(smallest)
        if query.joined:
            candidates.update(self.postings.get(query.joined, ()))
        found = {}
        for i in candidates:
            d = self.docs[i]
            t = _count(query.seq, query.joined, d.title, d.title_compounds)
            a = _count(query.seq, query.joined, d.abstract, d.abstract_compounds)
            if t or a:
                found[i] = (t, a)
        self._hits[cache_key] = found
        return found

    def idf(self, df: int) -> float:
        """BM25's smoothed inverse document frequency over this batch."""
        n = len(self.docs)
        return math.log(1.0 + (n - df + 0.5) / (df + 0.5))


def _saturate(tf: float) -> float:
    return tf * (K1 + 1.0) / (tf + K1)


def score_all(corpus: Corpus, keywords: Sequence[Keyword],
              exclude: Sequence[Keyword] = ()) -> list[Ranked]:
    """Every matching, non-excluded paper with its score and explanation, best first."""
    excluded: set[int] = set()
    for kw in exclude:
        excluded.update(corpus.hits(Query.of(kw)))
    per_doc: dict[int, list[Match]] = {}
    queries = [*map(Query.of, keywords), *word_queries(keywords)]
    for query in queries:
        hits = corpus.hits(query)
        if not hits:
            continue
        idf = corpus.idf(len(hits))
        for i, (t, a) in hits.items():
            if i in excluded:
                continue
            length = len(corpus.docs[i].abstract)
            norm = 1.0 - B + B * (length / corpus.avg_abstract if corpus.avg_abstract else 1.0)
            tf = TITLE_BOOST * t + a / norm
            contribution = query.weight * idf * _saturate(tf)
            per_doc.setdefault(i, []).append(
                Match(query.term, query.weight, t, a, contribution, query.via))
    ranked = []
    for i, matches in per_doc.items():
        distinct = sum(1 for m in matches if m.via is None)  # whole keywords only
        total = sum(m.contribution for m in matches) * (1.0 + COORDINATION * (distinct - 1))
        matches.sort(key=lambda m: (-m.contribution, m.term.casefold()))
        ranked.append(Ranked(corpus.docs[i].paper, round(total, 4), tuple(matches)))
    return sort_ranked(ranked)


def sort_ranked(items: Iterable[Ranked]) -> list[Ranked]:
    """Best first; ties by upvotes, then title, then key, so every run orders alike."""
    ordered = sorted(items, key=lambda r: (-r.score, -(r.paper.upvotes or 0),
                                            r.paper.title.casefold(), r.paper.key))
    return [Ranked(r.paper, r.score, r.matches, n) for n, r in enumerate(ordered, 1)]


def rank(corpus: Corpus, profile: Profile) -> tuple[list[Ranked], list[Paper]]:
    """A subscriber's picks (at most ``max_items``, score >= ``min_score``) and the rest."""
    if not profile.keywords:  # no interests given: everything, most upvoted first
        picks = sort_ranked(Ranked(d.paper, 0.0, ()) for d in corpus.docs)
    else:
        picks = [r for r in score_all(corpus, profile.keywords, profile.exclude)
                 if r.score >= profile.min_score and r.score > 0]
    chosen = picks[: profile.max_items]
    keys = {r.paper.key for r in chosen}
    rest = [d.paper for d in corpus.docs if d.paper.key not in keys]
    return chosen, rest


def highlight_spans(text: str, keywords: Sequence[Keyword]) -> list[tuple[int, int]]:
    """Character spans in ``text`` where any keyword matches (merged, in order)."""
    queries = [Query.of(k) for k in keywords]
    parts: list[tuple[int, int, str]] = []  # (start, end, stem) per word part
    compounds: list[tuple[int, int, str, int, int]] = []  # spans of hyphenated tokens
    for m in _TOKEN.finditer(text):
        start = m.start()
        first = len(parts)
        for piece in _HYPHEN.split(m.group()):
            norm = _normal(piece)
            if norm:
                parts.append((start, start + len(piece), stem(norm)))
            start += len(piece) + 1
        if len(parts) - first > 1:
            joined = stem("".join(_normal(p) for p in _HYPHEN.split(m.group())))
            compounds.append((m.start(), m.end(), joined, first, len(parts)))
    stems = [p[2] for p in parts]
    spans: list[tuple[int, int]] = []
    for q in queries:
        if not q.seq:
            continue
        n = len(q.seq)
        for i in range(len(stems) - n + 1):
            if tuple(stems[i:i + n]) == q.seq:
                spans.append((parts[i][0], parts[i + n - 1][1]))
        for c_start, c_end, joined, _, _ in compounds:
            if joined == (q.seq[0] if n == 1 else q.joined):
                spans.append((c_start, c_end))
        if q.joined:
            spans.extend((p[0], p[1]) for p in parts if p[2] == q.joined)
    spans.sort()
    merged: list[tuple[int, int]] = []
    for s, e in spans:
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(e, merged[-1][1]))
        else:
            merged.append((s, e))
    return merged
