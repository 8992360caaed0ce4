"""Ranking new papers for a reader (pure: no I/O).

A reader is keywords (with weights), an optional interest sentence, excludes, and 👍/👎
votes. Four signals are summed as z-scores over the batch, with equal weights:

- **lexical**: BM25F over title and abstract (``K1``; the title weighted ``TITLE_WEIGHT``
  with its own length normalisation). Keywords match on Snowball stems at word
  boundaries; phrases match as phrases and hyphenated compounds either way
  ("pre-training" ~ "pretraining"); a keyword written with capitals (CLIP, ViT, GNN)
  matches only that acronym, case-sensitively. The single words of a phrase and the
  words of the interest sentence are low-weight extra terms; a paper matched only by a
  phrase's single words always ranks below every paper matching a keyword whole.
- **coordination**: log(1 + number of keywords matched whole).
- **self-trained** (``learn.py``): a linear classifier on tf-idf features, trained on the
  lexical top ``POSITIVES`` (fewer in a small batch) as positives and the rest of the batch
  as negatives, plus the reader's liked (positive) and disliked (negative) papers. (Votes
  also weigh each query term by (liked + 1) / (liked + disliked + 1) over the voted papers
  it matches.) It is the balanced centroid classifier, the limit of a strongly
  regularised linear SVM: an exact SVM ranked no better on the label set (MAP 0.802 against
  0.805 with an interest sentence) at about 80 times the cost per reader.
- **semantic** (when paper vectors are given): the cosines of each paper to every keyword
  (mean and max), to the interest sentence and to its clauses, as one z-scored signal.

The sum then trains the classifier once more, on its own top, and that second
classifier's z-score is added too. Papers matching an ``exclude`` keyword are dropped.
A paper is offered to the reader when it matches lexically, or when the classifier puts it
on the positive side and it beats a paper that matches a keyword whole. A paper matched
only by some words of phrases stays below every paper matching a keyword whole.
Ties break by upvotes, then title, then key.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from array import array
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import Stemmer

from . import learn
from .models import INTEREST, Keyword, Match, Paper, Profile, Ranked, Vote

K1 = 2.0
B_ABSTRACT = 0.75
B_TITLE = 0.5
TITLE_WEIGHT = 5.0
TITLE_WEIGHT_INTEREST = 3.0  # with an interest sentence in the query
INTEREST_WEIGHT = 0.3  # each word of the interest sentence, against a keyword's 1
PHRASE_WORDS = 0.6  # share of a phrase's weight each of its words earns alone
POSITIVES = 25  # pseudo-positives for self-training: the top of the ranking (at most)
POSITIVES_SHARE = 12  # ... and at most one paper in this many of the batch (at least 5)
VOTE_WEIGHT = 1.0  # a vote weighs as much as this many pseudo-labels in the classifier
SIMILAR_MIN = 0.2  # tf-idf cosine to a liked paper that earns "similar to papers you liked"

STOPWORDS = frozenset("""
a about above after again against all also am among an and any are as at be because been
before being below between both but by can could did do does doing down during each either
else etc even ever every few for from further had has have having he her here hers him his
how however i if in into is it its itself just least less like many may me might more most
much must my neither no nor not now of off often on once one only or other others our ours
out over own per rather same shall she should since so some such than that the their them
then there these they this those though through thus to too under until up upon us very
via was we were what when where whether which while who whom whose why will with within
without would yet you your yours
""".split())  # noqa: SIM905
# Words an interest sentence is made of that say nothing about the topic.
REQUEST_WORDS = frozenset("""
anything area areas care especially field focus follow following interest interested
interesting keen looking mainly mostly new paper papers particular particularly prefer
read reading research researcher show something studies study topic topics want wanted
work working
""".split())  # noqa: SIM905

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
# A word and any words hyphenated onto it. Every part after the first word is optional, so
# a match never fails and is never retried from inside a word: linear in the text (a
# pattern that *requires* a hyphen rescans the rest of every long word from each letter).
_TOKEN = re.compile(r"[^\W_]+(?:['’][^\W_]+)*(?:[-‐‑][^\W_]+(?:['’][^\W_]+)*)*")
_HYPHEN = re.compile(r"[-‐‑]")
_HYPHENS = ("-", "‐", "‑")
_APOSTROPHE = re.compile(r"['’]")
_URL = re.compile(r"(?:https?://|www\.)\S*", re.IGNORECASE)
_CLAUSE = re.compile(r"[:,;/()]|\s(?:or|and)\s", re.IGNORECASE)
_stemmer = Stemmer.Stemmer("english")
_stems: dict[str, str] = {}

Floats = npt.NDArray[np.float64]


def stem(word: str) -> str:
    """Snowball (Porter2) English stem of a lower-case word, memoised."""
    found = _stems.get(word)
    if found is None:
        if len(_stems) >= _WORD_CACHE_MAX:
            _stems.clear()
        found = _stems[word] = _stemmer.stemWord(word) if len(word) > 2 else word
    return found


def _normal(part: str) -> str:
    part = part.casefold()
    if part.endswith(("'s", "’s")):
        part = part[:-2]
    return _APOSTROPHE.sub("", part)


def _is_acronym(word: str) -> bool:
    """Written with two capitals or more, or a capital after a small letter: CLIP, GNN, ViT,
    LLaMA, GPT4, iPhone; not 3D or 5G (a digit and one capital is how "3d" is written)."""
    uppers = sum(c.isupper() for c in word)
    return uppers >= 2 or (uppers == 1 and any(
        c.isupper() and p.islower() for p, c in itertools.pairwise(word)))


def acronym_key(word: str) -> str | None:
    """The case-sensitive key of an acronym as written ("GNNs" -> "^GNN"), or None."""
    if word.endswith(("'s", "’s")):
        word = word[:-2]
    if word.endswith("s") and _is_acronym(word[:-1]):
        word = word[:-1]
    return "^" + word if _is_acronym(word) else None


_WORDS: dict[str, str] = {}  # raw word -> stem: most words of a batch repeat
_ACRONYMS: dict[str, str] = {}  # raw acronym-shaped word -> its key
_MARKS: dict[str, str] = {}  # raw word -> its acronym key, else its stem
_WORD_CACHE_MAX = 500_000


def _trim_caches() -> None:
    """Forget the word caches when they grow too big: only between texts, never inside one
    (a text's words must all be in all three caches while it is analysed)."""
    if len(_WORDS) >= _WORD_CACHE_MAX:
        _WORDS.clear()
        _ACRONYMS.clear()
        _MARKS.clear()


def _word_stem(word: str) -> str:
    found = _WORDS.get(word)
    if found is None:
        found = _WORDS[word] = stem(_normal(word))
        key = acronym_key(word)
        if key:
            _ACRONYMS[word] = key
        _MARKS[word] = key or found
    return found


_JOINED: dict[str, str] = {}


def _compound_stem(token: str) -> str:
    found = _JOINED.get(token)
    if found is None:
        if len(_JOINED) >= _WORD_CACHE_MAX:
            _JOINED.clear()
        found = _JOINED[token] = stem("".join(_normal(p) for p in _HYPHEN.split(token)))
    return found


# An analysed text: stems in order, stems of hyphenated compounds joined up, and (when the
# text has acronyms) the same sequence with each acronym replaced by its key.
Text = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...] | None]


