"""The static site: an index of the subscribers, each one's archive, a page per issue.

Pages are made from the store with the ``site_*.html.j2`` templates (each extends
``site_base.html.j2``: no inline style or script, so a strict CSP holds) and link each
other by relative URLs, so the folder works on any static host and from file://::

    site/index.html                         one card per configured subscriber
    site/site.css                           the e-mail's look plus the pages' own rules
    site/favicon.svg                        the pages' icon (``_favicon.svg``)
    site/<name>/index.html                  the archive: every issue, newest first
    site/<name>/<NNNN>-<YYYY-MM-DD>.html    one issue (the stem of its data/digests files)

A run renders the index, the stylesheet, the archives of who got an issue and the issue
pages missing on disk (with the page before each, whose "next" link changes): the issue
pages it renders do not grow with the history, but an archive lists every issue of its
subscriber (one stored row each, matched keywords included), so that part does. The
store's meta keeps a fingerprint of what shapes the pages, in two parts: a global one
(templates, version, site URL, title, intro, time zone, feeds folder, the link key) and
one per subscriber (name, feed, keywords, excludes). When the global part differs, or on
``digest build-site``, every page is rendered; when only a subscriber's part differs,
every page of theirs. A subscriber's full render removes the issue pages in their folder
that are no longer one of theirs (a time zone change renames them); other files there are
left alone. A file is only written when its bytes change. Pages of subscribers no longer
configured are left as they are.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import sqlite3
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from . import __version__
from .config import Config
from .errors import ConfigError, StoreError
from .fsutil import atomic_write, folder_problem, publisher_id, publishing, remove_stale_temps
from .links import WebLinks, links_for
from .lock import exclusive
from .models import Digest, Profile
from .render import Renderer, fmt_date, operator_markdown
from .store import IssueRecord, Store, open_store, read_only_store
from .tokens import load_secret, sign

FINGERPRINT_KEY = "site_fingerprint:"  # store meta, + publisher: what its pages were made with
BUILT_KEY = "site_built:"  # store meta, + publisher: that fingerprint's hash, newest issue then
SEEN_KEY = "site_changes_seen:"  # store meta, + publisher: the last page change it built


def keys(config: Config) -> tuple[str, str, str]:
    """This publisher's (fingerprint, built, seen) meta keys: each host has its own pages."""
    me = publisher_id(config.data_dir)
    return FINGERPRINT_KEY + me, BUILT_KEY + me, SEEN_KEY + me
TOP_TERMS = 3  # keywords shown per issue in an archive
ISSUE_PAGE = re.compile(r"\d{4}-\d{4}-\d{2}-\d{2}\.html")  # what a full render may remove


@dataclass(slots=True)
class SiteReport:
    """What a site build did: files written (their bytes changed), files left unchanged."""

    folder: Path
    written: list[str] = field(default_factory=list)
    unchanged: int = 0
    removed: list[str] = field(default_factory=list)  # issue pages no longer current


@dataclass(frozen=True, slots=True)
class IssueEntry:
    """One issue as a link (archive row, index card, previous/next); ``href`` is relative
    to the page that shows it."""

    number: int
    date: str
    href: str
    new: int
    matched: int
    terms: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FeedLink:
    """One feed to discover (``<link rel="alternate">``)."""

    title: str
    href: str


@dataclass(frozen=True, slots=True)
class Card:
    """One subscriber on the index page."""

    name: str
    archive: str | None  # None before their first issue
    feed: str | None
    keywords: tuple[str, ...]
    latest: IssueEntry | None


def stem(number: int, generated_at: datetime) -> str:
    """``0007-2026-11-23``: the file stem of an issue (``generated_at`` in the config zone)."""
    return f"{number:04d}-{generated_at:%Y-%m-%d}"


def feed_href(config: Config, profile: Profile, root: str) -> str | None:
    """The subscriber's feed: absolute under ``site_url``, else relative to the site root."""
    if not profile.feed:
        return None
    return config.feed_url(profile.name) or \
        f"{root}{quote(config.feeds_dir.name)}/{profile.name}.atom"


def _page(issue: IssueRecord, zone: tzinfo) -> str:
    """The issue page's file name."""
    return f"{stem(issue.number, issue.generated_at.astimezone(zone))}.html"


def top_terms(terms: Sequence[str], n: int = TOP_TERMS) -> tuple[str, ...]:
    """The ``n`` keywords matched most often (ties alphabetically), as in the subject."""
    counts = Counter(terms)
    return tuple(sorted(counts, key=lambda t: (-counts[t], t.casefold()))[:n])


