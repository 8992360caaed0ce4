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

import heapq
import math
import re
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from .models import Keyword, Match, Paper, Profile, Ranked, Vote

TITLE_BOOST = 3.0
K1 = 1.2
B = 0.75
COORDINATION = 0.3  # bonus per extra distinct keyword matched
PHRASE_WORDS = 1.0  # share of a phrase's weight its words earn when matched one by one
STOPWORDS = frozenset({
    "a", "an", "and", "as", "at", "by", "for", "from", "in", "into", "is", "of", "on", "or",
    "the", "to", "via", "with",
})

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
# A word and any words hyphenated onto it. Every part after the first word is optional, so
# a match never fails and is never retried from inside a word: linear in the text (a
# pattern that *requires* a hyphen rescans the rest of every long word from each letter).
_TOKEN = re.compile(r"[^\W_]+(?:['’][^\W_]+)*(?:[-‐‑][^\W_]+(?:['’][^\W_]+)*)*")
_HYPHEN = re.compile(r"[-‐‑]")
_HYPHENS = ("-", "‐", "‑")
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


_WORDS: dict[str, str] = {}  # raw word -> stem: most words of a batch repeat
_WORD_CACHE_MAX = 500_000


def _word_stem(word: str) -> str:
    found = _WORDS.get(word)
    if found is None:
        if len(_WORDS) >= _WORD_CACHE_MAX:
            _WORDS.clear()
        found = _WORDS[word] = stem(_normal(word))
    return found


def _compound_stem(token: str) -> str:
    return stem("".join(_normal(p) for p in _HYPHEN.split(token)))