def analyse(text: str) -> Text:
    """Text -> (stems, joined compounds, stems with acronym keys or None)."""
    _trim_caches()
    words: list[str] = _WORD.findall(text)
    found = list(map(_WORDS.get, words))
    stems: list[str] = ([s or _word_stem(w) for w, s in zip(words, found, strict=True)]
                        if None in found else cast("list[str]", found))
    marks = None
    if not _ACRONYMS.keys().isdisjoint(words):
        marks = tuple(map(_MARKS.__getitem__, words))
    return tuple(stems), _joined(text), marks


def _joined(text: str) -> tuple[str, ...]:
    """Stems of the hyphenated compounds of a text, joined up ("pre-training" -> pretrain)."""
    return tuple(_compound_stem(text[a:b]) for a, b in _compound_spans(text))


def _compound_spans(text: str) -> list[tuple[int, int]]:
    """Where the hyphenated compounds of a text are (``pre-training``), in order.

    Found from each hyphen outwards (``str.find``), so a text costs little beyond its
    hyphens; every compound is read once however many hyphens it has.
    """
    spans: list[tuple[int, int]] = []
    for h in _HYPHENS:
        i = text.find(h)
        while i != -1:
            start = i
            while start > 0 and (text[start - 1].isalnum() or (
                    text[start - 1] in "'’" and start > 1 and text[start - 2].isalnum())):
                start -= 1
            if start < i and text[start].isalnum():
                m = _TOKEN.match(text, start)
                if m and m.end() > i + 1:
                    spans.append(m.span())
                    i = text.find(h, m.end())
                    continue
            i = text.find(h, i + 1)
    spans.sort()
    found: list[tuple[int, int]] = []
    for a, b in spans:  # a compound with two kinds of hyphen is found once per kind
        if not found or a >= found[-1][1]:
            found.append((a, b))
    return found


