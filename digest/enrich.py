"""Links and author names for papers read from text copies of papers pages.

A text copy of a Hugging Face papers page carries titles, abstracts and author counts, but
no URL, no arXiv id and no author names. Every paper in a digest must link somewhere, so
this stage looks the papers up:

1. a copy of a daily page asks the HF daily-papers listing of the page's date, once, and
   matches titles (``/api/daily_papers?date=YYYY-MM-DD``);
2. what is left is asked of the arXiv API by title (``ti:"..."``), one request per
   ``ARXIV_SPACING`` seconds, within a total time budget: when it is spent, the rest stays
   unresolved for this run (``pending``) and is asked again next run.

Titles match when their normalised forms are equal, or by a conservative fuzzy rule
(``same_title``) that would rather leave a paper unresolved than give it another paper's
link. An unresolved paper still links somewhere: the HF papers search for its title
(``Resolution.link``). Every failure (time-out, 5xx, 429, junk, a document too big) is a
reason on the papers it concerns; nothing is raised out of ``enrich``.

Only ``Client`` does I/O; answers are read by the source parsers (``sources.hf_json``,
``sources.feeds``), which clean every text and URL field, so nothing an API says reaches a
digest unchecked.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from difflib import SequenceMatcher
from types import TracebackType
from typing import Protocol

import httpx

from . import __version__
from .errors import InputError
from .identity import http_url, normalise_title, search_url
from .models import Paper, Resolution, Source
from .sources import decode, feeds, hf_json
from .sources.markup import clean

Clock = Callable[[], float]  # monotonic seconds (time.monotonic; a fake one in tests)
Sleep = Callable[[float], None]
Progress = Callable[[int, int, int], None]  # (asked, to ask, linked so far) of arXiv

HF_BASE = "https://huggingface.co"
ARXIV_BASE = "https://export.arxiv.org"
ARXIV_SPACING = 3.0  # seconds between arXiv API requests, as arXiv's terms of use ask
ARXIV_RESULTS = 3  # candidates asked per title
MAX_BYTES = 5_000_000  # a day's listing is well under 1 MB; anything over 5 MB is refused
MAX_WAIT = 60.0  # the longest Retry-After honoured within a run
MAX_DAYS = 3  # daily listings asked per call (a copy of one page has one day)
MAX_FAILURES = 2  # consecutive arXiv failures after which the rest waits for the next run
FUZZY_MIN = 0.95  # similarity of two whole titles (fillers dropped) to be one paper
_TYPO_MIN = 0.8  # similarity of two differing words to be one word misspelt
_MIN_WORDS = 4  # titles shorter than this (fillers dropped) match only exactly
_MAX_TITLE = 400  # characters of a title compared (bounds the quadratic matcher)
_QUERY_WORDS = 30  # words of a title sent to arXiv
_FILLERS = frozenset({"a", "an", "the", "and"})  # "&" normalises away; "and" may be missing
HF_PAPER = "https://huggingface.co/papers/"
BUDGET_SPENT = "not yet: the time budget was spent"
USER_AGENT = f"digest/{__version__} (papers-digest)"


class Cache(Protocol):
    """Where resolutions are kept between runs (the store, later)."""

    def get(self, keys: Sequence[str]) -> dict[str, Resolution]: ...

    def put(self, resolutions: Sequence[Resolution]) -> None: ...


class MemoryCache:
    """A ``Cache`` in a dict (tests, ``preview``)."""

    def __init__(self, resolutions: Iterable[Resolution] = ()) -> None:
        self.data: dict[str, Resolution] = {r.key: r for r in resolutions}

    def get(self, keys: Sequence[str]) -> dict[str, Resolution]:
        return {k: self.data[k] for k in keys if k in self.data}

    def put(self, resolutions: Sequence[Resolution]) -> None:
        self.data.update((r.key, r) for r in resolutions)


# ---------------------------------------------------------------------------- matching


def _words(title: str) -> list[str]:
    return [w for w in normalise_title(title)[:_MAX_TITLE].split() if w not in _FILLERS]


def _has_digit(word: str) -> bool:
    return any(c.isdigit() for c in word)


def _typo(a: str, b: str) -> bool:
    """Two words that are one word spelt two ways (modeling/modelling, color/colour).

    Never a word and its extension (supervised/unsupervised, with/without,
    model/models): those are different words, and often different papers.
    """
    if min(len(a), len(b)) < 4 or abs(len(a) - len(b)) > 2 or a in b or b in a:
        return False
    return SequenceMatcher(None, a, b, autojunk=False).ratio() >= _TYPO_MIN


def _unshared(words: list[str], other: list[str]) -> list[str]:
    """The words of ``words`` that ``other`` lacks (as a multiset), in their order."""
    spare = Counter(words) - Counter(other)
    out: list[str] = []
    for word in words:
        if spare[word] > 0:
            spare[word] -= 1
            out.append(word)
    return out


def same_title(a: str, b: str) -> bool:
    """Whether two titles name the same paper: equal once normalised, or nearly so.

    The fuzzy rule is deliberately narrow. Both titles need ``_MIN_WORDS`` words; words
    with digits must agree exactly (GPT-4 is not GPT-5); at most two words may differ,
    each pair a misspelling (``_typo``), and the whole titles must be ``FUZZY_MIN``
    similar in order. A plain token-set ratio is not used: it scores a title that is a
    subset of another ("Video Diffusion" in "Video Diffusion with Anchors") as 1.0.
    """
    na, nb = normalise_title(a)[:_MAX_TITLE], normalise_title(b)[:_MAX_TITLE]
    if not na or not nb:
        return False
    if na == nb:
        return True
    if na.replace(" ", "") == nb.replace(" ", ""):  # Pre-training / Pretraining, 3-D / 3D
        return max(len(na.split()), len(nb.split())) >= _MIN_WORDS - 1
    wa, wb = _words(a), _words(b)
    if min(len(wa), len(wb)) < _MIN_WORDS:
        return False
    if sorted(w for w in wa if _has_digit(w)) != sorted(w for w in wb if _has_digit(w)):
        return False
    only_a, only_b = _unshared(wa, wb), _unshared(wb, wa)
    if len(only_a) != len(only_b) or len(only_a) > 2:
        return False
    if not all(_typo(x, y) for x, y in zip(only_a, only_b, strict=True)):
        return False
    whole = SequenceMatcher(None, " ".join(wa), " ".join(wb), autojunk=False)
    return whole.real_quick_ratio() >= FUZZY_MIN and whole.ratio() >= FUZZY_MIN


def match_titles(wanted: Mapping[str, str], candidates: Sequence[Paper]) -> dict[str, Paper]:
    """Which candidate each wanted paper (key -> title) is, where that is certain.

    Exact matches first. A title shared by two different candidates matches neither; a
    fuzzy match counts only when it is the wanted paper's only one and the candidate's
    only one, and the candidate was not matched exactly by another paper.
    """
    by_title: dict[str, list[Paper]] = {}
    for paper in candidates:
        by_title.setdefault(normalise_title(paper.title)[:_MAX_TITLE], []).append(paper)
    unique: dict[str, Paper] = {}
    for norm, papers in by_title.items():
        if norm and len({p.arxiv_id or p.url or id(p) for p in papers}) == 1:
            unique[norm] = papers[0]
    found: dict[str, Paper] = {}
    taken: set[int] = set()
    for key, title in wanted.items():
        hit = unique.get(normalise_title(title)[:_MAX_TITLE])
        if hit is not None and id(hit) not in taken:
            found[key] = hit
            taken.add(id(hit))
    free = [p for p in unique.values() if id(p) not in taken]
    guesses: dict[str, Paper] = {}
    claims: Counter[int] = Counter()
    for key, title in wanted.items():
        if key in found:
            continue
        hits = [p for p in free if same_title(title, p.title)]
        if len(hits) == 1:
            guesses[key] = hits[0]
            claims[id(hits[0])] += 1
    found.update((k, p) for k, p in guesses.items() if claims[id(p)] == 1)
    return found


# ---------------------------------------------------------------------------- HTTP


@dataclass(frozen=True, slots=True)
class Lookup:
    """One API answer: the papers it listed, or why there are none to trust.

    ``permanent``: asking again will not help (the API refused the query itself).
    ``retry_after``: the server asked to wait this many seconds (a 429).
    """

    papers: tuple[Paper, ...] = ()
    error: str = ""
    permanent: bool = False
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return not self.error


class Lookups(Protocol):
    """What ``enrich`` asks of the network (``Client``)."""

    def daily(self, day: date, timeout: float) -> Lookup: ...

    def arxiv_title(self, title: str, timeout: float) -> Lookup: ...


def arxiv_query(title: str) -> str:
    """``ti:"words of the title"``: a phrase search with the punctuation arXiv's query
    syntax would trip over (quotes, colons, hyphens, parentheses) taken out."""
    return 'ti:"' + " ".join(normalise_title(title).split()[:_QUERY_WORDS]) + '"'


class _TooBig(Exception):
    pass


class _TooSlow(Exception):
    pass


class Client:
    """The HF daily-papers and arXiv APIs over httpx: one try per question, a time-out
    per request, a User-Agent naming digest, at most ``max_bytes`` read. Answers that are
    no listing (errors, junk, a login page) come back as ``Lookup.error``, never raised.
    Base URLs are injectable (tests point them at a loopback server)."""

    def __init__(self, *, hf_base: str = HF_BASE, arxiv_base: str = ARXIV_BASE,
                 timeout: float = 20.0, user_agent: str = USER_AGENT,
                 max_bytes: int = MAX_BYTES) -> None:
        self.hf_base = hf_base.rstrip("/")
        self.arxiv_base = arxiv_base.rstrip("/")
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._http = httpx.Client(timeout=timeout, headers={"User-Agent": user_agent},
                                  follow_redirects=True, max_redirects=3)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _get(self, url: str, params: dict[str, str], timeout: float) -> tuple[Lookup, bytes]:
        """GET ``url``: the body of a 200, else a Lookup naming the failure."""
        timeout = max(0.1, min(timeout, self.timeout))
        deadline = time.monotonic() + timeout  # the whole download, not one read
        try:
            with self._http.stream("GET", url, params=params, timeout=timeout) as response:
                if response.status_code != 200:
                    return self._refusal(response), b""
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise _TooBig
                    if time.monotonic() > deadline:
                        raise _TooSlow
                    chunks.append(chunk)
                return Lookup(), b"".join(chunks)
        except _TooBig:
            return Lookup(error=f"the answer is over {self.max_bytes} bytes; refused"), b""
        except _TooSlow:
            return Lookup(error="the answer took too long to arrive"), b""
        except httpx.TimeoutException:
            return Lookup(error="no answer in time"), b""
        except httpx.HTTPError as exc:
            return Lookup(error=f"{type(exc).__name__}: {clean(str(exc))[:200]}"), b""

    @staticmethod
    def _refusal(response: httpx.Response) -> Lookup:
        reason = f"HTTP {response.status_code} {clean(response.reason_phrase)[:60]}".strip()
        if response.status_code in (429, 503):
            after = response.headers.get("Retry-After", "").strip()
            wait = float(after) if after.isdigit() and len(after) < 7 else None
            return Lookup(error=reason, retry_after=wait)
        # The question itself was refused: asking again will not help. (401/403 may be a
        # proxy or a block that lifts: those are asked again.)
        return Lookup(error=reason, permanent=response.status_code in (400, 404, 410, 422))

    def daily(self, day: date, timeout: float) -> Lookup:
        """The HF daily-papers listing of ``day``."""
        label = f"hf-daily:{day.isoformat()}"
        answer, body = self._get(f"{self.hf_base}/api/daily_papers",
                                 {"date": day.isoformat()}, timeout)
        if not answer.ok:
            return answer
        try:
            text = decode(label, body)
            if hf_json.sniff(text) == 0.0:
                return Lookup(error="the answer is not a daily-papers listing")
            parsed = hf_json.parse(label, text, today=day)
        except InputError as exc:
            return Lookup(error=f"unreadable answer: {exc}")
        except Exception as exc:  # a hostile document must not end the run
            return Lookup(error=f"unreadable answer ({type(exc).__name__})")
        return Lookup(papers=parsed.papers)

    def arxiv_title(self, title: str, timeout: float) -> Lookup:
        """The arXiv API's first ``ARXIV_RESULTS`` papers for a title phrase search."""
        label = "arxiv-title"
        answer, body = self._get(f"{self.arxiv_base}/api/query",
                                 {"search_query": arxiv_query(title),
                                  "max_results": str(ARXIV_RESULTS)}, timeout)
        if not answer.ok:
            return answer
        try:
            text = decode(label, body)
            if feeds.sniff(text) == 0.0 or "<feed" not in text[:4000]:
                return Lookup(error="the answer is not an arXiv API feed")
            parsed = feeds.parse(label, text, today=date.min)
        except InputError as exc:
            refused = "arxiv.org/api/errors" in body.decode("utf-8", "replace")
            return Lookup(error=f"unreadable answer: {exc}", permanent=refused)
        except Exception as exc:  # a hostile document must not end the run
            return Lookup(error=f"unreadable answer ({type(exc).__name__})")
        return Lookup(papers=parsed.papers)


