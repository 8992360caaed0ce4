"""RSS and Atom feeds, arXiv API results and arXiv RSS included, read with feedparser.

feedparser is handed the document as a stream of bytes, never as a string: a string that
looks like a URL or a path would be opened as one. Every text and URL field is cleaned
here, at the parser boundary, and an entry that cannot be read is skipped with a warning
while the rest of the document goes on.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import re
import time
from datetime import date
from typing import Any

import feedparser
from lxml import etree

from ..errors import InputError
from ..identity import content_hash
from ..models import Paper, ParsedDump, ParseWarning
from .markup import arxiv_id_in, clean, clean_url, html_text, make_paper

NAME = "feed"

# The text given to parse() is already decoded and is handed on as UTF-8, whatever the XML
# declaration says; a charset in the content type overrides the declaration (RFC 3023).
_HEADERS = {"content-type": "application/xml; charset=utf-8"}
_CHARREF = re.compile(r"&#([xX][0-9a-fA-F]+|[0-9]+);")
_NONCHARACTER_REF = "&#xFFFF;"  # removed from text, refused in a URL, like any illegal one
_ENTRY_START = re.compile(r"<(?:[A-Za-z_][\w.-]*:)?(?:entry|item)[\s/>]")
_ARXIV_ERROR = re.compile(r"https?://(?:export\.)?arxiv\.org/api/errors", re.I)
_ARXIV_HOST = re.compile(r"https?://(?:www\.|export\.)?arxiv\.org/", re.I)
_ARXIV_PDF = re.compile(r"https?://(?:www\.|export\.)?arxiv\.org/pdf/", re.I)
_ANNOUNCE = re.compile(r"^arXiv:\s*(\S+?)v(\d{1,6})\s+Announce Type:\s*([A-Za-z-]+)\s*"
                       r"(?:Abstract:\s*)?", re.I)
# (?<!...) before a run of letters: a search tries a run once, from its start, instead of
# from each of its letters (which is quadratic in a long word).
_VERSION = re.compile(r"(?:\d{4}\.\d{4,5}|(?<![a-z\-])[a-z\-]+(?:\.[A-Z]{2})?/\d{7})"
                      r"v(\d{1,6})(?!\d)", re.I)
_NAME_SEPARATOR = re.compile(r"\s*,\s*(?:and\s+)?|\s+and\s+")
_NAME_SUFFIX = re.compile(r"^(?:jr|sr|ii|iii|iv)\.?$", re.I)
_REVISIONS = frozenset({"replace", "replace-cross"})
_XML_DECLARATION = re.compile(r"\s*<\?xml[^>]*>")
_UTF8_DECLARATION = '<?xml version="1.0" encoding="utf-8"?>\n'
_AUTHOR_TEXT = re.compile(r"(<(?:[\w.-]+:)?(?:author|creator|contributor|managingEditor|"
                          r"webMaster)\b[^<>]*>)([^<]*)")
_AUTHOR_WORD_MAX = 100
_LONG_AUTHOR_WORD = re.compile(rf"[A-Za-z0-9_.+\-]{{{_AUTHOR_WORD_MAX + 1},}}")


def sniff(text: str) -> float:
    """An XML document whose root is <rss>, <feed> or RDF."""
    head = text.lstrip()[:4000].lower()
    return 1.0 if ("<rss" in head or "<feed" in head or "<rdf:rdf" in head) else 0.0


def _charref(match: re.Match[str]) -> str:
    """A character reference to no character at all (past U+10FFFF, a surrogate) made one
    to a non-character: feedparser crashes on the first kind, never on the second."""
    digits = match.group(1)
    hexadecimal = digits[0] in "xX"
    digits = (digits[1:] if hexadecimal else digits).lstrip("0") or "0"
    if len(digits) > 8:
        return _NONCHARACTER_REF
    value = int(digits, 16 if hexadecimal else 10)
    return _NONCHARACTER_REF if value > 0x10FFFF or 0xD800 <= value <= 0xDFFF else match.group(0)


@dataclasses.dataclass(slots=True)
class _Document:
    """What feedparser made of a document; an entry it could not read is an exception."""

    feed: Any
    entries: list[Any]
    bozo: bool = False
    bozo_exception: object = None


def _short_author_words(text: str) -> str:
    """Cut words of author elements to _AUTHOR_WORD_MAX characters.

    feedparser looks for an e-mail address in an RSS author with a pattern that rescans a
    long run of letters and digits from each of its characters (quadratic: a 100 KB author
    takes minutes). No name has a word that long, so nothing real is lost.
    """
    def cut(match: re.Match[str]) -> str:
        return match.group(1) + _LONG_AUTHOR_WORD.sub(_first_part, match.group(2))

    return _AUTHOR_TEXT.sub(cut, text)


def _first_part(match: re.Match[str]) -> str:
    return match.group(0)[:_AUTHOR_WORD_MAX]


def _read(text: str) -> _Document:
    """feedparser's view of the document: bytes in a stream, no sanitizer, no URL joining.

    Our own text extraction keeps only plain text of HTML fields, so feedparser's sanitizer
    and relative-link resolution would be wasted work. When feedparser itself crashes on
    the document (some broken markup trips it), the entries are read one by one, so that
    one bad entry costs only itself.
    """
    data = _declared_utf8(_short_author_words(_CHARREF.sub(_charref, text)))
    try:
        found = _feedparser(data)
    except Exception:
        return _one_by_one(data)
    return _Document(found.feed, list(found.entries), bool(found.bozo),
                     found.get("bozo_exception"))


def _declared_utf8(text: str) -> bytes:
    """The document as UTF-8 behind a short declaration of our own, on a line of its own.

    feedparser matches its encoding pattern against the whole first line and its DOCTYPE
    patterns against every line start before the root, each in time that grows faster
    than the text: a long first line or a long run of blank lines would stall it.
    """
    found = _XML_DECLARATION.match(text)
    body = (text[found.end():] if found else text).lstrip()
    return (_UTF8_DECLARATION + body).encode("utf-8", "replace")


def _feedparser(data: bytes) -> Any:
    return feedparser.parse(io.BytesIO(data), response_headers=_HEADERS,
                            sanitize_html=False, resolve_relative_uris=False)


def _is_entry(element: Any) -> bool:
    return isinstance(element.tag, str) and etree.QName(element).localname in ("item", "entry")


def _one_by_one(data: bytes) -> _Document:
    """Each entry read by feedparser in a document of its own: the entry inside bare copies
    of its ancestors (names, attributes and namespaces, nothing else), so the cost stays
    linear however many entries there are.

    The tree comes from libxml2's recovering parser: no entity expanded, no DTD loaded,
    nothing fetched.
    """
    parser = etree.XMLParser(recover=True, resolve_entities=False, no_network=True,
                             load_dtd=False, huge_tree=False, encoding="utf-8")
    root = etree.fromstring(data, parser)
    if root is None:
        raise ValueError("nothing readable in it")
    items = [e for e in root.iter() if _is_entry(e)
             and not any(_is_entry(a) for a in e.iterancestors())]
    chains = [list(item.iterancestors()) for item in items]
    for item in items:
        parent = item.getparent()
        if parent is not None:
            parent.remove(item)  # what is left is the channel
    try:
        feed = _feedparser(etree.tostring(root, encoding="utf-8")).feed
    except Exception:
        feed = {}
    entries: list[Any] = []
    for item, chain in zip(items, chains, strict=True):
        try:
            alone = _feedparser(_alone(item, chain))
            entries.append(alone.entries[0] if len(alone.entries) == 1
                           else ValueError("not one entry"))
        except Exception as exc:
            entries.append(exc)
    return _Document(feed, entries, bozo=True)


def _alone(item: Any, chain: list[Any]) -> bytes:
    """``item`` inside bare copies of its ancestors (``chain``, nearest first)."""
    if not chain:
        return bytes(etree.tostring(item, encoding="utf-8"))
    top = node = etree.Element(chain[-1].tag, dict(chain[-1].attrib), nsmap=chain[-1].nsmap)
    for ancestor in reversed(chain[:-1]):
        node = etree.SubElement(node, ancestor.tag, dict(ancestor.attrib), nsmap=ancestor.nsmap)
    node.append(copy.deepcopy(item))
    return bytes(etree.tostring(top, encoding="utf-8"))


def _entry_lines(text: str, count: int) -> list[int] | None:
    """The line each entry starts on, when the entry start tags can be told apart."""
    starts = [m.start() for m in _ENTRY_START.finditer(text)]
    if len(starts) != count:
        return None
    lines, line, pos = [], 1, 0
    for start in starts:
        line += text.count("\n", pos, start)
        pos = start
        lines.append(line)
    return lines


def _text(entry: Any, key: str) -> str:
    """A text field as one clean line; HTML fields reduced to their text."""
    value = entry.get(key)
    if not isinstance(value, str):
        content = entry.get("content") if key == "summary" else None
        first = content[0] if isinstance(content, list) and content else None
        if not isinstance(first, dict) or not isinstance(first.get("value"), str):
            return ""
        value, detail = first["value"], first
    else:
        detail = entry.get(f"{key}_detail")
    kind = detail.get("type") if isinstance(detail, dict) else None
    return html_text(value) if isinstance(kind, str) and "html" in kind else clean(value)


def _https(url: str) -> str:
    """arXiv links over https."""
    return "https://" + url.split("://", 1)[1] if _ARXIV_HOST.match(url) else url


def _urls(entry: Any) -> list[str]:
    """The entry's usable links in document order, each once."""
    hrefs = [link.get("href") for link in entry.get("links") or () if isinstance(link, dict)]
    found = (clean_url(u) if isinstance(u, str) else None for u in [*hrefs, entry.get("link")])
    return list(dict.fromkeys(u for u in found if u))