@dataclass(frozen=True, slots=True)
class Query:
    """A keyword analysed for matching: slots are stems, or ``^KEY`` for an acronym."""

    term: str
    weight: float
    seq: tuple[str, ...]
    joined: str | None  # "pre training" also matches the single word "pretraining"
    via: str | None = None  # a phrase's single word: the phrase; an interest word: INTEREST

    @classmethod
    def of(cls, keyword: Keyword) -> Query:
        """Analyse one keyword."""
        words = _WORD.findall(keyword.term)
        seq = tuple(acronym_key(w) or stem(_normal(w)) for w in words)
        joined = None
        if len(seq) > 1 and not any(s.startswith("^") for s in seq):
            parts = [_normal(p) for p in re.split(r"[\s\-‐‑]+", keyword.term.strip()) if p]
            joined = stem("".join(parts))
        return cls(keyword.term, keyword.weight, seq, joined)

    @property
    def whole(self) -> bool:
        """A configured keyword, not one word of a phrase or of the interest sentence."""
        return self.via is None


def _slot_count(seq: tuple[str, ...], text: Text) -> int:
    stems, _, marks = text
    m = len(seq)
    if not any(s.startswith("^") for s in seq):
        first, start, hits = seq[0], 0, 0
        while True:
            try:
                i = stems.index(first, start)
            except ValueError:
                return hits
            if stems[i:i + m] == seq:
                hits += 1
            start = i + 1
    if marks is None:
        return 0
    hits = 0
    for i in range(len(stems) - m + 1):
        if all((marks if s.startswith("^") else stems)[i + j] == s for j, s in enumerate(seq)):
            hits += 1
    return hits


def _count(q: Query, text: Text) -> int:
    seq = q.seq
    if not seq:
        return 0
    stems, compounds, marks = text
    if len(seq) == 1:
        s = seq[0]
        if s.startswith("^"):
            return marks.count(s) if marks else 0
        return stems.count(s) + compounds.count(s)
    hits = stems.count(q.joined) if q.joined else 0
    return hits + _slot_count(seq, text)


# A posting packs (paper index, title hits, abstract hits) into one int: index << 16 | t << 8 | a.
_CAP = 255


def _pack(i: int, t: int, a: int) -> int:
    return i << 16 | min(t, _CAP) << 8 | min(a, _CAP)


def _bag(text: Text, wanted: frozenset[str] | None = None) -> Counter[str]:
    """How often each stem, compound and acronym key occurs (only ``wanted`` ones if given)."""
    stems, compounds, marks = text
    if wanted is not None:  # keep just the stems some keyword can ask for
        keep = wanted.__contains__
        bag = Counter([*filter(keep, stems), *filter(keep, compounds)])
        if marks is not None:
            acronyms = _wanted_acronyms(wanted)
            if acronyms:
                bag.update(filter(acronyms.__contains__, marks))
        return bag
    bag = Counter(stems)
    if compounds:
        bag.update(compounds)
    if marks is not None:
        bag.update({k: n for k, n in Counter(marks).items() if k[0] == "^"})
    return bag


@lru_cache(maxsize=64)
def _wanted_acronyms(wanted: frozenset[str]) -> frozenset[str]:
    return frozenset(s for s in wanted if s.startswith("^"))