@dataclass
class Fingerprint:
    """What the pages were made with: ``common`` shapes every page, ``readers`` one hash
    per subscriber for what shapes only theirs."""

    common: str
    hashed: dict[str, str]  # per reader, as loaded (or filled from ``parts`` on first use)
    parts: list[list[Any]] | None = None  # per reader: what shapes only their pages
    parts_json: str = ""  # ``parts`` as JSON (made once per config)

    @functools.cached_property
    def readers(self) -> dict[str, str]:
        if self.parts is None:
            return self.hashed
        return {str(part[0]): _sha(json.dumps(part).encode()) for part in self.parts}

    def dump(self) -> str:
        return json.dumps({"global": self.common, "readers": self.readers}, sort_keys=True)

    def quick(self) -> str:
        """One hash of all of it, without a hash per reader (a quiet run's only check)."""
        return _sha(json.dumps([self.common, self.parts_json or self.hashed]).encode())

    @classmethod
    def load(cls, text: str | None) -> Fingerprint | None:
        """The stored fingerprint; None if absent or unreadable (an old plain hash)."""
        try:
            found = json.loads(text) if text else None
        except ValueError:
            return None
        if not isinstance(found, dict) or not isinstance(found.get("global"), str) or \
                not isinstance(found.get("readers"), dict):
            return None
        return cls(found["global"], {str(k): str(v) for k, v in found["readers"].items()})


def fingerprint(config: Config, renderer: Renderer, secret: bytes | None) -> Fingerprint:
    """Hashes of what shapes every page, and of what shapes each subscriber's pages."""
    parts: dict[str, Any] = {
        "version": __version__,
        "templates": {n: renderer.source_hash(n) for n in renderer.SITE_TEMPLATES},
        "override": renderer.override_hashes(),
        "site_url": config.site_url, "title": config.title, "intro": config.intro,
        "timezone": config.timezone, "feeds": config.feeds_dir.name,
        # The vote links' key (as a MAC of a constant: the hash reveals nothing of it).
        "links": sign(secret, "site", "fingerprint, public links")
        if secret and config.site_url else None,
    }
    common = _sha(json.dumps(parts, sort_keys=True).encode())
    reader_parts, parts_json = _reader_parts(config)
    return Fingerprint(common, {}, reader_parts, parts_json)


# config id -> (config, per reader parts, their JSON)
_PARTS: dict[int, tuple[Config, list[list[Any]], str]] = {}


def _reader_parts(config: Config) -> tuple[list[list[Any]], str]:
    """Per reader, what shapes only their pages (and as JSON): once per config object."""
    kept = _PARTS.get(id(config))
    if kept is None or kept[0] is not config:
        _PARTS.clear()
        parts = [[p.name, p.feed, [[k.term, k.weight] for k in p.keywords],
                  [k.term for k in p.exclude]] for p in config.subscribers]
        kept = _PARTS[id(config)] = (config, parts, json.dumps(parts))
    return kept[1], kept[2]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Writer:
    """Writes pages under the site folder, counting what changed."""

    def __init__(self, report: SiteReport) -> None:
        self.report = report

    def put(self, relative: str, text: str) -> None:
        path = self.report.folder / relative
        if atomic_write(path, text.encode("utf-8")):
            self.report.written.append(str(path))
        else:
            self.report.unchanged += 1


