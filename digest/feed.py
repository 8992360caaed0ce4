"""Atom feeds with feedgen: stable entry ids, times from the store, newest first.

feedgen's traps, handled here: ``updated`` defaults to now (we always set it from the
store, so an unchanged store gives a byte-identical feed), ``add_entry`` prepends by
default (we append in the order wanted), and ``atom_file`` is not atomic (we write
``atom_str`` through fsutil.atomic_write).

Stored text is not trusted to be XML: every string handed to feedgen goes through
``clean_text`` first, and each entry is built into XML on its own before it joins the
feed, so a paper that still cannot be written is left out with a warning instead of
failing the whole feed (and, with it, the run).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from feedgen.entry import FeedEntry
from feedgen.feed import FeedGenerator

from .errors import DigestError
from .identity import short_hash
from .models import Keyword, Paper, Ranked
from .render import Renderer, clean_text, link_of, safe_url

Warn = Callable[[str], None]


def paper_entry_id(authority: str, tag_date: str, key: str) -> str:
    """A tag: URI minted from the paper key: the same paper always gets the same id."""
    if key.startswith("arxiv:"):
        return f"tag:{authority},{tag_date}:paper/arxiv/{key[len('arxiv:'):]}"
    return f"tag:{authority},{tag_date}:paper/{short_hash(key, 20)}"


def build_feed(*, authority: str, tag_date: str, name: str, title: str, self_url: str | None,
               items: Sequence[Ranked], keywords: Sequence[Keyword], renderer: Renderer,
               empty_updated: datetime, warn: Warn | None = None,
               content: Callable[[int, Ranked], str] | None = None) -> bytes:
    """The Atom document for one subscriber (items newest first).

    An entry that cannot be built is skipped and ``warn`` hears why. ``content(i, item)``
    gives the HTML of ``items[i]`` (one kept from before); by default it is rendered.
    """
    fg = FeedGenerator()
    fg.id(clean_text(f"tag:{authority},{tag_date}:feed/{name}"))
    fg.title(clean_text(f"{title}: {name}"))
    terms = ", ".join(k.term for k in keywords) or "everything"
    fg.subtitle(clean_text(f"New papers matching {terms}"))
    fg.author({"name": clean_text(title)})
    fg.language("en")
    if self_url and safe_url(self_url):
        fg.link(href=self_url, rel="self", type="application/atom+xml")
    times = [i.paper.first_seen for i in items if i.paper.first_seen]
    fg.updated(max(times) if times else empty_updated)
    for n, item in enumerate(items):
        try:
            html = content(n, item) if content is not None else \
                renderer.feed_entry(item, keywords)
            entry = _entry(item, authority, tag_date, html, empty_updated)
        except DigestError:
            raise  # a template error is the operator's to fix, in every entry alike
        except Exception as exc:  # one bad stored paper must not stop the feed
            if warn is not None:
                warn(f"left paper {item.paper.key!r} out of the feed: "
                     f"{type(exc).__name__}: {exc}")
            continue
        fg.add_entry(entry, order="append")
    data: bytes = fg.atom_str(pretty=True)
    return data


FEED_AUTHORS = 10  # a 3,000-author collaboration must not bloat every feed reader


def _author_names(paper: Paper) -> list[str]:
    """The paper's authors for ``<author><name>``: cleaned, blank ones skipped, at most
    FEED_AUTHORS (text dumps give only a count: the feed-level author stands for them)."""
    names = (" ".join(clean_text(n).split()) for n in paper.author_names)
    return [n for n in names if n][:FEED_AUTHORS]


def _entry(item: Ranked, authority: str, tag_date: str, html: str,
           empty_updated: datetime) -> FeedEntry:
    """One entry, already turned into XML once (so a value lxml refuses fails here)."""
    paper = item.paper
    seen = paper.first_seen or empty_updated
    entry = FeedEntry()
    entry.id(clean_text(paper_entry_id(authority, tag_date, paper.key)))
    entry.title(clean_text(paper.title).strip() or "(untitled)")
    entry.published(seen)
    entry.updated(seen)
    for name in _author_names(paper):  # RFC 4287: replaces the feed's author for this entry
        entry.author({"name": name})
    entry.link(href=link_of(paper), rel="alternate")
    entry.content(clean_text(html), type="html")
    for term in item.terms:
        entry.category(term=clean_text(term))
    entry.atom_entry()
    return entry