@dataclass(slots=True)
class Corpus:
    """A batch of papers analysed once and ranked for any number of readers.

    ``postings`` maps each stem (and acronym key) to the packed (paper, title hits,
    abstract hits) of every paper containing it; phrases are checked against the stored
    sequences of the candidate papers. Per-query postings, the tf-idf features and the
    semantic vectors are shared by every reader of the batch.
    """

    papers: list[Paper]
    titles: list[Text]
    abstracts: list[Text]
    inv_title: Floats  # 1 / BM25 length normalisation of each title
    inv_abstract: Floats
    postings: dict[str, array[int]]
    indexed: frozenset[str] | None = None  # None: every stem is in ``postings``
    vectors: npt.NDArray[np.float32] | None = None  # row i: unit embedding of paper i
    _phrases: dict[tuple[tuple[str, ...], str | None], array[int]] = field(default_factory=dict)
    _features: learn.Features | None = None
    _upvotes: Floats | None = None
    _arrays: dict[tuple[tuple[str, ...], str | None], tuple[Any, Any, Any]] = field(
        default_factory=dict)

    @classmethod
    def build(cls, papers: Iterable[Paper], only: Iterable[str] | None = None,
              vectors: npt.NDArray[np.float32] | None = None) -> Corpus:
        """Analyse every paper and index which papers contain which stems, how often.

        With ``only`` (see ``stems_of``) just those stems are indexed up front; any other
        stem a query asks for later is indexed on first use. ``vectors`` (one unit row per
        paper, in order) turns the semantic signal on.
        """
        plist = list(papers)
        titles = [analyse(p.title) for p in plist]
        abstracts = [analyse(p.abstract) for p in plist]
        postings: dict[str, array[int]] = {}
        wanted = None if only is None else frozenset(only)
        for i, (t, a) in enumerate(zip(titles, abstracts, strict=True)):
            tcount, acount = _bag(t, wanted), _bag(a, wanted)
            base = i << 16
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
        if vectors is not None and len(vectors) != len(plist):
            raise ValueError(f"{len(vectors)} vectors for {len(plist)} papers")
        return cls(plist, titles, abstracts, _inverse_norms(titles, B_TITLE),
                   _inverse_norms(abstracts, B_ABSTRACT), postings, wanted, vectors)

    def counts(self, query: Query, i: int) -> tuple[int, int]:
        """(title hits, abstract hits) of ``query`` in paper ``i``."""
        return _count(query, self.titles[i]), _count(query, self.abstracts[i])

    def _postings(self, s: str) -> Sequence[int]:
        found = self.postings.get(s)
        if found is not None:
            return found
        if self.indexed is None or s in self.indexed:
            return ()
        found = array("q")  # a stem nobody asked for up front: index it now, once
        one = Query(s, 1.0, (s,), None)
        for i in range(len(self.papers)):
            tn, an = self.counts(one, i)
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

    def hit_arrays(self, query: Query) -> tuple[Any, Any, Any]:
        """(paper indexes, title hits, abstract hits) of the query as numpy arrays."""
        key = (query.seq, query.joined)
        found = self._arrays.get(key)
        if found is None:
            packed = self.hits(query)
            v = (np.frombuffer(packed, dtype=np.int64) if isinstance(packed, array) and len(packed)
                 else np.zeros(0, np.int64))
            found = self._arrays[key] = (v >> 16, ((v >> 8) & _CAP).astype(np.float64),
                                         (v & _CAP).astype(np.float64))
        return found

    def idf(self, df: int) -> float:
        """BM25's smoothed inverse document frequency over this batch."""
        n = len(self.papers)
        return math.log(1.0 + (n - df + 0.5) / (df + 0.5))

    @property
    def upvotes(self) -> Floats:
        """Every paper's upvotes (0 when unknown), for breaking ties."""
        if self._upvotes is None:
            self._upvotes = np.array([p.upvotes or 0 for p in self.papers], dtype=np.float64)
        return self._upvotes

    @property
    def features(self) -> learn.Features:
        """The batch's tf-idf rows (built on first use, then shared by every reader)."""
        if self._features is None:
            self._features = learn.Features.build(
                [(t[2] or t[0], a[2] or a[0])
                 for t, a in zip(self.titles, self.abstracts, strict=True)],
                frozenset(stem(w) for w in STOPWORDS))
        return self._features


def _inverse_norms(texts: Sequence[Text], b: float) -> Floats:
    lengths = np.array([len(t[0]) for t in texts], dtype=np.float64)
    avg = float(lengths.mean()) if len(lengths) else 0.0
    if not avg:
        return np.ones(len(texts))
    return 1.0 / (1.0 - b + b * lengths / avg)


@lru_cache(maxsize=4096)
def _query(keyword: Keyword) -> Query:
    return Query.of(keyword)


def keyword_problem(term: str) -> str | None:
    """Why a keyword would match nearly every paper, or None: every word of it is a stop
    word or a single letter ("the", "of the", "C++", which is read as the letter c)."""
    words = _WORD.findall(term)
    if words and all(w.casefold() in STOPWORDS or len(w) == 1 for w in words):
        return (f"keyword {term!r} is only stop words or single letters (symbols such as + and "
                "# are not part of words), so it would match nearly every paper; add the words "
                "around it (\"C++ compiler\") or leave it out")
    return None


def word_queries(keywords: Sequence[Keyword]) -> list[Query]:
    """The single words of phrases, so a paper matching some words of a phrase counts a little.

    A phrase's words are its space-separated parts: a hyphenated part ("image-text" of
    "image-text retrieval") stays one compound, and a keyword that is one compound
    ("pre-training") has no lone words. A word shared by several phrases carries their
    summed weight; a word that is also a keyword on its own is left to that keyword.
    """
    singles = {q.seq for q in map(_query, keywords) if len(q.seq) == 1}
    best: dict[tuple[tuple[str, ...], str | None], Query] = {}
    if PHRASE_WORDS <= 0:
        return []
    for kw in keywords:
        parts = [p.strip(".,;:!?()[]{}\"'") for p in kw.term.split()]
        parts = [p for p in parts if _WORD.search(p) and p.casefold() not in STOPWORDS]
        if len(parts) < 2:
            continue
        share = kw.weight * PHRASE_WORDS
        for part in parts:
            q = _query(Keyword(part))
            if not q.seq or q.seq in singles:
                continue
            key = (q.seq, q.joined)
            prior = best.get(key)
            best[key] = Query(prior.term if prior else part,
                              share + (prior.weight if prior else 0.0), q.seq, q.joined,
                              prior.via if prior else kw.term)
    return list(best.values())