# ---------------------------------------------------------------------------- enrich


def _resolved(key: str, title: str, paper: Paper, source: Source) -> Resolution:
    arxiv = paper.arxiv_id
    if source == "hf-daily":
        url = f"{HF_PAPER}{arxiv}" if arxiv else paper.url
    else:
        url = f"https://arxiv.org/abs/{arxiv}" if arxiv else paper.url
    return Resolution(key=key, title=title, arxiv_id=arxiv, url=http_url(url),
                      author_names=paper.author_names, source=source)


def _take(new: dict[str, Resolution], notes: dict[str, list[str]], key: str,
          found: Resolution) -> bool:
    """Keep a match that gives the paper a link; one without (no arXiv id, no page) is
    no better than none."""
    if found.url is None:
        notes[key].append(f"found ({found.source}), but with no link")
        return False
    new[key] = found
    return True


def needs_lookup(paper: Paper) -> bool:
    """A paper with neither a page nor an arXiv id."""
    return not paper.url and not paper.arxiv_id


def enrich(papers: Sequence[Paper], page_date: date | Mapping[str, date] | None,
           cache: Cache, client: Lookups, budget_s: float, clock: Clock = time.monotonic, *,
           sleep: Sleep = time.sleep, arxiv_after: float | None = None,
           on_arxiv: Callable[[float], None] | None = None,
           progress: Progress | None = None) -> dict[str, Resolution]:
    """A resolution for every paper without a page or an arXiv id, keyed by paper key.

    Final cached resolutions are reused without a request; new ones (pending included)
    are put in the cache. ``page_date`` is the daily page the papers were copied from,
    one for all or one per paper key (None, or a paper not in the mapping: not from a
    daily page, so only arXiv is asked); at most ``MAX_DAYS`` listings are asked, the
    days with the most papers first. Requests stop when ``budget_s`` seconds on
    ``clock`` have passed since the call; arXiv is asked at most once per
    ``ARXIV_SPACING`` seconds of it, and not before ``arxiv_after`` (another part of the
    process asked it last then); ``on_arxiv(t)`` hears when each arXiv request went.
    ``progress(asked, total, linked)`` hears each arXiv answer. Never raises for
    anything the network does.
    """
    start = clock()
    titles: dict[str, str] = {}
    for paper in papers:
        if needs_lookup(paper) and paper.key not in titles:
            titles[paper.key] = paper.title
    if not titles:
        return {}
    cached = cache.get(list(titles))
    done = {k: r for k, r in cached.items() if r.final and k in titles}
    todo = {k: t for k, t in titles.items() if k not in done}
    new: dict[str, Resolution] = {}
    notes: dict[str, list[str]] = {k: [] for k in todo}  # why each is still unresolved
    pending: set[str] = set()  # a lookup of it could not finish this run

    def left() -> float:
        return budget_s - (clock() - start)

    days: dict[date, dict[str, str]] = {}
    for key, title in todo.items():
        day = page_date if isinstance(page_date, date) else \
            page_date.get(key) if page_date is not None else None
        if day is not None:
            days.setdefault(day, {})[key] = title
    failed: set[str] = set()  # keys whose own lookup failed (an error, not the budget)
    listed: set[str] = set()  # keys whose day's listing answered
    for n, (day, group) in enumerate(sorted(days.items(), key=lambda d: (-len(d[1]), d[0]))):
        if n >= MAX_DAYS or left() <= 0:  # not asked of HF yet: the next pass does
            pending.update(group)
            for key in group:
                notes[key].append(BUDGET_SPENT if left() <= 0 else
                                  f"not yet: at most {MAX_DAYS} daily listings per run")
            continue
        answer = client.daily(day, left())
        if answer.ok:
            listed.update(group)
            for key, paper in match_titles(group, answer.papers).items():
                _take(new, notes, key, _resolved(key, group[key], paper, "hf-daily"))
            for key in group:
                notes[key].append(f"not in the HF listing of {day}")
        else:
            if not answer.permanent:
                pending.update(group)
                failed.update(group)
            for key in group:
                notes[key].append(f"HF daily papers: {answer.error}")

    rest = [k for k in todo if k not in new]
    pace = _Pace(clock() if arxiv_after is None else max(clock(), arxiv_after), on_arxiv,
                 progress, failed)
    _ask_arxiv(rest, todo, client, new, notes, pending, left, clock, sleep, pace)

    for key in todo:
        if key not in new:
            new[key] = Resolution(key=key, title=todo[key], pending=key in pending,
                                  reason="; ".join(notes[key]) or "not found",
                                  failed=key in failed, listed=key in listed)
    cache.put(list(new.values()))
    return {**done, **new}


