"""The HTML of a Hugging Face papers page (``/papers``, ``/papers/date/...``, trending).

The page carries every paper's fields in a data block: an element such as
``<div class="SVELTE_HYDRATER contents" data-target="DailyPapers" data-props="...">``
whose attribute holds JSON ``{"dailyPapers": [item, ...], "dateString": ...}`` with the
same items as the daily papers API. Papers come from there; each link to
``/papers/<arXiv id>`` inside a heading adds, title only, any paper the block lacks (all
of them when a page has no block). Read with an HTML5 parser, never with regexes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from justhtml import Node

from ..identity import content_hash
from ..models import Paper, ParsedDump, ParseWarning
from .hf_json import items_in, loads, read_items
from .markup import arxiv_id_in, clean, make_paper, parse_html, text_of

NAME = "hf-page"
_HEADINGS = frozenset({"h1", "h2", "h3", "h4"})
_TARGET = "DailyPapers"


def sniff(text: str) -> float:
    """An HTML document with links to papers or a papers data block."""
    head = text[:2000].lower()
    if "<html" not in head and "<!doctype html" not in head:
        return 0.0
    return 1.0 if "/papers/" in text or "dailyPapers" in text else 0.55


@dataclass
class _Page:
    """What one walk over the tree found."""

    blocks: list[Node] = field(default_factory=list)  # elements with a papers data block
    links: list[tuple[str, str, int]] = field(default_factory=list)  # (href, title, line)


def _line(node: Node) -> int:
    return node.origin_line or 0


def _walk(root: Node) -> _Page:
    """Data blocks and heading links, in document order, in one pass without recursion."""
    page = _Page()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, in_heading = stack.pop()
        if node.name.startswith("#") and node.name not in ("#document", "#document-fragment"):
            continue  # text, comments, doctype
        attrs = node.attrs or {}
        if "dailyPapers" in (attrs.get("data-props") or ""):
            page.blocks.append(node)
        href = attrs.get("href") or ""
        if node.name == "a" and in_heading and arxiv_id_in(href):
            page.links.append((href, text_of(node), _line(node)))
            continue
        in_heading = in_heading or node.name in _HEADINGS
        stack.extend((child, in_heading) for child in reversed(node.children or ()))
    return page


def _block_data(path: str, node: Node, warnings: list[ParseWarning]) -> dict[str, Any] | None:
    """The JSON of one data block; None, with a warning, when it cannot be read."""
    try:
        data = loads((node.attrs or {}).get("data-props") or "")
    except (json.JSONDecodeError, RecursionError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
        warnings.append(ParseWarning(path, _line(node), f"the page's data block is not "
                                     f"readable JSON ({reason}); reading its links instead"))
        return None
    return data if isinstance(data, dict) and items_in(data) is not None else None


def _from_blocks(path: str, blocks: list[Node],
                 warnings: list[ParseWarning]) -> tuple[list[Paper], date | None]:
    """Papers and page date from the first readable data block (``DailyPapers`` first)."""
    for node in sorted(blocks, key=lambda n: (n.attrs or {}).get("data-target") != _TARGET):
        data = _block_data(path, node, warnings)
        if data is None:
            continue
        papers, notes = read_items(path, items_in(data) or [], _line(node))
        warnings.extend(notes)
        return papers, _page_day(data.get("dateString"))
    return [], None


def _page_day(value: Any) -> date | None:
    """The day a page lists (``dateString``: 2025-11-21); None for a week or month."""
    try:
        return date.fromisoformat(value) if isinstance(value, str) and len(value) == 10 \
            else None
    except ValueError:
        return None


def _from_links(path: str, links: list[tuple[str, str, int]]) -> list[Paper]:
    """Title-only papers from heading links (a listing's markup has no abstracts)."""
    papers: list[Paper] = []
    for href, title, line in links:
        arxiv = arxiv_id_in(href)
        if clean(title) and arxiv:
            papers.append(make_paper(title=title, abstract="", source=path, line=line,
                                     arxiv_id=arxiv,
                                     url=f"https://huggingface.co/papers/{arxiv}"))
    return papers


def _each_once(papers: list[Paper]) -> tuple[Paper, ...]:
    """Papers in order, each key's first paper only."""
    first: dict[str, Paper] = {}
    for paper in papers:
        first.setdefault(paper.key, paper)
    return tuple(first.values())


def parse(path: str, text: str, *, today: date) -> ParsedDump:
    """The papers a page lists: from its data block, else from its visible links."""
    page = _walk(parse_html(text))
    warnings: list[ParseWarning] = []
    papers, day = _from_blocks(path, page.blocks, warnings)
    every = _each_once([*papers, *_from_links(path, page.links)])
    return ParsedDump(path, content_hash(text), "hf-page-html", day,
                      day.isoformat() if day else None, every, tuple(warnings))