def interest_queries(interest: str, keywords: Sequence[Keyword] = ()) -> list[Query]:
    """The interest sentence's topic words, each a low-weight one-word query."""
    if not interest:
        return []
    taken = {q.seq for q in map(_query, keywords) if len(q.seq) == 1}
    found: dict[str, Query] = {}
    for w in _WORD.findall(interest):
        low = w.casefold()
        if low in STOPWORDS or low in REQUEST_WORDS or len(low) < 2 or low.isdigit():
            continue
        slot = acronym_key(w) or stem(_normal(w))
        if slot not in found and (slot,) not in taken:
            found[slot] = Query(w, INTEREST_WEIGHT, (slot,), None, INTEREST)
    return list(found.values())


def clauses(interest: str) -> list[str]:
    """The interest sentence split at : , ; / ( ) "or" "and" (the semantic signal's parts)."""
    parts = [" ".join(p.split()) for p in _CLAUSE.split(interest)]
    return [p for p in parts if len(_WORD.findall(p)) >= 2]


def query_texts(profile: Profile) -> list[str]:
    """The texts of a profile the semantic signal embeds: keywords, interest, its clauses."""
    texts = [k.term for k in profile.keywords]
    if profile.interest:
        texts.append(profile.interest)
        texts.extend(clauses(profile.interest))
    return list(dict.fromkeys(texts))


def stems_of(profiles: Iterable[Profile]) -> set[str]:
    """Every stem the keywords, interest words and excludes of these profiles can look up."""
    found: set[str] = set()
    for p in profiles:
        for q in [*_queries(p), *map(_query, p.exclude)]:
            found.update(q.seq)
            if q.joined:
                found.add(q.joined)
    return found


def _queries(profile: Profile) -> list[Query]:
    kws = profile.keywords
    return [*map(_query, kws), *word_queries(kws), *interest_queries(profile.interest, kws)]


def _z(v: Floats) -> Floats:
    sd = float(v.std())
    return (v - float(v.mean())) / sd if sd > 1e-12 else np.zeros_like(v)


@dataclass(slots=True)
class _Lexical:
    score: Floats  # the lexical signal
    whole: Floats  # how many keywords matched whole
    matched: npt.NDArray[np.bool_]
    excluded: npt.NDArray[np.bool_]
    queries: list[Query]
    title_weight: float
    lone: npt.NDArray[np.bool_]  # matched only by some words of phrases
    hits: list[tuple[Query, Any, Any, Any, Any]]  # per query: papers, title/abstract hits, share


def _lexical(corpus: Corpus, profile: Profile, votes: Sequence[Vote] = ()) -> _Lexical:
    n = len(corpus.papers)
    queries = _queries(profile)
    if votes:  # a term that matched papers the reader disliked counts for less
        queries = [dataclasses.replace(q, weight=q.weight * _judged(q, votes)) for q in queries]
    tw = TITLE_WEIGHT_INTEREST if profile.interest else TITLE_WEIGHT
    whole_part, word_part, interest_part = np.zeros(n), np.zeros(n), np.zeros(n)
    whole = np.zeros(n)
    hits = []
    for q in queries:
        idx, t, a = corpus.hit_arrays(q)
        if not len(idx):
            continue
        idf = corpus.idf(len(idx))
        tf = tw * t * corpus.inv_title[idx] + a * corpus.inv_abstract[idx]
        contrib = q.weight * idf * tf * (K1 + 1.0) / (tf + K1)
        part = whole_part if q.whole else interest_part if q.via == INTEREST else word_part
        part += np.bincount(idx, weights=contrib, minlength=n)
        hits.append((q, idx, t, a, contrib))
        if q.whole:
            whole[idx] += 1.0
    lone = _lone(corpus, profile, whole_part, interest_part, word_part)
    if lone.any() and (whole_part > 0).any():
        # A phrase's lone words never lift a paper above one that matches a keyword whole.
        floor = float(whole_part[whole_part > 0].min())
        top = float(word_part[lone].max())
        if top >= floor:
            word_part[lone] *= 0.5 * floor / top
    score = whole_part + interest_part + word_part
    excluded = np.zeros(n, dtype=bool)
    for kw in profile.exclude:
        excluded[corpus.hit_arrays(_query(kw))[0]] = True
    return _Lexical(score, whole, score > 0, excluded, queries, tw, lone, hits)