@dataclass(slots=True)
class _Pace:
    """When arXiv may be asked next, who hears that it was, and who hears progress."""

    next_at: float
    on_arxiv: Callable[[float], None] | None
    progress: Progress | None
    failed: set[str]  # filled with the keys whose arXiv lookup failed


def _ask_arxiv(keys: list[str], titles: Mapping[str, str], client: Lookups,
               new: dict[str, Resolution], notes: dict[str, list[str]], pending: set[str],
               left: Callable[[], float], clock: Clock, sleep: Sleep, pace: _Pace) -> None:
    """Ask arXiv for each of ``keys`` in turn, spaced, until the budget or arXiv says stop."""
    next_at = pace.next_at  # when the next arXiv request may go
    asked = linked = 0
    failures = 0
    retried: set[str] = set()
    queue = list(keys)
    stopped = BUDGET_SPENT
    while queue:
        key = queue[0]
        wait = max(0.0, next_at - clock())
        if left() - wait <= 0:
            break
        if wait:
            sleep(wait)
        next_at = clock() + ARXIV_SPACING
        if pace.on_arxiv is not None:
            pace.on_arxiv(clock())
        answer = client.arxiv_title(titles[key], left())
        if answer.retry_after is not None and key not in retried:
            delay = max(answer.retry_after, ARXIV_SPACING)
            if answer.retry_after <= MAX_WAIT and left() - delay > 0:
                retried.add(key)  # asked to wait: wait, then ask again once
                next_at = clock() + delay
                continue
        queue.pop(0)
        asked += 1
        if not answer.ok:
            notes[key].append(f"arXiv API: {answer.error}")
            if answer.permanent:
                continue
            pending.add(key)
            pace.failed.add(key)
            failures += 1
            if answer.retry_after is not None or failures >= MAX_FAILURES:
                stopped = "not yet: the arXiv API is busy or failing"
                break  # the rest waits for the next run
            continue
        failures = 0
        match = match_titles({key: titles[key]}, answer.papers).get(key)
        if match is not None and _take(new, notes, key,
                                       _resolved(key, titles[key], match, "arxiv")):
            linked += 1
        elif match is None:
            notes[key].append("not found by title on the arXiv API")
        if pace.progress is not None:
            pace.progress(asked, len(keys), linked)
    for key in queue:
        pending.add(key)
        notes[key].append(stopped)


__all__ = [
    "ARXIV_SPACING", "MAX_DAYS", "Cache", "Client", "Lookup", "Lookups", "MemoryCache",
    "Resolution", "arxiv_query", "enrich", "match_titles", "needs_lookup", "same_title",
    "search_url",
]