def _page_and_links(urls: list[str], arxiv: str | None,
                    entry_id: str | None) -> tuple[str | None, tuple[str, ...]]:
    """The paper's page and its other links. An arXiv paper's page is its /abs/ page, even
    when the listing names the PDF first; the PDF stays among the other links."""
    if arxiv and (not urls or any(_ARXIV_HOST.match(u) for u in [entry_id or "", *urls])):
        page = f"https://arxiv.org/abs/{arxiv}"
        more = [_https(u) for u in urls if not _ARXIV_HOST.match(u) or _ARXIV_PDF.match(u)]
        return page, tuple(dict.fromkeys(more))
    return (urls[0] if urls else None), tuple(urls[1:])


def _day(entry: Any) -> date | None:
    """The entry's date; ValueError when it names a day no calendar has."""
    for key in ("published_parsed", "updated_parsed"):
        value = dict.get(entry, key)  # feedparser's own get() warns about a fallback
        if isinstance(value, time.struct_time):
            return date(value.tm_year, value.tm_mon, value.tm_mday)
    return None


def _names(entry: Any, arxiv_listing: bool) -> tuple[str, ...]:
    """Author names; arXiv RSS puts them all in one creator: "A, B and C" (a "Jr." stays
    with its name)."""
    raw = [clean(a.get("name")) for a in entry.get("authors") or () if isinstance(a, dict)
           and isinstance(a.get("name"), str)]
    if not arxiv_listing:
        return tuple(n for n in raw if n)
    names: list[str] = []
    for value in raw:
        for part in _NAME_SEPARATOR.split(value):
            if _NAME_SUFFIX.match(part) and names:
                names[-1] += f", {part}"
            elif part:
                names.append(part)
    return tuple(names)