def _lone(corpus: Corpus, profile: Profile, whole_part: Floats, interest_part: Floats,
          word_part: Floats) -> npt.NDArray[np.bool_]:
    """Papers matched by no keyword whole and by only some of each phrase's words."""
    lone: npt.NDArray[np.bool_] = (whole_part == 0) & (interest_part == 0) & (word_part > 0)
    if not lone.any():
        return lone
    for kw in profile.keywords:
        q = _query(kw)
        slots = [s for s, w in zip(q.seq, _WORD.findall(kw.term), strict=False)
                 if w.casefold() not in STOPWORDS]
        if len(slots) < 2:
            continue
        every = np.ones(len(corpus.papers), dtype=bool)
        for slot in slots:
            has = np.zeros(len(corpus.papers), dtype=bool)
            has[corpus.hit_arrays(Query(slot, 1.0, (slot,), None))[0]] = True
            every &= has
        lone &= ~every  # all of a phrase's words, apart: more than a lone word
    return lone


def _dense(corpus: Corpus, profile: Profile,
           vectors: Mapping[str, Any] | None) -> Floats | None:
    """The semantic signal: summed z-scores of cosines to keywords, interest, clauses."""
    if corpus.vectors is None or not vectors:
        return None
    docs = corpus.vectors
    parts: list[Floats] = []
    kw = [np.asarray(vectors[k.term], dtype=np.float32) for k in profile.keywords
          if k.term in vectors]
    if kw:
        sims = docs @ np.stack(kw).T
        parts += [_z(sims.mean(axis=1).astype(np.float64)),
                  _z(sims.max(axis=1).astype(np.float64))]
    if profile.interest and profile.interest in vectors:
        parts.append(_z((docs @ np.asarray(vectors[profile.interest])).astype(np.float64)))
        cl = [np.asarray(vectors[c], dtype=np.float32) for c in clauses(profile.interest)
              if c in vectors]
        if cl:
            parts.append(_z((docs @ np.stack(cl).T).mean(axis=1).astype(np.float64)))
    return _z(np.sum(parts, axis=0)) if parts else None


def _top(score: Floats, allowed: npt.NDArray[np.bool_], k: int) -> list[int]:
    idx = np.flatnonzero(allowed)
    if len(idx) > k:
        idx = idx[np.argsort(-score[idx], kind="stable")[:k]]
    return sorted(idx.tolist())


@dataclass(slots=True)
class Scored:
    """Every paper's final score for one reader, and why."""

    final: Floats
    lexical: _Lexical
    decision: Floats  # the final classifier's decision value (0 when it was not trained)
    offered: npt.NDArray[np.bool_]  # worth showing: matched, or on the classifier's good side
    votes: Any  # the votes' tf-idf rows (None without votes), for "similar to papers you liked"


def score(corpus: Corpus, profile: Profile, votes: Sequence[Vote] = (),
          vectors: Mapping[str, Any] | None = None) -> Scored:
    """All signals for one reader over the batch, fused."""
    lex = _lexical(corpus, profile, votes)
    n = len(corpus.papers)
    allowed = ~lex.excluded
    signals = [_z(lex.score), _z(np.log1p(lex.whole))]
    dense = _dense(corpus, profile, vectors)
    if dense is not None:
        signals.append(dense)
    decision = np.zeros(n)
    extra, labels = _vote_rows(corpus, votes)
    trained = False
    if n >= 4 and (lex.matched.any() or labels):
        first = np.sum([*signals, _z(_learned(corpus, lex.score, lex.matched & allowed,
                                              extra, labels))], axis=0)
        positives = lex.matched & allowed if dense is None else allowed
        decision = _learned(corpus, first, positives, extra, labels)
        signals_final = first + _z(decision)
        trained = bool(decision.any())
    else:
        signals_final = np.sum(signals, axis=0)
    whole = lex.whole > 0
    kept_whole = whole & allowed
    if lex.lone.any() and kept_whole.any():
        ceiling = float(signals_final[kept_whole].min())
        signals_final[lex.lone] = np.minimum(signals_final[lex.lone], ceiling - 1e-3)
    offered = allowed & lex.matched
    if trained:
        # Without a keyword match, a paper is offered only when the classifier wants it and
        # it beats at least one paper that matches a keyword whole.
        liked = allowed & (decision > 0)
        if whole.any():
            weakest = float(signals_final[kept_whole].min()) if kept_whole.any() else 0.0
            liked &= signals_final >= weakest
        offered |= liked
    if not trained and not lex.queries:
        offered = allowed
    return Scored(signals_final, lex, decision, offered, extra)


