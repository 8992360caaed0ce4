"""Markdown copies of Hugging Face papers pages (reader services, "copy as Markdown" tools).

Two layouts are read:

* a listing: each paper is a heading whose link goes to ``huggingface.co/papers/<id>`` (or
  ``arxiv.org/abs/<id>``); the lines up to the next such heading describe it: an upvote
  count, ``N authors``, a date, the abstract (text paragraphs, or a link to the paper whose
  text is the abstract), thumbnails, avatars and ``Submitted by`` lines (skipped);
* a paper page, whose own address (the reader's ``URL Source:`` or a front-matter ``url:``)
  names one paper: the ``#`` heading is the title, ``Published on`` the date, the lines
  after ``Authors:`` the names and the ``Abstract`` section the abstract.

A listing without such headings may still list papers as links (``- [Title](url)``). Any
other line is page furniture; lines inside an entry that fit nothing are reported with
their line number. A Markdown copy with no paper links at all is an error, never a guess.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import date
from urllib.parse import parse_qs, urlsplit

from ..errors import InputError
from ..identity import content_hash
from ..models import Paper, ParsedDump, ParseWarning
from .hf_text import extract_links, parse_date_line
from .markup import arxiv_id_in, clean, make_paper

NAME = "hf-markdown"

_SNIFF_LINES = 1000
_PAPER_URL = re.compile(r"<?https?://(?:www\.)?(?:huggingface\.co/papers/|arxiv\.org/(?:abs|pdf)/)",
                        re.I)
_PAPER_LINK = re.compile(r"\]\(\s*" + _PAPER_URL.pattern, re.I)
# Inline Markdown. Link text holds no unescaped bracket and starts at an unescaped one, so
# no two matching attempts scan the same text: matching stays linear.
_IMAGE = re.compile(r'!\[[^\[\]\n]*\]\([^()\s]*(?:\s+"[^"\n]*")?\)')
_LINK = re.compile(r'(?<!\\)\[((?:[^\[\]\\]|\\.)*)\]\(([^()\s]*)(?:\s+"[^"\n]*")?\)')
_TASK_BOX = re.compile(r"(?<!\\)\[[ xX]\](?!\()")
_STRONG = re.compile(r"(?<!\\)(?:\*\*|__)")
_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~ ])")
_MARKERS = re.compile(r"^(?:(?:[*+\-]|\d{1,9}[.)]|>)[ \t]+)+")
_BULLETS = re.compile(r"^[\s*\-•·]+")
_BLOCK_START = re.compile(r"#{1,6}(?:\s|$)|(?:[*+\-]|\d{1,9}[.)])\s|>|\|")
_AUTHORS = re.compile(r"(\d{1,6})\s+authors?", re.I)
_VOTES = re.compile(r"(?:upvotes?\s*)?(\d{1,7}|-)(?:\s*upvotes?)?", re.I)
_DATE_PREFIX = re.compile(r"^(?:[·•]\s*)?(?:published\s+on\s+)?", re.I)
_CHROME = re.compile(r"[·•\-+=_*#|]*|\+\d+|arxiv:\S+|\d+ (?:repl(?:y|ies)|comments?)", re.I)
_CHROME_TEXT = {
    "new", "subscribe", "copy markdown", "reply", "daily", "weekly", "monthly", "upvote",
    "daily papers", "trending papers", "papers", "authors", "load more", "previous", "next",
    "get trending papers in your email inbox!",
    "get trending papers in your email inbox once a day!",
}
_END_SECTIONS = ("community", "models citing", "datasets citing", "spaces citing",
                 "collections including")
_READER_KEYS = ("title:", "url source:", "published time:", "description:", "warning:",
                "markdown content:", "number of pages:")
_MAX_JOINED = 60  # a link left open joins at most this many lines
_ABSTRACT_MIN_CHARS = 80
_NO_STRUCTURE = ("a Markdown copy of a papers page without paper links (no heading or list "
                 "item links to huggingface.co/papers/<id> or arxiv.org/abs/<id>); save the "
                 "page as text (select all, copy) or HTML instead")


@dataclass(slots=True)
class _Unit:
    """One logical Markdown line (continuation lines joined), rendered to plain text."""

    line: int
    level: int  # heading level; 0 for anything else
    plain: str  # the text with images dropped, links reduced to their text
    outside: str  # the text outside any link
    links: list[tuple[str, str]]  # (text, url)


@dataclass(slots=True)
class _Draft:
    title: str
    arxiv_id: str
    url: str
    line: int
    level: int = 0
    abstract: list[str] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)
    authors: int | None = None
    names: list[str] = field(default_factory=list)
    published: date | None = None
    upvotes: int | None = None
    votes_seen: bool = False
    links: list[str] = field(default_factory=list)


def _unescape(text: str) -> str:
    return " ".join(_ESCAPE.sub(r"\1", _STRONG.sub("", text)).split())


def _render(text: str, line: int, level: int) -> _Unit:
    """Images dropped, links reduced to their text (kept aside with their targets)."""
    text = _TASK_BOX.sub(" ", _IMAGE.sub(" ", text))
    plain: list[str] = []
    outside: list[str] = []
    links: list[tuple[str, str]] = []
    pos = 0
    for m in _LINK.finditer(text):
        outside.append(text[pos:m.start()])
        plain += [text[pos:m.start()], " ", m[1], " "]
        links.append((_unescape(m[1]), m[2].strip("<>")))
        pos = m.end()
    outside.append(text[pos:])
    plain.append(text[pos:])
    return _Unit(line, level, _unescape(_MARKERS.sub("", "".join(plain).strip())),
                 _unescape("".join(outside)), links)


def _heading(line: str) -> tuple[int, str]:
    """(level, content) of an ATX heading line; (0, line) for any other line."""
    level = len(line) - len(line.lstrip("#"))
    if not 1 <= level <= 6 or (len(line) > level and not line[level].isspace()):
        return 0, line
    content = line[level:].strip()
    closed = content.rstrip("#")
    if closed != content and (not closed or closed[-1].isspace()):
        content = closed.rstrip()
    return level, content


def _bracket_depth(line: str) -> int:
    return (line.count("[") - line.count("\\[")) - (line.count("]") - line.count("\\]"))


def _logical_lines(lines: list[str], start: int) -> Iterator[_Unit | None]:
    """Units from line index ``start`` on; None for a blank line (a paragraph break).

    A line ending in a backslash, or leaving a link's bracket open, continues on the next
    line (never past a blank line or into a heading).
    """
    buf: list[str] = []
    first = depth = 0
    going_on = False
    for i in range(start, len(lines)):
        line = lines[i].strip()
        joins = going_on and bool(line) and not line.startswith("#") and len(buf) < _MAX_JOINED
        if buf and not joins:
            yield _unit(" ".join(buf), first)
            buf = []
        if not line:
            going_on = False
            yield None
            continue
        if not buf:
            first, depth = i + 1, 0
        going_on = line.endswith("\\")
        line = line.rstrip("\\")
        depth += _bracket_depth(line)
        buf.append(line)
        going_on = going_on or depth > 0
    if buf:
        yield _unit(" ".join(buf), first)


def _unit(text: str, line: int) -> _Unit:
    level, content = _heading(text)
    return _render(content, line, level)


def _paper_link(unit: _Unit) -> tuple[str, str, str] | None:
    """(title, arXiv id, page URL) of the first link to a paper that has text."""
    for text, url in unit.links:
        if not _PAPER_URL.match(url) or _junk_title(text):
            continue
        arxiv = arxiv_id_in(url)
        if arxiv:
            hf = "huggingface.co/papers/" in url.lower()
            return text, arxiv, (f"https://huggingface.co/papers/{arxiv}" if hf
                                 else f"https://arxiv.org/abs/{arxiv}")
    return None


def _junk_title(text: str) -> bool:
    """Link text that is page furniture (an image, a count, ``Submitted by``), not a title."""
    bare = _BULLETS.sub("", text)
    return not bare or bool(_CHROME.fullmatch(bare) or _AUTHORS.fullmatch(bare)
                            or _VOTES.fullmatch(bare)) or "submitted by" in bare.casefold()


def _reader_header(lines: list[str]) -> tuple[int, dict[str, str]]:
    """The body's first line index and the header fields (reader header or front matter)."""
    fields: dict[str, str] = {}
    if lines and lines[0].strip() == "---":
        for i in range(1, min(len(lines), 60)):
            if lines[i].strip() == "---":
                return i + 1, fields
            key, _, value = lines[i].partition(":")
            fields[key.strip().casefold()] = value.strip()
        return 0, {}
    for i, line in enumerate(lines[:30]):
        key = line.strip().casefold()
        if key.startswith("markdown content:"):
            return i + 1, fields
        if key.startswith(_READER_KEYS):
            name, _, value = line.partition(":")
            fields[name.strip().casefold()] = value.strip()
    return 0, fields


