"""The HTML of a Hugging Face papers page: each paper is a link to ``/papers/<arXiv id>``
inside a heading. Parsed with the standard library's HTML parser, never with regexes."""

from __future__ import annotations

from datetime import date
from html.parser import HTMLParser

from ..identity import content_hash
from ..models import Paper, ParsedDump
from .markup import arxiv_id_in, clean, make_paper

NAME = "hf-page"


def sniff(text: str) -> float:
    """An HTML document with links to papers."""
    head = text[:2000].lower()
    if "<html" not in head and "<!doctype html" not in head:
        return 0.0
    return 1.0 if "/papers/" in text else 0.55


class _Cards(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.heading = 0
        self.link: tuple[str, int, list[str]] | None = None
        self.found: list[tuple[str, str, int]] = []  # (href, title, line)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("h1", "h2", "h3", "h4"):
            self.heading += 1
        elif tag == "a" and self.heading:
            href = dict(attrs).get("href") or ""
            if arxiv_id_in(href):
                self.link = (href, self.getpos()[0], [])

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self.link is not None:
            href, line, parts = self.link
            self.found.append((href, "".join(parts), line))
            self.link = None
        elif tag in ("h1", "h2", "h3", "h4") and self.heading:
            self.heading -= 1

    def handle_data(self, data: str) -> None:
        if self.link is not None:
            self.link[2].append(data)


def parse(path: str, text: str, *, today: date) -> ParsedDump:
    """Titles and arXiv ids of the papers a page lists (a listing has no abstracts)."""
    cards = _Cards()
    cards.feed(text)
    cards.close()
    papers: list[Paper] = []
    seen: set[str] = set()
    for href, title, line in cards.found:
        arxiv = arxiv_id_in(href)
        if not clean(title) or arxiv is None or arxiv in seen:
            continue
        seen.add(arxiv)
        papers.append(make_paper(title=title, abstract="", source=path, line=line,
                                 arxiv_id=arxiv, url=f"https://huggingface.co/papers/{arxiv}"))
    return ParsedDump(path, content_hash(text), "hf-page-html", None, None, tuple(papers))