def build_site(config: Config, store: Store | None, renderer: Renderer,
               secret: bytes | None, *, subscribers: Collection[str] | None = None,
               full: bool = False) -> SiteReport:
    """Bring the site folder up to date with the store (see the module docstring).

    ``subscribers``: whose archive to render (those who got an issue; None: everyone).
    ``full``: render every page. Someone with no issue yet has no pages but a card on the
    index; without a store the site is the index alone.
    """
    zone = ZoneInfo(config.timezone)
    report = SiteReport(config.site)
    out = _Writer(report)
    mark = fingerprint(config, renderer, secret)
    fp_key, built_key, seen_key = keys(config)
    stored_text = store.meta(fp_key) if store is not None else None
    seen = int(store.meta(seen_key) or 0) if store is not None else 0
    stale, newest = store.page_changes(seen) if store is not None else ({}, 0)
    # A quiet run (no new issue, nothing that shapes the pages changed, every reader's
    # folder still there) renders nothing.
    if store is not None and not full and not subscribers and not stale and _current(
            config, store, mark, stored_text, built_key):
        return report
    stored = Fingerprint.load(stored_text)
    full = full or stored is None or stored.common != mark.common
    latest = store.latest_issues() if store is not None else {}
    out.put("site.css", renderer.page("_site.css", {}))
    out.put("favicon.svg", renderer.source("_favicon.svg"))
    out.put("index.html", _index_page(config, renderer, latest, zone))
    for profile in config.subscribers:
        name, folder = profile.name, config.site / profile.name
        last = latest.get(name)
        if store is None or last is None:
            continue  # no issue yet: no pages (the index says so)
        redo = full or stored is None or stored.readers.get(name) != mark.readers[name]
        changed = stale.get(name, set())
        if not (redo or changed or subscribers is None or name in subscribers) and \
                (folder / "index.html").is_file() and (folder / _page(last, zone)).is_file():
            continue  # nothing new for them, and their pages are there
        issues = store.issues(name)
        try:
            on_disk = set(os.listdir(folder))
        except OSError:
            on_disk = set()
        names = [_page(i, zone) for i in issues]
        out.put(f"{name}/index.html", _archive_page(config, renderer, store, profile, issues,
                                                    names, zone))
        todo: set[int] = set()
        for n, page in enumerate(names):
            if redo or page not in on_disk:
                todo.update((n, n - 1) if n else (n,))  # the one before gains a "next" link
            elif issues[n].id in changed:
                todo.add(n)
        if redo:  # pages renamed (another time zone) would linger with valid vote links
            for old in sorted(on_disk - set(names)):
                if ISSUE_PAGE.fullmatch(old):
                    with contextlib.suppress(FileNotFoundError):
                        (folder / old).unlink()
                        report.removed.append(str(folder / old))
        found = links_for(config.site_url, secret, name)  # public: no feedback-page link
        links = WebLinks(found.base, found.secret, name, public=True) if found else None
        for n in sorted(todo):
            out.put(f"{name}/{names[n]}", _issue_page(config, renderer, store, profile, issues,
                                                      names, n, zone, links))
    if store is not None:
        # A read-only store: next time.
        stored_text = mark.dump()
        built = _built_state(store, mark, stored_text)
        names_now = {p.name for p in config.subscribers}
        with contextlib.suppress(StoreError, sqlite3.Error), store.transaction() as conn:
            conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT"
                             " (key) DO UPDATE SET value = excluded.value",
                             [(fp_key, stored_text), (seen_key, str(newest)),
                              (built_key, json.dumps(
                                 {"state": built,
                                  "readers": sorted(n for n in latest if n in names_now)}))])
            # Changes every publisher has built from are needed by none (one that comes
            # later builds everything first).
            conn.execute("DELETE FROM page_changes WHERE id <= (SELECT min(CAST(value AS"
                         " INTEGER)) FROM meta WHERE key LIKE ?)", (SEEN_KEY + "%",))
    return report


def site_current(config: Config, store: Store, renderer: Renderer,
                 secret: bytes | None) -> bool:
    """True when a run that records no issue would render no page (its quick check)."""
    fp_key, built_key, seen_key = keys(config)
    return store.newest_page_change() <= int(store.meta(seen_key) or 0) and _current(
        config, store, fingerprint(config, renderer, secret), store.meta(fp_key), built_key)


def _built_state(store: Store, mark: Fingerprint, stored_text: str | None) -> str:
    """What the site was built from, in one hash: the quick fingerprint, the stored one
    and the newest issue."""
    return _sha(json.dumps([mark.quick(), stored_text, store.newest_issue_id()]).encode())


def _current(config: Config, store: Store, mark: Fingerprint, stored_text: str | None,
             built_key: str) -> bool:
    """The site as this publisher's last build left it (page changes are checked apart;
    ``built_key``: its meta key of what it was built from)."""
    return _still_built(config, store.meta(built_key), _built_state(store, mark, stored_text))


def _still_built(config: Config, kept: str | None, built: str | None) -> bool:
    """The site is as the last run left it: same state, and the index, its stylesheet and
    icon and every folder of a reader with pages still there (one listing of the site
    folder; a page deleted inside a reader's folder is back with their next issue, or with
    ``digest build-site``)."""
    try:
        found = json.loads(kept) if kept else None
        there = set(os.listdir(config.site))
    except (ValueError, OSError):
        return False
    return isinstance(found, dict) and found.get("state") == built and \
        there.issuperset(("index.html", "site.css", "favicon.svg", *(found.get("readers") or ())))