def _document_url(fields: dict[str, str]) -> str:
    return fields.get("url source") or fields.get("url") or ""


def sniff(text: str) -> float:
    """Markdown with links to papers in headings or list items, or a reader's copy of one."""
    if text.lstrip()[:1] in ("<", "{"):
        return 0.0
    lines = text.split("\n", _SNIFF_LINES)[:_SNIFF_LINES]
    linked = [x.lstrip() for x in lines if "](" in x and _PAPER_LINK.search(x)]
    start, fields = _reader_header(lines)
    url = _document_url(fields).lower()
    from_papers = "huggingface.co/papers" in url or "arxiv.org/" in url
    if any(x.startswith("#") for x in linked):
        return 1.0 if fields else 0.9
    if fields and arxiv_id_in(url):
        return 1.0
    if len(linked) >= 2:
        return 0.7
    return 0.9 if from_papers and (start or fields.get("title")) else 0.0


def _looks_like_prose(text: str) -> bool:
    return len(text) >= _ABSTRACT_MIN_CHARS or (
        text[-1:] in ".!?" and len(text.split()) >= 4)


def _kind(unit: _Unit) -> str:
    """What a unit is: authors, votes, date, submitted, chrome, links or text."""
    plain = unit.plain
    bare = _BULLETS.sub("", plain)
    if not plain or _CHROME.fullmatch(plain) or plain.casefold() in _CHROME_TEXT:
        return "chrome"
    if _AUTHORS.fullmatch(bare):
        return "authors"
    if _VOTES.fullmatch(bare):
        return "votes"
    if len(unit.outside) <= 40 and _date_text(unit.outside) is not None:
        return "date"
    if "submitted by" in plain.casefold():
        return "submitted"
    if unit.links and not _BULLETS.sub("", unit.outside):
        return "links"
    return "text"


