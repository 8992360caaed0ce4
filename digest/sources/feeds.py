"""RSS and Atom feeds, arXiv API results included, read with feedparser."""

from __future__ import annotations

import time
from datetime import date
from typing import Any

import feedparser

from ..errors import InputError
from ..identity import content_hash
from ..models import Paper, ParsedDump
from .markup import arxiv_id_in, html_text, make_paper

NAME = "feed"


def sniff(text: str) -> float:
    """An XML document whose root is <rss>, <feed> or RDF."""
    head = text.lstrip()[:4000].lower()
    return 1.0 if ("<rss" in head or "<feed" in head or "<rdf:rdf" in head) else 0.0


def _day(entry: Any) -> date | None:
    for key in ("published_parsed", "updated_parsed"):
        value = entry.get(key)
        if isinstance(value, time.struct_time):
            return date(value.tm_year, value.tm_mon, value.tm_mday)
    return None


def parse(path: str, text: str, *, today: date) -> ParsedDump:
    """One paper per entry; arXiv ids from entry ids or links."""
    parsed = feedparser.parse(text)
    if parsed.bozo and not parsed.entries:
        raise InputError(path, f"not a readable feed ({parsed.get('bozo_exception')})")
    papers: list[Paper] = []
    for n, entry in enumerate(parsed.entries, 1):
        title = entry.get("title", "")
        if not title.strip():
            continue
        link = entry.get("link")
        arxiv = arxiv_id_in(entry.get("id"), link)
        authors = tuple(a.get("name", "") for a in entry.get("authors", []) if a.get("name"))
        papers.append(make_paper(
            title=html_text(title), abstract=html_text(entry.get("summary", "")),
            source=path, line=n, arxiv_id=arxiv, authors=authors, published=_day(entry),
            url=link if isinstance(link, str) and link.startswith(("http://", "https://"))
            else None))
    if not papers and not parsed.entries and not parsed.feed:
        raise InputError(path, "not a readable feed (no channel or entries)")
    return ParsedDump(path, content_hash(text), "feed", None, None, tuple(papers))