def _base(config: Config, title: str, root: str, profile: Profile | None) -> dict[str, Any]:
    feed = feed_href(config, profile, root) if profile is not None else None
    return {"root": root, "title": title, "site_title": config.title, "feed_url": feed,
            "feed_title": f"{config.title} ({profile.name})" if profile else config.title}


def _entry(issue: IssueRecord, zone: tzinfo, href: str,
           terms: tuple[str, ...] = ()) -> IssueEntry:
    return IssueEntry(issue.number, fmt_date(issue.generated_at.astimezone(zone)), href,
                      issue.new_papers, issue.matched, terms)


def _index_page(config: Config, renderer: Renderer, latest: dict[str, IssueRecord],
                zone: tzinfo) -> str:
    cards, feeds = [], []
    for p in config.subscribers:
        feed = feed_href(config, p, "")
        if feed:
            feeds.append(FeedLink(f"{config.title} ({p.name})", feed))
        last = latest.get(p.name)
        entry = None if last is None else _entry(last, zone, f"{p.name}/{_page(last, zone)}")
        cards.append(Card(p.name, f"{p.name}/index.html" if last else None, feed,
                          tuple(k.term for k in p.keywords), entry))
    context = _base(config, config.title, "", None)
    context.update(cards=cards, feeds=feeds, intro_html=operator_markdown(config.intro))
    return renderer.page("site_index.html.j2", context)


def _archive_page(config: Config, renderer: Renderer, store: Store, profile: Profile,
                  issues: list[IssueRecord], names: list[str], zone: tzinfo) -> str:
    terms = store.issue_terms(profile.name)
    rows = [_entry(i, zone, page, top_terms(terms.get(i.number, ())))
            for i, page in zip(issues, names, strict=True)]
    context = _base(config, f"{config.title}: {profile.name}", "../", profile)
    context.update(profile=profile, issues=rows[::-1])
    return renderer.page("site_archive.html.j2", context)


def _issue_page(config: Config, renderer: Renderer, store: Store, profile: Profile,
                issues: list[IssueRecord], names: list[str], n: int, zone: tzinfo,
                links: WebLinks | None) -> str:
    issue = issues[n]
    before = issues[n - 1] if n else None
    after = issues[n + 1] if n + 1 < len(issues) else None
    local = issue.generated_at.astimezone(zone)
    feed = feed_href(config, profile, "../")
    digest = Digest(
        title=config.title, profile=profile, number=issue.number, generated_at=local,
        covers_from=before.generated_at.astimezone(zone) if before else None,
        covers_to=local, new_count=issue.new_papers,
        items=tuple(store.issue_items(issue.id)), others=(), others_total=0,
        page_dates=tuple(store.page_dates(issue.from_run, issue.to_run)), feed_url=feed)
    context = _base(config, f"{config.title}: issue {issue.number} for {profile.name}", "../",
                    profile)
    context.update(
        digest=digest, keywords=profile.keywords, links=links, archive="index.html",
        prev=_entry(before, zone, names[n - 1]) if before else None,
        next=_entry(after, zone, names[n + 1]) if after else None)
    return renderer.page("site_issue.html.j2", context)


def site_folders(config: Config) -> list[Path]:
    """The site folder and its subscribers' folders (for checks and temp-file cleanup)."""
    return [config.site, *(config.site / p.name for p in config.subscribers)]


def build(config: Config) -> SiteReport:
    """``digest build-site``: every page again from the store, under the data folder's lock.

    A missing store makes the index alone. Only files whose bytes change are written.
    """
    renderer = Renderer(config.templates)
    renderer.check()
    problems = [f"[digest].site_dir: {problem}" for folder in site_folders(config)
                if (problem := folder_problem(folder))]
    if problems:
        raise ConfigError(str(config.path), problems)
    with exclusive(config.data_dir, "build-site", wait=True):
        for folder in site_folders(config):  # leftovers of a killed writer (we hold the lock)
            remove_stale_temps(folder)
        secret = load_secret(config.data_dir)
        store = _open_store(config)
        try:
            with publishing(config.data_dir):
                return build_site(config, store, renderer, secret, full=True)
        finally:
            if store is not None:
                store.close()


def _open_store(config: Config) -> Store | None:
    """The store for writing the fingerprint when it may be written, else read-only."""
    if not config.has_store():
        return None
    try:
        return open_store(config)
    except StoreError:
        return read_only_store(config)