def _date_text(text: str) -> str | None:
    """``· Nov 4`` / ``Published on Oct 3, 2024`` -> the date part; None for anything else."""
    rest = _DATE_PREFIX.sub("", text.strip()).strip()
    if rest and parse_date_line(rest, date(2000, 1, 1)) is not None:
        return rest
    return None


class _Reader:
    def __init__(self, path: str, text: str, today: date) -> None:
        self.path = path
        self.today = today
        lines = text.split("\n")
        self.start, self.fields = _reader_header(lines)
        self.units = list(_logical_lines(lines, self.start))
        self.warnings: list[ParseWarning] = []
        self.drafts: list[_Draft] = []
        self.votes_by_id: dict[str, int | None] = {}
        self.page_date: date | None = None
        self.page_date_raw: str | None = None
        self.paragraph: list[str] = []  # the text paragraph being read, and its first line
        self.paragraph_line = 0

    def warn(self, line: int, message: str) -> None:
        self.warnings.append(ParseWarning(self.path, line, message))

    def resolve(self, raw: str, line: int) -> date | None:
        parsed = parse_date_line(raw, self.page_date or self.today)
        if parsed is None or parsed[0] is None:
            self.warn(line, f"date {raw!r} does not exist; skipped")
            return None
        return parsed[0]

    def votes(self, unit: _Unit) -> tuple[str | None, int | None]:
        """(paper id the count names, if any; the count, None for ``-``)."""
        m = _VOTES.fullmatch(_BULLETS.sub("", unit.plain))
        count = int(m[1]) if m and m[1] != "-" else None
        for _, url in unit.links:
            arxiv = arxiv_id_in(url, *_next_targets(url))
            if arxiv:
                return arxiv, count
        return None, count

    # -- listing ---------------------------------------------------------------------------

    def listing(self, anchors_in_headings: bool) -> None:
        """Entries start at headings (or list items) linking to a paper."""
        draft: _Draft | None = None
        after_submitted = False
        for unit in self.units:
            if unit is None:
                self.end_paragraph(draft)
                continue
            anchor = _anchor(unit, anchors_in_headings)
            if anchor is not None or (draft is not None and 0 < unit.level <= draft.level):
                self.end_paragraph(draft)  # a heading of its own closes the entry
                draft = _Draft(*anchor, unit.line, unit.level) if anchor else None
                self.drafts += [draft] if draft else []
                continue
            kind = _kind(unit)
            if kind == "text" and after_submitted and len(unit.plain) <= 60:
                kind = "chrome"  # the submitter's name, on a line of its own
            after_submitted = (after_submitted and kind == "chrome") or (
                kind == "submitted" and unit.plain.casefold() == "submitted by")
            if kind == "text" and draft is not None and not unit.level:
                self.paragraph_line = self.paragraph_line if self.paragraph else unit.line
                self.paragraph.append(unit.plain)
                continue
            self.end_paragraph(draft)
            self.listing_meta(draft, unit, kind)

    def end_paragraph(self, draft: _Draft | None) -> None:
        """A finished text paragraph is the abstract (or part of it), or reported."""
        text, line = " ".join(self.paragraph), self.paragraph_line
        self.paragraph = []
        if draft is None or not text:
            return
        if _looks_like_prose(text):
            draft.abstract.append(text)
        else:
            self.warn(line, f"unrecognised line {text[:60]!r} in the entry for "
                            f"{draft.title[:40]!r}; skipped")

    def listing_meta(self, draft: _Draft | None, unit: _Unit, kind: str) -> None:
        """A metadata line: before the first entry only the page date counts."""
        if kind == "votes":
            arxiv, count = self.votes(unit)
            if arxiv is not None:
                self.votes_by_id.setdefault(arxiv, count)
            elif draft is not None and not draft.votes_seen:
                draft.upvotes, draft.votes_seen = count, True
            return
        if draft is None:
            if kind == "date" and self.page_date_raw is None:
                raw = _date_text(unit.outside)
                assert raw is not None
                self.page_date, self.page_date_raw = self.resolve(raw, unit.line), raw
            return
        if kind == "authors" and draft.authors is None:
            m = _AUTHORS.fullmatch(_BULLETS.sub("", unit.plain))
            assert m is not None
            draft.authors = int(m[1])
        elif kind == "date" and draft.published is None:
            raw = _date_text(unit.outside)
            assert raw is not None
            draft.published = self.resolve(raw, unit.line)
        elif kind == "links":
            self.entry_links(draft, unit)
        elif kind in ("authors", "date"):
            self.warn(unit.line, f"second {kind} line {unit.plain[:60]!r} for "
                                 f"{draft.title[:40]!r}; skipped")

    def entry_links(self, draft: _Draft, unit: _Unit) -> None:
        """A line of links: the abstract (a link to the paper itself), or code/project links."""
        for text, url in unit.links:
            if arxiv_id_in(url) == draft.arxiv_id and _PAPER_URL.match(url):
                if text != draft.title and _looks_like_prose(text):
                    draft.abstract.append(text)
            elif _is_outside_link(url):
                draft.links.append(url)

    # -- paper page ------------------------------------------------------------------------

    def paper_page(self, arxiv: str) -> None:
        """One paper: title heading, ``Published on``, ``Authors:``, the Abstract section."""
        url = f"https://huggingface.co/papers/{arxiv}"
        at = next((i for i, u in enumerate(self.units) if u is not None and u.level == 1), None)
        if at is None:
            title = self.fields.get("title", "").removeprefix("Paper page - ")
            self.drafts.append(_Draft(_unescape(title), arxiv, url, self.start or 1))
            return
        heading = self.units[at]
        assert heading is not None
        draft = _Draft(heading.plain, arxiv, url, heading.line, 1)
        self.drafts.append(draft)
        section = "meta"
        paragraph: list[str] = []
        for unit in self.units[at + 1:]:
            kind = _kind(unit) if unit is not None and not unit.level else "break"
            if kind != "text" or section != "abstract" or _generated(unit):
                self.page_paragraph(draft, section, paragraph)
            if unit is not None and unit.level:
                if section == "abstract" or unit.plain.casefold() != "abstract":
                    return  # Community, models citing the paper, ...: the paper is done
                section = "abstract"
            elif unit is not None:
                section = self.page_unit(draft, section, unit, kind, paragraph)

    def page_unit(self, draft: _Draft, section: str, unit: _Unit, kind: str,
                  paragraph: list[str]) -> str:
        """Read one unit of a paper page; returns the section that follows it."""
        if unit.plain.casefold().rstrip(":") == "authors" and section == "meta":
            return "authors"
        if section == "authors" and kind in ("text", "links") and len(unit.plain) <= 80:
            draft.names.append(unit.plain.strip(" ,"))
            return section
        if section == "authors" and kind != "chrome":
            section = "meta"  # the names are over
        if kind == "votes" and not draft.votes_seen:
            draft.upvotes, draft.votes_seen = self.votes(unit)[1], True
        elif kind == "date" and draft.published is None and section == "meta":
            raw = _date_text(unit.outside)
            assert raw is not None
            draft.published = self.resolve(raw, unit.line)
        elif section == "abstract" and _generated(unit):
            draft.summary, draft.abstract = draft.abstract, []
        elif section == "abstract" and kind == "links":
            draft.links += [u for _, u in unit.links if _is_outside_link(u)]
        elif kind == "text" and section == "abstract":
            paragraph.append(unit.plain)
        elif kind == "text":
            self.warn(unit.line, f"unrecognised line {unit.plain[:60]!r} on the paper page; "
                                 "skipped")
        return section

    def page_paragraph(self, draft: _Draft, section: str, paragraph: list[str]) -> None:
        """A finished paragraph of the Abstract section joins the abstract."""
        if paragraph and section == "abstract":
            draft.abstract.append(" ".join(paragraph))
        paragraph.clear()

    # -- the result ------------------------------------------------------------------------

    def papers(self) -> tuple[Paper, ...]:
        papers: list[Paper] = []
        seen: dict[str, int] = {}
        for d in self.drafts:
            if d.arxiv_id in seen:
                self.warn(d.line, f"same paper as line {seen[d.arxiv_id]}; kept once")
                continue
            if not clean(d.title):
                self.warn(d.line, "a paper link without a title; skipped")
                continue
            seen[d.arxiv_id] = d.line
            papers.append(self.paper(d))
        return tuple(papers)

    def paper(self, d: _Draft) -> Paper:
        abstract = clean(" ".join(d.abstract))
        upvotes = d.upvotes if d.votes_seen else self.votes_by_id.get(d.arxiv_id)
        links = dict.fromkeys([*extract_links(abstract), *(clean(u) for u in d.links)])
        names = tuple(n for n in (clean(x) for x in d.names) if n)
        paper = make_paper(title=d.title, abstract=abstract, source=self.path, line=d.line,
                           arxiv_id=d.arxiv_id, authors=names, published=d.published,
                           upvotes=upvotes, url=d.url, links=tuple(u for u in links if u))
        return replace(paper, authors=len(names) or d.authors,
                       summary=clean(" ".join(d.summary)))