def _version(*candidates: object) -> int | None:
    """The arXiv version named in the first candidate that names one (...v2 -> 2)."""
    for value in candidates:
        m = _VERSION.search(value) if isinstance(value, str) else None
        if m:
            return int(m.group(1))
    return None


def _paper(path: str, entry: Any, line: int, notes: list[str]) -> Paper | None:
    """One entry as a paper; None for an entry without a title. ``notes`` hears about
    fields that had to be left out."""
    title = _text(entry, "title")
    if not title:
        notes.append("has no title; skipped")
        return None
    abstract = _text(entry, "summary")
    announce = _ANNOUNCE.match(abstract)
    if announce:
        abstract = abstract[announce.end():]
    declared = entry.get("arxiv_announce_type")
    kind = clean(declared if isinstance(declared, str) else announce.group(3) if announce
                 else "").lower()
    entry_id = entry.get("id") if isinstance(entry.get("id"), str) else None
    urls = _urls(entry)
    arxiv = arxiv_id_in(entry_id, (entry_id or "").removeprefix("oai:arXiv.org:"), *urls)
    page, links = _page_and_links(urls, arxiv, entry_id)
    try:
        published = _day(entry)
    except (ValueError, OverflowError):
        published = None
        notes.append("has a date out of range; kept without a date")
    paper = make_paper(title=title, abstract=abstract, source=path, line=line, arxiv_id=arxiv,
                       authors=_names(entry, bool(kind or announce)), published=published,
                       url=page, links=links)
    version = int(announce.group(2)) if announce else _version(entry_id, *urls)
    return dataclasses.replace(paper, version=version, revision=kind in _REVISIONS)


def _refuse_api_error(path: str, entries: list[Any]) -> None:
    """The arXiv API answers a bad query with one entry titled Error, not with an HTTP error."""
    for entry in entries:
        if isinstance(entry, Exception):
            continue
        ids = (entry.get("id"), entry.get("link"))
        if any(isinstance(v, str) and _ARXIV_ERROR.match(v.strip()) for v in ids):
            reason = _text(entry, "summary") or _text(entry, "title") or "no reason given"
            raise InputError(path, f"the arXiv API answered with an error: {reason}; fix the "
                                   "source's query")


def parse(path: str, text: str, *, today: date) -> ParsedDump:
    """One paper per entry; arXiv ids from entry ids or links. An entry that cannot be read
    is skipped with a warning naming its line (or its number, when lines are unknown)."""
    try:
        parsed = _read(text)
    except Exception as exc:  # beyond repair: say so plainly
        raise InputError(path, f"not a readable feed ({type(exc).__name__}: "
                               f"{clean(str(exc))[:200]}); remove it from the inbox") from None
    entries = parsed.entries
    if parsed.bozo and not entries:
        raise InputError(path, f"not a readable feed ({parsed.bozo_exception})")
    if not entries and not parsed.feed:
        raise InputError(path, "not a readable feed (no channel or entries)")
    _refuse_api_error(path, entries)
    lines = _entry_lines(text, len(entries))
    papers: list[Paper] = []
    warnings: list[ParseWarning] = []
    for n, entry in enumerate(entries, 1):
        line = lines[n - 1] if lines else n
        notes: list[str] = []
        try:
            if isinstance(entry, Exception):
                raise entry
            paper = _paper(path, entry, line, notes)
        except Exception as exc:  # one hostile entry must not cost the others
            paper = None
            notes.append(f"could not be read ({type(exc).__name__}: {clean(str(exc))}); skipped")
        warnings.extend(ParseWarning(path, line, f"entry {n} {note}") for note in notes)
        if paper is not None:
            papers.append(paper)
    return ParsedDump(path, content_hash(text), "feed", None, None, tuple(papers),
                      tuple(warnings))
