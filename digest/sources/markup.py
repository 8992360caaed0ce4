"""Small helpers shared by the structured parsers (JSON, HTML, feeds)."""

from __future__ import annotations

import re
from datetime import date, datetime
from html.parser import HTMLParser

from ..identity import normalise_arxiv_id, paper_key, strip_xml_illegal
from ..models import Paper

_ARXIV_IN_URL = re.compile(r"(?:arxiv\.org/(?:abs|pdf)/|huggingface\.co/papers/|^/papers/)"
                           r"([a-z\-]+(?:\.[A-Z]{2})?/\d{7}|\d{4}\.\d{4,5})(?:v\d+)?", re.I)


def clean(text: str | None) -> str:
    """One line of plain text: XML-illegal characters gone, white space collapsed."""
    return " ".join(strip_xml_illegal(text or "").split())


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def html_text(fragment: str) -> str:
    """The text of an HTML fragment (feed summaries are often HTML)."""
    parser = _Text()
    parser.feed(fragment)
    parser.close()
    return clean(" ".join(parser.parts))


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


def make_paper(*, title: str, abstract: str, source: str, line: int,
               arxiv_id: str | None = None, authors: tuple[str, ...] = (),
               published: date | None = None, upvotes: int | None = None,
               url: str | None = None, links: tuple[str, ...] = ()) -> Paper:
    """A Paper from structured fields, keyed like every other source's."""
    title = clean(title)
    return Paper(
        key=paper_key(title, arxiv_id), title=title, abstract=clean(abstract),
        authors=len(authors) or None, author_names=authors, published=published,
        date_raw=published.isoformat() if published else None, upvotes=upvotes,
        links=links, arxiv_id=arxiv_id,
        url=url or (f"https://arxiv.org/abs/{arxiv_id}" if arxiv_id else None),
        source=source, line=line,
    )
