"""Atom feeds with feedgen: stable entry ids, times from the store, newest first.

feedgen's traps, handled here: ``updated`` defaults to now (we always set it from the
store, so an unchanged store gives a byte-identical feed), ``add_entry`` prepends by
default (we append in the order wanted), and ``atom_file`` is not atomic (we write
``atom_str`` through fsutil.atomic_write).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from feedgen.feed import FeedGenerator

from .identity import short_hash
from .models import Keyword, Ranked
from .render import Renderer, safe_url


def paper_entry_id(authority: str, tag_date: str, key: str) -> str:
    """A tag: URI minted from the paper key: the same paper always gets the same id."""
    if key.startswith("arxiv:"):
        return f"tag:{authority},{tag_date}:paper/arxiv/{key[len('arxiv:'):]}"
    return f"tag:{authority},{tag_date}:paper/{short_hash(key, 20)}"


def build_feed(*, authority: str, tag_date: str, name: str, title: str, self_url: str | None,
               items: Sequence[Ranked], keywords: Sequence[Keyword], renderer: Renderer,
               empty_updated: datetime) -> bytes:
    """The Atom document for one subscriber (items newest first)."""
    fg = FeedGenerator()
    fg.id(f"tag:{authority},{tag_date}:feed/{name}")
    fg.title(f"{title}: {name}")
    fg.subtitle(f"New papers matching {', '.join(k.term for k in keywords) or 'everything'}")
    fg.author({"name": title})
    fg.language("en")
    if self_url:
        fg.link(href=self_url, rel="self", type="application/atom+xml")
    times = [i.paper.first_seen for i in items if i.paper.first_seen]
    fg.updated(max(times) if times else empty_updated)
    for item in items:
        paper = item.paper
        seen = paper.first_seen or empty_updated
        entry = fg.add_entry(order="append")
        entry.id(paper_entry_id(authority, tag_date, paper.key))
        entry.title(paper.title or "(untitled)")
        entry.published(seen)
        entry.updated(seen)
        link = safe_url(paper.url) or next((u for u in paper.links if safe_url(u)), None)
        if link:
            entry.link(href=link, rel="alternate")
        entry.content(renderer.feed_entry(item, keywords), type="html")
        for term in item.terms:
            entry.category(term=term)
    data: bytes = fg.atom_str(pretty=True)
    return data
