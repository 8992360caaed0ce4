"""Small helpers shared by the structured parsers (JSON, HTML, feeds).

HTML is read with justhtml, an HTML5 parser in pure Python whose time grows linearly with
the input, whatever the markup (unfinished tags, bogus declarations, deep nesting).
Every text and URL field of a paper is cleaned in ``make_paper``, at the parser boundary.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any

from justhtml import JustHTML, Node

from ..identity import http_url, normalise_arxiv_id, paper_key, strip_xml_illegal
from ..models import Paper

_ARXIV_IN_URL = re.compile(r"(?:arxiv\.org/(?:abs|pdf)/|huggingface\.co/papers/|^/papers/)"
                           r"([a-z\-]+(?:\.[A-Z]{2})?/\d{7}|\d{4}\.\d{4,5})(?:v\d+)?", re.I)
# Elements whose text runs on into the next word; any other element is a word break.
_INLINE = frozenset({
    "a", "abbr", "b", "bdi", "bdo", "big", "cite", "code", "data", "del", "dfn", "em",
    "font", "i", "ins", "kbd", "mark", "nobr", "q", "s", "samp", "small", "span", "strike",
    "strong", "sub", "sup", "time", "tt", "u", "var", "wbr",
})
# Elements whose content is no readable text.
_HIDDEN = frozenset({"script", "style", "template", "noscript", "#comment", "#doctype"})
def clean(text: str | None) -> str:
    """One line of plain text: XML-illegal characters gone, white space collapsed."""
    return " ".join(strip_xml_illegal(text or "").split())


def clean_url(value: str | None) -> str | None:
    """An absolute http(s) URL with surrounding white space stripped, or None.

    A URL with white space, a control or another invisible character inside, or with
    another scheme, is dropped: never mended into a different URL.
    """
    return http_url((value or "").strip())


# Inline formatting tags. An HTML5 parser reopens every unclosed one at each new block
# ("reconstruct the active formatting elements"), which is quadratic in time and nodes when
# many are left open; they carry no structure and no text, so they are dropped first.
_FORMATTING_TAG = re.compile(
    r"</?(?:b|big|code|em|font|i|nobr|s|small|strike|strong|tt|u)\b[^<>]*>", re.I)


def _keep_line_breaks(match: re.Match[str]) -> str:
    return "\n" * match.group().count("\n")  # so the lines reported stay the file's


def parse_html(text: str, *, fragment: bool = False) -> Node:
    """The document tree of an HTML page (or fragment), with source lines on its nodes."""
    text = _FORMATTING_TAG.sub(_keep_line_breaks, text)
    return JustHTML(text, sanitize=False, fragment=fragment, track_node_locations=True).root


def text_of(node: Node) -> str:
    """The readable text under a node as one clean line (scripts and comments left out)."""
    parts: list[str] = []
    stack: list[Any] = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, str):
            parts.append(current)
        elif current.name == "#text":
            parts.append(current.data if isinstance(current.data, str) else "")
        elif current.name not in _HIDDEN:
            gap = "" if current.name in _INLINE else " "
            stack.append(gap)
            stack.extend(reversed(current.children or ()))
            stack.append(gap)
    return clean("".join(parts))


def html_text(fragment: str) -> str:
    """The text of an HTML fragment (feed summaries are often HTML)."""
    if "<" not in fragment and "&" not in fragment:
        return clean(fragment)
    return text_of(parse_html(fragment, fragment=True))


def arxiv_id_in(*candidates: str | None) -> str | None:
    """An arXiv id from an id, an arxiv.org or huggingface.co/papers URL, if any."""
    for value in candidates:
        if not value:
            continue
        found = normalise_arxiv_id(value)
        if found:
            return found
        m = _ARXIV_IN_URL.search(value)
        if m:
            return normalise_arxiv_id(m.group(1))
    return None


def day_of(value: str | None) -> date | None:
    """The date of an ISO 8601 timestamp or date; None when there is none."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).date()
    except ValueError:
        return None


def _names(authors: tuple[str, ...]) -> tuple[str, ...]:
    """Author names cleaned; names left empty by cleaning dropped."""
    return tuple(name for name in map(clean, authors) if name)


def _links(links: tuple[str, ...], url: str | None) -> tuple[str, ...]:
    """Usable links in order, each once, the paper's own page left out."""
    usable = (clean_url(link) for link in links)
    return tuple(dict.fromkeys(link for link in usable if link and link != url))


def make_paper(*, title: str, abstract: str, source: str, line: int,
               arxiv_id: str | None = None, authors: tuple[str, ...] = (),
               published: date | None = None, upvotes: int | None = None,
               url: str | None = None, links: tuple[str, ...] = (),
               summary: str = "") -> Paper:
    """A Paper from structured fields, keyed like every other source's.

    Every text field is made one clean line and every URL checked here, so no parser
    can hand on a control character or a URL that is not plain http(s).
    """
    title = clean(title)
    names = _names(authors)
    page = clean_url(url) or (f"https://arxiv.org/abs/{arxiv_id}" if arxiv_id else None)
    return Paper(
        key=paper_key(title, arxiv_id), title=title, abstract=clean(abstract),
        authors=len(names) or None, author_names=names, published=published,
        date_raw=published.isoformat() if published else None, upvotes=upvotes,
        links=_links(links, page), arxiv_id=arxiv_id, url=page,
        source=source, line=line, summary=clean(summary),
    )
