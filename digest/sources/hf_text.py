"""Text copies of Hugging Face papers pages, in the three shapes seen so far.

* ``blank-separated``: header lines, then title / blank / abstract / blank ...
* ``with-metadata``: the same, each entry followed by ``  • N authors``, ``·`` and a
  date line (``May 14, 2024``, yearless ``Nov 4``, optionally an upvote count).
* ``compact``: no blank lines; two header lines, the first title glued to
  ``Subscribe``, then title and abstract lines alternating.

Entries pair lines by position; length and punctuation only break ties when a
stray line would otherwise shift every later pair.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date

from ..identity import content_hash, paper_key, strip_xml_illegal
from ..models import Paper, ParsedDump, ParseWarning

NAME = "hf-text"

_HEADER_LINES = {
    "new",
    "get trending papers in your email inbox!",
    "get trending papers in your email inbox once a day!",
    "subscribe",
    "daily papers",
    "trending papers",
    "byak and the research community",
}
_GLUED_PREFIX = "Subscribe"
_MONTHS = {
    name: i + 1
    for i, names in enumerate(
        [
            ("jan", "january"), ("feb", "february"), ("mar", "march"), ("apr", "april"),
            ("may",), ("jun", "june"), ("jul", "july"), ("aug", "august"),
            ("sep", "sept", "september"), ("oct", "october"), ("nov", "november"),
            ("dec", "december"),
        ]
    )
    for name in names
}
_DATE = re.compile(
    r"^(?P<month>[A-Za-z]{3,9})\.?\s+(?P<day>\d{1,2})(?:,\s*(?P<year>\d{4}))?"
    r"(?:\s+(?P<upvotes>\d{1,7}))?$"
)
_AUTHORS = re.compile(r"^[•·]\s*(?P<n>\d{1,6})\s+authors?$", re.I)
_SEPARATOR = {"·"}
_URL = re.compile(r"https?:\s?//[^\s<>\"]+")
_URL_TRAIL = ".,;:!?'\"}"
_URL_CLOSERS = {")": "(", "]": "["}
_URL_TRIM = _URL_TRAIL + "".join(_URL_CLOSERS)
_URL_IN_WORD = re.compile(r"https?://\S")
# A Markdown copy of a papers page (the hf-markdown parser's): a link to a paper in a
# heading, a reader service's header, or several links to papers.
_MARKDOWN_PAPER_LINK = re.compile(
    r"\]\(\s*<?https?://(?:www\.)?(?:huggingface\.co/papers/|arxiv\.org/(?:abs|pdf)/)\w")
_MARKDOWN_HEADER = ("url source:", "markdown content:")
# A line this long, or this long with several sentences, is an abstract, never a title.
_ABSTRACT_MIN_CHARS = 300
_SENTENCES_MIN_CHARS = 100
# The end of a sentence: a word (not an initial like "U.S.") then . ! or ? and a new sentence.
_SENTENCE_END = re.compile(r"[a-z0-9)]{2}[.!?](?:\s+[A-Z(\d]|$)")


@dataclass(slots=True)
class _Meta:
    authors: int | None = None
    date_raw: str | None = None
    published: date | None = None
    upvotes: int | None = None
    seen: bool = False
    kinds: set[str] = field(default_factory=set)


@dataclass(slots=True)
class _Draft:
    title: str
    line: int
    abstract: str = ""
    abstract_line: int = 0
    meta: _Meta = field(default_factory=_Meta)


_ODD_SPACE = re.compile(r"^\s|\s$|\s\s|[^\S ]")  # anything " ".join(split()) would change


def _clean(line: str) -> str:
    if line.isprintable() and "  " not in line and line[:1] != " " and line[-1:] != " ":
        return line  # the common case: no controls, no odd or doubled white space
    line = strip_xml_illegal(line)
    if _ODD_SPACE.search(line):
        line = " ".join(line.split())
    return line


_HEADER_MAX_CHARS = max(len(x) for x in _HEADER_LINES)


def _is_header(line: str) -> bool:
    # Case folding never shortens a string, so a longer line cannot be a header line.
    return len(line) <= _HEADER_MAX_CHARS and line.casefold() in _HEADER_LINES


def resolve_date(month: int, day: int, year: int | None, today: date) -> date | None:
    """A page date: explicit year as given; yearless -> the latest such day not after ``today``."""
    if year is not None:
        try:
            return date(year, month, day)
        except ValueError:
            return None
    for y in range(today.year, today.year - 8, -1):
        try:
            candidate = date(y, month, day)
        except ValueError:  # Feb 29 in a common year, Apr 31
            continue
        if candidate <= today:
            return candidate
    return None


def parse_date_line(line: str, today: date) -> tuple[date | None, int | None] | None:
    """``Sep 21, 2023 2`` -> (2023-09-21, 2); None when the line is not a date."""
    m = _DATE.match(line)
    if not m or m["month"].casefold() not in _MONTHS:
        return None
    month = _MONTHS[m["month"].casefold()]
    year = int(m["year"]) if m["year"] else None
    resolved = resolve_date(month, int(m["day"]), year, today)
    upvotes = int(m["upvotes"]) if m["upvotes"] else None
    return resolved, upvotes


def _trim_url(url: str) -> str:
    """Drop trailing punctuation and closing brackets that have no opening partner.

    Working back from the end, a closing bracket goes while the URL holds more of its
    kind than opening ones, so the first one kept is the (surplus + 1)-th of its kind from
    the end of the trailing run. String methods find it: the cost stays linear however
    many characters trail the URL.
    """
    base = len(url.rstrip(_URL_TRIM))
    tail = url[base:]  # only punctuation and closing brackets
    cut = base
    for closer, opener in _URL_CLOSERS.items():
        surplus = max(url.count(closer) - url.count(opener), 0)
        if tail.count(closer) > surplus:
            partnered = len(tail.rsplit(closer, surplus + 1)[0])  # index of that bracket
            cut = max(cut, base + partnered + 1)
    return url[:cut]


def extract_links(text: str) -> tuple[str, ...]:
    """URLs in an abstract, trailing punctuation and unbalanced brackets trimmed."""
    links: dict[str, None] = {}  # insertion-ordered; a dict keeps the look-up constant
    for raw in _URL.findall(text):
        url = _trim_url(raw.replace(" ", ""))
        if len(url) > len("https://"):
            links.setdefault(url)
    return tuple(links)


def _looks_like_abstract(text: str) -> bool:
    return len(text) >= _ABSTRACT_MIN_CHARS or (
        len(text) >= _SENTENCES_MIN_CHARS and len(_SENTENCE_END.findall(text)) >= 2)


def _glued(line: str) -> bool:
    return line.startswith(_GLUED_PREFIX) and len(line) > len(_GLUED_PREFIX) \
        and not line[len(_GLUED_PREFIX)].isspace()


def _rhythm(lines: list[str]) -> float:
    """Share of (title, abstract) pairs that look the part."""
    pairs = list(zip(lines[0::2], lines[1::2], strict=False))
    good = sum(1 for t, a in pairs if not _looks_like_abstract(t) and _looks_like_abstract(a))
    return good / len(pairs) if pairs else 0.0


def _is_markdown(lines: list[str]) -> bool:
    """Markdown with links to papers (or a reader service's header): never a text copy."""
    if any(x.casefold().startswith(_MARKDOWN_HEADER) for x in lines[:12]):
        return True
    linked = [x for x in lines if "](" in x and _MARKDOWN_PAPER_LINK.search(x)]
    return len(linked) >= 2 or any(x.startswith("#") for x in linked)


def sniff(text: str) -> float:
    """How sure we are that ``text`` is a text copy of a papers page."""
    body = [x for x in (_clean(x) for x in text.split("\n", 200)[:200]) if x]
    if _is_markdown(body):
        return 0.0
    headers = sum(1 for x in body[:12] if _is_header(x) or _glued(x))
    if headers >= 2 or any(_AUTHORS.match(x) for x in body[:40]):
        return 1.0
    if headers == 1:
        return 0.9 if _rhythm(body[1:]) >= 0.5 else 0.0
    return 0.8 if _rhythm(body) >= 0.8 else 0.0


class _Parser:
    def __init__(self, path: str, text: str, today: date) -> None:
        self.path = path
        self.today = today
        self.lines = [_clean(x) for x in text.split("\n")]
        self.warnings: list[ParseWarning] = []
        self.drafts: list[_Draft] = []
        self.page_date: date | None = None
        self.page_date_raw: str | None = None
        self.has_meta = False

    def warn(self, line: int, message: str) -> None:
        self.warnings.append(ParseWarning(self.path, line, message))

    def header(self) -> int:
        """Consume header lines; return the index of the first body line."""
        subscribed = False
        for i, line in enumerate(self.lines):
            if not line or _is_header(line):
                subscribed = subscribed or line.casefold() == "subscribe"
                continue
            if not subscribed and _glued(line) and not _is_header(line[len(_GLUED_PREFIX):]):
                self.lines[i] = line[len(_GLUED_PREFIX):]  # "SubscribeTitle": a title starts here
                return i
            parsed = parse_date_line(line, self.today) if self.page_date_raw is None else None
            if parsed is not None:
                self.page_date, self.page_date_raw = parsed[0], line
                continue
            if self.header_goes_on(i):  # e.g. site navigation copied along with the page
                self.warn(i + 1, f"unrecognised line {line[:60]!r} in the page header; skipped")
                continue
            return i
        return len(self.lines)

    def header_goes_on(self, i: int) -> bool:
        """Is there a page-header line shortly below line index ``i``?"""
        return any(x and (_is_header(x) or _glued(x)) for x in self.lines[i + 1:i + 12])

    def body(self, start: int) -> None:
        group: list[tuple[int, str]] = []
        owner: _Draft | None = None  # the entry that metadata lines describe
        for i in range(start, len(self.lines)):
            lineno, line = i + 1, self.lines[i]
            if not line:
                continue
            kind = self.meta_kind(line)
            if kind in ("date", "junk") and not group and (
                    owner is None or kind in owner.meta.kinds):
                kind = None  # a date closes a block: a date-like line after it is a title
            if kind is None:
                group.append((lineno, line))
                owner = None
                continue
            if group:
                before = len(self.drafts)
                self.pair(group)
                group = []
                owner = self.drafts[-1] if len(self.drafts) > before else None
            if owner is None:
                self.warn(lineno, f"unrecognised line {line[:60]!r}: metadata with no paper "
                                  "before it; skipped")
                continue
            self.apply_meta(owner, kind, line, lineno)
            if kind == "date":
                owner = None  # the block is complete
        if group:
            self.pair(group, at_end=True)

    def meta_kind(self, line: str) -> str | None:
        if not self.has_meta:  # only the with-metadata layout has metadata lines
            return None
        if line in _SEPARATOR:
            return "sep"
        if _AUTHORS.match(line):
            return "authors"
        if len(line) <= 24 and parse_date_line(line, self.today) is not None:
            return "date"
        if line.startswith(("•", "·")):
            return "junk"
        return None

    def apply_meta(self, draft: _Draft, kind: str, line: str, lineno: int) -> None:
        draft.meta.seen = True
        draft.meta.kinds.add(kind)
        if kind == "authors":
            m = _AUTHORS.match(line)
            assert m is not None
            draft.meta.authors = int(m["n"])
        elif kind == "date":
            parsed = parse_date_line(line, self.page_date or self.today)
            assert parsed is not None
            draft.meta.published, draft.meta.upvotes = parsed
            draft.meta.date_raw = line
            if draft.meta.published is None:
                self.warn(lineno, f"date {line!r} does not exist; kept as text")
        elif kind == "junk":
            self.warn(lineno, f"unrecognised line {line[:60]!r}: skipped")

    def pair(self, group: list[tuple[int, str]], at_end: bool = False) -> None:
        """Pair title and abstract lines by position, skipping lines that break the rhythm.

        In the with-metadata layout a title and abstract framed by metadata are taken as they
        are; elsewhere length and sentences break ties when a stray line would shift pairs.
        """
        if self.has_meta and len(group) == 2:
            self.drafts.append(_Draft(group[0][1], group[0][0], group[1][1], group[1][0]))
            return
        i, n = 0, len(group)
        while i < n:
            lineno, cur = group[i]
            if _looks_like_abstract(cur):
                self.warn(lineno, f"unrecognised line: text with no title before it "
                                  f"({cur[:50]!r}...); skipped")
                i += 1
            elif i + 1 >= n and at_end:
                self.warn(lineno, f"the last entry {cur[:60]!r} has no abstract: the file looks "
                                  "cut off here, so its title may be too; skipped (it is read "
                                  "again when a complete dump arrives)")
                i += 1
            elif i + 1 >= n:
                self.drafts.append(_Draft(cur, lineno))
                self.warn(lineno, "entry has a title but no abstract; kept without one")
                i += 1
            elif not _looks_like_abstract(group[i + 1][1]) and i + 2 < n \
                    and _looks_like_abstract(group[i + 2][1]):
                self.warn(lineno, f"unrecognised line {cur[:60]!r}: no abstract follows it; "
                                  "skipped")
                i += 1
            else:
                self.drafts.append(_Draft(cur, lineno, group[i + 1][1], group[i + 1][0]))
                i += 2

    def finish(self, shape: str) -> tuple[Paper, ...]:
        if shape == "with-metadata" and self.drafts and not self.drafts[-1].meta.seen:
            self.warn(self.drafts[-1].line, "the last entry is truncated: it has no author "
                                            "or date lines; kept without them")
        if self.drafts:
            last = self.drafts[-1]
            tail = last.abstract.rstrip()
            if tail and not self.text_ends_cleanly(tail) and not last.meta.seen:
                self.warn(last.abstract_line, "the last entry looks truncated: its abstract "
                                              "ends mid-sentence")
        papers: list[Paper] = []
        seen: dict[str, int] = {}
        for d in self.drafts:
            key = paper_key(d.title)
            if key in seen:
                self.warn(d.line, f"same paper as line {seen[key]}; kept once")
                continue
            seen[key] = d.line
            papers.append(Paper(
                key=key, title=d.title, abstract=d.abstract, authors=d.meta.authors,
                published=d.meta.published, date_raw=d.meta.date_raw, upvotes=d.meta.upvotes,
                links=extract_links(d.abstract), source=self.path, line=d.line,
            ))
        return tuple(papers)

    @staticmethod
    def text_ends_cleanly(text: str) -> bool:
        """Ends with closing punctuation or a URL (its last word holds ``http(s)://x``)."""
        if text[-1] in ".!?)]\"'”’":
            return True
        last_word = text.rsplit(None, 1)[-1]
        return _URL_IN_WORD.search(last_word) is not None


def parse(path: str, text: str, *, today: date) -> ParsedDump:
    """Parse one text dump; warnings carry file:line, nothing is dropped silently."""
    p = _Parser(path, text, today)
    start = p.header()
    body_lines = p.lines[start:]
    p.has_meta = any(x in _SEPARATOR or _AUTHORS.match(x) for x in body_lines if x)
    has_blank = any(not x for x in body_lines[:-1])
    shape = "with-metadata" if p.has_meta else "blank-separated" if has_blank else "compact"
    p.body(start)
    papers = p.finish(shape)
    return ParsedDump(
        path=path, sha256=content_hash(text), shape=shape, page_date=p.page_date,
        page_date_raw=p.page_date_raw, papers=papers, warnings=tuple(p.warnings),
    )