def analyse(text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Text -> (stems in order, stems of hyphenated compounds joined up)."""
    get = _WORDS.get
    stems = tuple([get(w) or _word_stem(w) for w in _WORD.findall(text)])
    if not _has_hyphen(text):
        return stems, ()
    return stems, tuple(_compound_stem(m.group()) for m in _compounds(text))


def _has_hyphen(text: str) -> bool:
    return any(h in text for h in _HYPHENS)


def _compounds(text: str) -> Iterator[re.Match[str]]:
    """Hyphenated compounds (``pre-training``), in order."""
    return (m for m in _TOKEN.finditer(text) if _has_hyphen(m.group()))


def word_queries(keywords: Sequence[Keyword]) -> list[Query]:
    """The single words of phrases, so a paper matching some words of a phrase counts a little.

    A word shared by several phrases carries their summed weight; a word that is also a
    keyword on its own is left to that keyword.
    """
    singles = {q.seq for q in map(_query, keywords) if len(q.seq) == 1}
    best: dict[str, Query] = {}
    for kw in keywords:
        words = [w for w in dict.fromkeys(_query(kw).seq) if w not in STOPWORDS]
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


# A posting packs (paper index, title hits, abstract hits) into one int: index << 16 | t << 8 | a.
_CAP = 255


def _pack(i: int, t: int, a: int) -> int:
    return i << 16 | min(t, _CAP) << 8 | min(a, _CAP)


@dataclass(slots=True)
class Corpus:
    """A batch of papers analysed once and ranked for any number of subscribers.

    ``postings`` maps each stem to the packed (paper, title hits, abstract hits) of every
    paper containing it, so a one-word keyword is scored straight from its postings;
    phrases are checked against the stored stem sequences of the candidate papers.
    """

    papers: list[Paper]
    titles: list[tuple[tuple[str, ...], tuple[str, ...]]]
    abstracts: list[tuple[tuple[str, ...], tuple[str, ...]]]
    norms: list[float]  # BM25 length normalisation of each abstract
    postings: dict[str, array[int]]
    indexed: frozenset[str] | None = None  # None: every stem is in ``postings``
    _phrases: dict[tuple[tuple[str, ...], str | None], array[int]] = field(default_factory=dict)

    @classmethod
    def build(cls, papers: Iterable[Paper], only: Iterable[str] | None = None) -> Corpus:
        """Analyse every paper and index which papers contain which stems, how often.

        With ``only`` (see ``stems_of``) just those stems are indexed up front; any other
        stem a query asks for later is indexed on first use.
        """
        plist = list(papers)
        titles = [analyse(p.title) for p in plist]
        abstracts = [analyse(p.abstract) for p in plist]
        lengths = [len(a) for a, _ in abstracts]
        avg = sum(lengths) / len(lengths) if lengths else 0.0
        norms = [1.0 - B + B * (n / avg) if avg else 1.0 for n in lengths]
        postings: dict[str, array[int]] = {}
        wanted = None if only is None else frozenset(only)
        for i, ((t, tc), (a, ac)) in enumerate(zip(titles, abstracts, strict=True)):
            tcount = Counter(t)
            if tc:
                tcount.update(tc)
            acount = Counter(a)
            if ac:
                acount.update(ac)
            base = i << 16
            if wanted is not None:  # keep just the stems some keyword can ask for
                acount = Counter({s: acount[s] for s in wanted.intersection(acount)})
                tcount = Counter({s: tcount[s] for s in wanted.intersection(tcount)})
            for s, n in acount.items():
                bucket = postings.get(s)
                if bucket is None:
                    bucket = postings[s] = array("q")
                tn = tcount.get(s, 0)
                bucket.append(base | (tn if tn < _CAP else _CAP) << 8 | (n if n < _CAP else _CAP))
            for s, n in tcount.items():
                if s not in acount:
                    bucket = postings.get(s)
                    if bucket is None:
                        bucket = postings[s] = array("q")
                    bucket.append(base | (n if n < _CAP else _CAP) << 8)
        return cls(plist, titles, abstracts, norms, postings, wanted)

    def counts(self, query: Query, i: int) -> tuple[int, int]:
        """(title hits, abstract hits) of ``query`` in paper ``i``."""
        (t, tc), (a, ac) = self.titles[i], self.abstracts[i]
        return (_count(query.seq, query.joined, t, tc), _count(query.seq, query.joined, a, ac))

    def _postings(self, s: str) -> Sequence[int]:
        found = self.postings.get(s)
        if found is not None:
            return found
        if self.indexed is None or s in self.indexed:
            return ()
        found = array("q")  # a stem nobody asked for up front: index it now, once
        for i, ((t, tc), (a, ac)) in enumerate(zip(self.titles, self.abstracts, strict=True)):
            tn, an = t.count(s) + tc.count(s), a.count(s) + ac.count(s)
            if tn or an:
                found.append(_pack(i, tn, an))
        self.postings[s] = found
        return found

    def hits(self, query: Query) -> Sequence[int]:
        """Packed postings of every paper the query matches."""
        if len(query.seq) == 1:
            return self._postings(query.seq[0])
        if not query.seq:
            return ()
        key = (query.seq, query.joined)
        found = self._phrases.get(key)
        if found is None:
            sets = [{v >> 16 for v in self._postings(s)} for s in query.seq]
            candidates = set.intersection(*sets)
            if query.joined:
                candidates.update(v >> 16 for v in self._postings(query.joined))
            found = array("q")
            for i in sorted(candidates):
                t, a = self.counts(query, i)
                if t or a:
                    found.append(_pack(i, t, a))
            self._phrases[key] = found
        return found

    def idf(self, df: int) -> float:
        """BM25's smoothed inverse document frequency over this batch."""
        n = len(self.papers)
        return math.log(1.0 + (n - df + 0.5) / (df + 0.5))


def stems_of(profiles: Iterable[Profile]) -> set[str]:
    """Every stem the keywords and excludes of these profiles can look up."""
    found: set[str] = set()
    for p in profiles:
        for q in [*_queries(p.keywords), *map(_query, p.exclude)]:
            found.update(q.seq)
            if q.joined:
                found.add(q.joined)
    return found


def _saturate(tf: float) -> float:
    return tf * (K1 + 1.0) / (tf + K1)


def _queries(keywords: Sequence[Keyword]) -> list[Query]:
    return [*map(_query, keywords), *word_queries(keywords)]


def _explain(corpus: Corpus, i: int, queries: list[Query], idfs: dict[Query, float],
             score: float) -> Ranked:
    matches = []
    for q in queries:
        t, a = corpus.counts(q, i)
        if t or a:
            tf = TITLE_BOOST * min(t, _CAP) + min(a, _CAP) / corpus.norms[i]
            matches.append(Match(q.term, q.weight, t, a, q.weight * idfs[q] * _saturate(tf),
                                 q.via))
    matches.sort(key=lambda m: (-m.contribution, m.term.casefold()))
    return Ranked(corpus.papers[i], score, tuple(matches))


def score_all(corpus: Corpus, keywords: Sequence[Keyword], exclude: Sequence[Keyword] = (),
              *, min_score: float = 0.0, limit: int | None = None) -> list[Ranked]:
    """Matching, non-excluded papers with score >= min_score and explanations, best first.

    Scores come from the postings alone; explanations are worked out only for the
    ``limit`` papers returned.
    """
    excluded: set[int] = set()
    for kw in exclude:
        excluded.update(v >> 16 for v in corpus.hits(_query(kw)))
    queries = _queries(keywords)
    n_papers = len(corpus.papers)
    scores = [0.0] * n_papers
    whole = [0] * n_papers
    touched: set[int] = set()
    idfs: dict[Query, float] = {}
    norms = corpus.norms
    k1p1, k1, boost = K1 + 1.0, K1, TITLE_BOOST
    for q in queries:
        packed = corpus.hits(q)
        if not packed:
            continue
        idf = idfs[q] = corpus.idf(len(packed))
        w = q.weight * idf * k1p1
        is_whole = q.via is None
        for v in packed:
            i = v >> 16
            tf = boost * ((v >> 8) & _CAP) + (v & _CAP) / norms[i]
            scores[i] += w * tf / (tf + k1)
            if is_whole:
                whole[i] += 1
        touched.update(v >> 16 for v in packed)
    final = []
    papers = corpus.papers
    for i in touched - excluded:
        # Different keywords beat repeats: each extra whole keyword adds COORDINATION.
        total = scores[i] * (1.0 + COORDINATION * (whole[i] - 1))
        if total >= min_score and total > 0:
            final.append((total, papers[i].upvotes or 0, i))
    if limit is not None and len(final) > limit:
        kth = heapq.nlargest(limit, final)[-1][:2]  # keep everything tied with the last pick
        final = [f for f in final if f[:2] >= kth]
    final.sort(key=lambda f: (-f[0], -f[1], papers[f[2]].title.casefold(), papers[f[2]].key))
    top = final if limit is None else final[:limit]
    return [Ranked(r.paper, r.score, r.matches, n) for n, r in enumerate(
        (_explain(corpus, i, queries, idfs, round(total, 4)) for total, _, i in top), 1)]


def sort_ranked(items: Iterable[Ranked]) -> list[Ranked]:
    """Best first; ties by upvotes, then title, then key, so every run orders alike."""
    ordered = sorted(items, key=lambda r: (-r.score, -(r.paper.upvotes or 0),
                                            r.paper.title.casefold(), r.paper.key))
    return [Ranked(r.paper, r.score, r.matches, n) for n, r in enumerate(ordered, 1)]


def query_texts(profile: Profile) -> list[str]:
    """The texts of a profile the semantic signal embeds: keywords, interest, its clauses."""
    texts = [k.term for k in profile.keywords]
    if profile.interest:
        texts.append(profile.interest)
    return list(dict.fromkeys(texts))


def ranking(corpus: Corpus, profile: Profile, votes: Sequence[Vote] = (),
            vectors: Mapping[str, Any] | None = None) -> list[Ranked]:
    """Every paper worth showing the reader, best first (``digest rank`` prints these)."""
    return score_all(corpus, profile.keywords, profile.exclude)


def rank(corpus: Corpus, profile: Profile, votes: Sequence[Vote] = (),
         vectors: Mapping[str, Any] | None = None) -> tuple[list[Ranked], list[Paper]]:
    """A subscriber's picks (at most ``max_items``, score >= ``min_score``) and the rest.

    ``votes`` are the reader's 👍/👎 (they train the reader's classifier); ``vectors`` maps
    each of ``query_texts(profile)`` to its embedding when the semantic signal is on.
    """
    if not profile.keywords:  # no interests given: everything, most upvoted first
        chosen = sort_ranked(Ranked(p, 0.0, ()) for p in corpus.papers)[: profile.max_items]
    else:
        chosen = score_all(corpus, profile.keywords, profile.exclude,
                           min_score=profile.min_score, limit=profile.max_items)
    keys = {r.paper.key for r in chosen}
    rest = [p for p in corpus.papers if p.key not in keys]
    return chosen, rest


@lru_cache(maxsize=4096)
def _query(keyword: Keyword) -> Query:
    return Query.of(keyword)


@lru_cache(maxsize=8192)
def highlight_spans(text: str, keywords: tuple[Keyword, ...]) -> tuple[tuple[int, int], ...]:
    """Character spans in ``text`` where any keyword matches (merged, in order).

    Cached: the same abstract is highlighted in the Markdown, the HTML and the feed.
    """
    queries = [_query(k) for k in keywords]
    needed = {s for q in queries for s in q.seq} | {q.joined for q in queries if q.joined}
    at: dict[str, dict[int, tuple[int, int]]] = {}  # stem -> word index -> (start, end)
    get = _WORDS.get
    for index, m in enumerate(_WORD.finditer(text)):
        word = m.group()
        st = get(word) or _word_stem(word)
        if st in needed:
            at.setdefault(st, {})[index] = m.span()
    compounds: dict[str, list[tuple[int, int]]] = {}
    if _has_hyphen(text):
        for m in _compounds(text):
            compounds.setdefault(_compound_stem(m.group()), []).append(m.span())
    found: list[tuple[int, int]] = []
    for q in queries:
        if not q.seq:
            continue
        first, rest = at.get(q.seq[0], {}), [at.get(s, {}) for s in q.seq[1:]]
        for index, (start, end) in first.items():
            if all(index + j in later for j, later in enumerate(rest, 1)):
                found.append((start, rest[-1][index + len(rest)][1] if rest else end))
        whole = q.seq[0] if len(q.seq) == 1 else q.joined
        if whole:
            found.extend(compounds.get(whole, ()))
        if q.joined:
            found.extend(at.get(q.joined, {}).values())
    found.sort()
    merged: list[tuple[int, int]] = []
    for a, b in found:
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return tuple(merged)