def _is_outside_link(url: str) -> bool:
    """A code, project or PDF link; not one back into the papers site (searches, logins,
    profiles) nor the paper's own abstract page."""
    low = url.lower()
    return low.startswith(("http://", "https://")) and not any(
        x in low for x in ("huggingface.co", "hf.co/", "arxiv.org/abs/"))


def _generated(unit: _Unit | None) -> bool:
    """The ``Generated by <model>`` line that ends a paper page's AI summary."""
    return unit is not None and unit.plain.casefold().startswith("generated by")


def _anchor(unit: _Unit, in_headings: bool) -> tuple[str, str, str] | None:
    """The paper an entry starts with: a heading linking to it, or (in a plain list of
    links) a lone link whose text can be a title (not an abstract, a count or an image)."""
    if in_headings:
        return _paper_link(unit) if unit.level else None
    if unit.level or len(unit.links) != 1 or _kind(unit) != "links":
        return None
    found = _paper_link(unit)
    if found is None or len(found[0]) >= 300 or (
            len(found[0]) >= _ABSTRACT_MIN_CHARS and found[0].count(". ") >= 2):
        return None  # an abstract given as a link to its paper
    return found


def _has_heading_anchor(reader: _Reader) -> bool:
    return any(u is not None and u.level and _paper_link(u) for u in reader.units)


def parse(path: str, text: str, *, today: date) -> ParsedDump:
    """Parse one Markdown copy; InputError when it has no paper links to read."""
    reader = _Reader(path, text, today)
    page_id = arxiv_id_in(_document_url(reader.fields))
    if page_id and _PAPER_URL.match(_document_url(reader.fields)):
        shape = "markdown-paper-page"
        reader.paper_page(page_id)
    else:
        headings = _has_heading_anchor(reader)
        shape = "markdown-listing" if headings else "markdown-links"
        reader.listing(anchors_in_headings=headings)
    papers = reader.papers()
    if not papers:
        raise InputError(path, _NO_STRUCTURE)
    return ParsedDump(path=path, sha256=content_hash(text), shape=shape,
                      page_date=reader.page_date, page_date_raw=reader.page_date_raw,
                      papers=papers, warnings=tuple(reader.warnings))


def _next_targets(url: str) -> list[str]:
    """Where a login link sends the reader afterwards (``?next=/papers/<id>``)."""
    try:
        return parse_qs(urlsplit(url).query).get("next", [])
    except ValueError:  # a malformed host ("http://[") in text we do not control
        return []