def _judged(q: Query, votes: Sequence[Vote]) -> float:
    """(liked + 1) / (liked + disliked + 1) over the voted papers the query matches."""
    liked = disliked = 0
    for v in votes:
        t, a = _vote_texts(v)
        if _count(q, t) or _count(q, a):
            if v.like:
                liked += 1
            else:
                disliked += 1
    return (liked + 1.0) / (liked + disliked + 1.0)


@lru_cache(maxsize=4096)
def _vote_texts(v: Vote) -> tuple[Text, Text]:
    return analyse(v.paper.title), analyse(v.paper.abstract)


def _vote_rows(corpus: Corpus, votes: Sequence[Vote]) -> tuple[Any, list[bool]]:
    if not votes:
        return None, []
    docs = [(t[2] or t[0], a[2] or a[0]) for t, a in map(_vote_texts, votes)]
    return corpus.features.transform(docs), [v.like for v in votes]


def _learned(corpus: Corpus, ranking: Floats, candidates: npt.NDArray[np.bool_],
             extra: Any, labels: list[bool]) -> Floats:
    """A classifier's decision values: the top of ``ranking`` (and likes) against the rest."""
    wanted = min(POSITIVES, max(5, len(ranking) // POSITIVES_SHARE))
    positives = _top(ranking, candidates & (ranking > ranking.min()), wanted)
    if not positives and not any(labels):
        return np.zeros(len(corpus.papers))
    return learn.centroid(corpus.features, positives, extra, labels,
                          VOTE_WEIGHT).astype(np.float64)


def _matches(lex: _Lexical, chosen: Sequence[int], n: int) -> dict[int, list[Match]]:
    """The keyword matches of the chosen papers, read off the postings (no re-counting)."""
    want = np.zeros(n, dtype=bool)
    want[list(chosen)] = True
    out: dict[int, list[Match]] = {i: [] for i in chosen}
    for q, idx, t, a, contrib in lex.hits:
        sel = np.flatnonzero(want[idx])
        if not len(sel):
            continue
        for i, th, ah, c in zip(idx[sel].tolist(), t[sel].tolist(), a[sel].tolist(),
                                contrib[sel].tolist(), strict=True):
            out[i].append(Match(q.term, q.weight, int(th), int(ah), c, q.via))
    for found in out.values():
        found.sort(key=lambda m: (-m.contribution, m.term.casefold()))
    return out


def _similar(corpus: Corpus, i: int, votes: Sequence[Vote], extra: Any) -> tuple[str, ...]:
    """Titles of the liked papers closest to paper ``i`` (tf-idf cosine >= SIMILAR_MIN)."""
    similar: list[tuple[float, str]] = []
    for k, v in enumerate(votes):
        if v.like:
            cos = learn.cosine_to(corpus.features, i, extra, k)
            if cos >= SIMILAR_MIN:
                similar.append((-cos, v.paper.title))
    return tuple(t for _, t in sorted(similar)[:2])


def ranking(corpus: Corpus, profile: Profile, votes: Sequence[Vote] = (),
            vectors: Mapping[str, Any] | None = None, *, limit: int | None = None,
            min_score: float = 0.0) -> list[Ranked]:
    """Every paper worth showing the reader, best first, with explanations.

    ``votes`` are the reader's 👍/👎 (they train the reader's classifier); ``vectors`` maps
    each of ``query_texts(profile)`` to its embedding when the semantic signal is on.
    ``min_score`` drops papers whose lexical score is below it (learned picks need a
    positive decision instead); explanations are worked out only for the papers returned.
    """
    if not corpus.papers:
        return []
    if not profile.keywords and not profile.interest and not votes:
        excluded: set[int] = set()
        for kw in profile.exclude:
            excluded.update(corpus.hit_arrays(_query(kw))[0].tolist())
        ordered = sort_ranked(Ranked(p, 0.0, ()) for i, p in enumerate(corpus.papers)
                              if i not in excluded)
        return ordered if limit is None else ordered[:limit]
    scored = score(corpus, profile, votes, vectors)
    lex = scored.lexical
    keep = scored.offered.copy()
    if min_score > 0:
        keep &= (lex.score >= min_score) | (~lex.matched & (scored.decision > 0))
    idx = np.flatnonzero(keep)
    upvotes = corpus.upvotes[idx]
    final = np.round(scored.final[idx], 4)
    if limit is not None and len(idx) > limit:  # keep everything tied with the last pick
        last = np.lexsort((-upvotes, -final))[limit - 1]
        f, u = final[last], upvotes[last]
        idx = idx[(final > f) | ((final == f) & (upvotes >= u))]
    chosen = idx.tolist()
    chosen.sort(key=lambda i: (-round(float(scored.final[i]), 4),
                               -(corpus.papers[i].upvotes or 0),
                               corpus.papers[i].title.casefold(), corpus.papers[i].key))
    if limit is not None:
        chosen = chosen[:limit]
    likes = scored.votes if any(v.like for v in votes) else None
    matches = _matches(lex, chosen, len(corpus.papers))
    return [Ranked(corpus.papers[i], round(float(scored.final[i]), 4), tuple(matches[i]), n,
                   _similar(corpus, i, votes, likes) if likes is not None else (),
                   not bool(lex.matched[i]) and bool(scored.decision[i] > 0))
            for n, i in enumerate(chosen, 1)]


def score_all(corpus: Corpus, keywords: Sequence[Keyword], exclude: Sequence[Keyword] = (),
              *, min_score: float = 0.0, limit: int | None = None,
              interest: str = "") -> list[Ranked]:
    """``ranking`` for bare keywords (and an interest sentence), with no votes or vectors."""
    profile = Profile("", keywords=tuple(keywords), exclude=tuple(exclude), interest=interest)
    return ranking(corpus, profile, limit=limit, min_score=min_score)


def sort_ranked(items: Iterable[Ranked]) -> list[Ranked]:
    """Best first; ties by upvotes, then title, then key, so every run orders alike."""
    ordered = sorted(items, key=lambda r: (-r.score, -(r.paper.upvotes or 0),
                                            r.paper.title.casefold(), r.paper.key))
    return [Ranked(r.paper, r.score, r.matches, n, r.similar, r.learned)
            for n, r in enumerate(ordered, 1)]


def rank(corpus: Corpus, profile: Profile, votes: Sequence[Vote] = (),
         vectors: Mapping[str, Any] | None = None) -> tuple[list[Ranked], list[Paper]]:
    """A reader's picks (at most ``max_items``, see ``ranking``) and the rest of the batch."""
    chosen = ranking(corpus, profile, votes, vectors, limit=profile.max_items,
                     min_score=profile.min_score)
    keys = {r.paper.key for r in chosen}
    rest = [p for p in corpus.papers if p.key not in keys]
    return chosen, rest


@lru_cache(maxsize=8192)
def highlight_spans(text: str, keywords: tuple[Keyword, ...]) -> tuple[tuple[int, int], ...]:
    """Character spans in ``text`` where any keyword matches (merged, in order), never in a URL.

    Cached: the same abstract is highlighted in the Markdown, the HTML and the feed.
    """
    _trim_caches()
    queries = [_query(k) for k in keywords]
    needed = {s for q in queries for s in q.seq} | {q.joined for q in queries if q.joined}
    urls = [m.span() for m in _URL.finditer(text)] if ("://" in text or "www." in text) else []
    at: dict[str, dict[int, tuple[int, int]]] = {}  # slot -> word index -> (start, end)
    get = _WORDS.get
    for index, m in enumerate(_WORD.finditer(text)):
        word = m.group()
        st = get(word) or _word_stem(word)
        if st in needed:
            at.setdefault(st, {})[index] = m.span()
        key = _ACRONYMS.get(word)
        if key and key in needed:
            at.setdefault(key, {})[index] = m.span()
    compounds: dict[str, list[tuple[int, int]]] = {}
    for a, b in _compound_spans(text):
        compounds.setdefault(_compound_stem(text[a:b]), []).append((a, b))
    found: list[tuple[int, int]] = []
    for q in queries:
        if not q.seq:
            continue
        first, rest = at.get(q.seq[0], {}), [at.get(s, {}) for s in q.seq[1:]]
        for index, (start, end) in first.items():
            if all(index + j in later for j, later in enumerate(rest, 1)):
                found.append((start, rest[-1][index + len(rest)][1] if rest else end))
        whole = q.seq[0] if len(q.seq) == 1 else q.joined
        if whole and not whole.startswith("^"):
            found.extend(compounds.get(whole, ()))
        if q.joined:
            found.extend(at.get(q.joined, {}).values())
    found.sort()
    merged: list[tuple[int, int]] = []
    u = 0  # URLs and spans are both in order: one sweep over each
    for a, b in found:
        while u < len(urls) and urls[u][1] <= a:
            u += 1
        if u < len(urls) and urls[u][0] < b:
            continue  # never inside a link: a highlighted URL would break it
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return tuple(merged)
