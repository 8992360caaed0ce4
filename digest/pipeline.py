"""The only place stages meet: sources -> store -> rank -> render -> publish.

``run`` ingests every new dump in the inbox, makes each subscriber's digest of the
papers first seen since their previous one, and brings the feeds and the site up to date.
``preview`` does the same against the store read in place (``Store.snapshot``: what it
writes stays in memory) and writes nothing.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import json
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from . import __version__
from .config import Config, RankingConfig, SmtpConfig
from .errors import ConfigError, DigestError, InputError, MovedOn, StoreError
from .faults import checkpoint
from .feed import build_feed
from .fit import fit_html
from .fsutil import (
    TEMP_DIR,
    atomic_write,
    folder_problem,
    leftovers_possible,
    mark_clean,
    mark_unclean,
    publisher_id,
    publishing,
    remove_stale_temps,
)
from .links import links_for
from .lock import exclusive
from .mail import build_message, unsubscribe_for, wire_bytes
from .models import (
    Digest,
    LinkReport,
    Paper,
    ParsedDump,
    Profile,
    Ranked,
    Resolution,
    RunReport,
)
from .rank import Corpus, rank, stems_of
from .render import Renderer
from .send import SendReport, deliver, worker_name
from .site import build_site, site_current, stem
from .sources import inbox_files, iter_dumps
from .store import Cursor, Outgoing, Store, open_store, snapshot_store
from .tokens import load_secret

if TYPE_CHECKING:
    from concurrent.futures import Future

    import numpy as np

    from .embed import Embedder, VectorCache

Clock = Callable[[], datetime]
ENRICH_OFF_ENV = "DIGEST_ENRICH"  # "0": no lookups in this process (offline machines, tests)
ENRICH_URL_ENV = "DIGEST_ENRICH_URL"  # one base URL answering for both APIs (a mirror)
ENRICH_RETRY = timedelta(minutes=30)  # a lookup that could not finish waits this long,
ENRICH_TRIES = 6  # failures, doubling the wait each time, then it is given up (15.5 h)
SEMANTIC_OFF = "semantic ranking is off: the extra is not installed (pip install '.[semantic]')"
_told_semantic_off = False  # that line is said once per process (a daemon runs many times)


def utc_now() -> datetime:
    """The current time, UTC-aware."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Rendered:
    """One digest with its two renderings."""

    digest: Digest
    markdown: str
    html: str
    paths: tuple[str, str] | None = None  # where run wrote it (.md, .html); None in preview
    mail: Outgoing | None = None  # the e-mail queued for it, when it goes out by e-mail


@dataclass(frozen=True, slots=True)
class MailContext:
    """What making e-mails needs: the SMTP settings, the token key, who opted out."""

    smtp: SmtpConfig
    secret: bytes
    list_host: str
    unsubscribed: frozenset[str]
    store_id: str

    @classmethod
    def of(cls, config: Config, store: Store, *, create_secret: bool = True) -> MailContext | None:
        """None when e-mail is not configured."""
        if config.smtp is None:
            return None
        # A preview must write nothing: it signs with a throwaway key if none exists yet.
        secret = load_secret(config.data_dir, create=create_secret) or secrets.token_bytes(32)
        store_id = (store.set_meta_once("store_id", secrets.token_hex(16)) if create_secret
                    else store.meta("store_id") or "preview")
        host = urlsplit(config.site_url).hostname if config.site_url else None
        return cls(config.smtp, secret, host or config.smtp.sender.rpartition("@")[2],
                   frozenset(store.unsubscribed()), store_id)

    def message(self, config: Config, renderer: Renderer, digest: Digest,
                warn: Callable[[str], None] | None = None) -> Outgoing | None:
        """The e-mail of one digest, or None when this subscriber gets no mail. Abstracts
        are trimmed to a few sentences; a digest too large for Gmail's clip is cut to fit
        (``fit.fit_html``), pointing at its page on the site, and ``warn`` hears what was cut."""
        profile = digest.profile
        if not (profile.email and profile.mail) or profile.name in self.unsubscribed:
            return None
        links = links_for(config.site_url, self.secret, profile.name)
        unsub = unsubscribe_for(links, self.smtp.unsubscribe_mailto, profile.name)
        link = unsub.url or unsub.mailto
        # the issue's page on the site (named as site.py names it; generated_at is in the
        # config's zone here, as make_digests makes it)
        page = (f"{config.site_url}{profile.name}/{stem(digest.number, digest.generated_at)}"
                ".html" if config.site_url else None)
        html, plan = fit_html(
            digest, lambda d, p: renderer.html_page(d, link, links, mail=True, plan=p),
            more_url=page)
        if plan.cut and warn is not None:
            warn(f"the e-mail for {profile.name} was cut to fit {plan.limit // 1000} KB: "
                 f"{plan.describe()}")
        text = renderer.markdown(digest, link, links, mail=True, plan=plan)
        msg = build_message(digest, text, html, self.smtp, self.list_host, unsub, self.store_id)
        return Outgoing(profile.email, str(msg["Message-ID"]), str(msg["Subject"]),
                        wire_bytes(msg))


@dataclass(slots=True)
class Semantic:
    """The embedding model of one run (or one ``digest rank``) and the vector cache.

    ``computed`` counts texts the model embedded (cache misses); ``asked`` counts paper
    texts that had no vector in the store and went to the cache or the model.
    """

    embedder: Embedder
    cache: VectorCache
    computed: int = 0
    asked: int = 0
    _queries: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def model(self) -> str:
        """The model id vectors are stored under."""
        return self.embedder.id

    def embed(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Unit rows, one per text, through the cache."""
        from .embed import embed_texts

        matrix, computed = embed_texts(self.embedder, list(texts), cache=self.cache,
                                       progress=progress)
        self.computed += computed
        return matrix

    def paper_vectors(self, papers: Sequence[Paper]) -> np.ndarray:
        """Row i = the embedding of papers[i] (``digest rank``: no store, the cache only)."""
        from .embed import paper_text

        self.asked += len(papers)
        return self.embed([paper_text(p) for p in papers], progress=True)

    def query_vectors(self, profiles: Iterable[Profile]) -> dict[str, np.ndarray]:
        """Each of the profiles' ``query_texts`` -> its embedding; each text embedded once."""
        from .rank import query_texts

        wanted = [t for t in dict.fromkeys(t for p in profiles for t in query_texts(p))
                  if t not in self._queries]
        if wanted:
            self._queries.update(zip(wanted, self.embed(wanted), strict=True))
        return self._queries

    def dump_blobs(self, store: Store, dump: ParsedDump) -> tuple[str, dict[str, bytes]]:
        """(model id, {key: blob}) for the dump's papers the store has no vector of yet.

        Called before the dump's transaction; the blobs go in with the papers.
        """
        from .embed import paper_text, to_blob

        have = store.vectors(self.model, (p.key for p in dump.papers))
        outgrown = store.outgrown(dump.papers)  # their text changes: embed the new one
        missing = list({p.key: p for p in dump.papers
                        if p.key not in have or p.key in outgrown}.values())
        if not missing:
            return self.model, {}
        self.asked += len(missing)
        matrix = self.embed([paper_text(p) for p in missing], progress=True)
        return self.model, {p.key: to_blob(v) for p, v in zip(missing, matrix, strict=True)}

    def stored(self, store: Store, papers: Sequence[Paper]) -> np.ndarray | None:
        """The batch's vectors from the store (row i = papers[i]); None if any is missing."""
        import numpy as np

        from .embed import from_blob

        blobs = store.vectors(self.model, (p.key for p in papers))
        if len(blobs) < len({p.key for p in papers}):
            return None
        dim = self.embedder.dim
        return np.stack([from_blob(blobs[p.key], dim) for p in papers]) if papers else \
            np.zeros((0, dim), dtype=np.float32)

    def close(self) -> None:
        """Close the vector cache."""
        self.cache.close()


def semantic_for(ranking: RankingConfig, note: Callable[[str], None], *,
                 enabled: bool = True) -> Semantic | None:
    """The semantic signal as ``[ranking]`` asks for it, or None when it is off.

    With the optional extra missing, ``note`` hears ``SEMANTIC_OFF`` (once per process).
    A model that cannot be loaded is a ConfigError.
    """
    global _told_semantic_off
    if not (enabled and ranking.semantic):
        return None
    from . import embed

    if not embed.available(ranking.model):
        if not _told_semantic_off:
            _told_semantic_off = True
            note(SEMANTIC_OFF)
        return None
    embedder = embed.load(ranking.model)
    return Semantic(embedder, embed.VectorCache(embed.default_cache_path()))


def build_corpus(papers: Sequence[Paper], only: Iterable[str] | None = None,
                 vectors: np.ndarray | None = None) -> Corpus:
    """The one place a Corpus is built (row i of ``vectors`` = papers[i]'s embedding)."""
    return Corpus.build(papers, only, vectors=vectors)


def ingest(store: Store, paths: Iterable[Path], report: RunReport, now: Clock,
           kind: str = "run", subscribers: Sequence[str] = (),
           zone: tzinfo | None = None, semantic: Semantic | None = None,
           progress: Callable[[str], None] | None = None) -> None:
    """Ingest each dump not seen before (by content), one transaction per dump.

    A file that is not a dump is reported and skipped; the others still go in. With
    ``semantic``, the embeddings of its papers not embedded before are computed first and
    stored in the dump's transaction. ``progress`` hears a line per dump read.
    """
    run_id: int | None = None
    todo = [p for p in paths if not store.known_file(p)]
    for n, item in enumerate(iter_dumps(todo, zone), 1):
        if progress is not None:
            progress(f"ingesting {n}/{len(todo)}: {Path(item.path).name}")
        if isinstance(item, InputError):
            report.reject(str(item))
            continue
        for w in item.warnings:
            report.warn(str(w))
        previous = store.find_dump(item.sha256)
        if previous is not None:
            report.dumps_duplicate.append((item.path, previous.name))
            continue
        blobs = semantic.dump_blobs(store, item) if semantic else None
        try:
            result = store.ingest(item, run_id, kind, now(), subscribers, vectors=blobs)
        except InputError as exc:
            report.reject(str(exc))
            continue
        run_id = result.run_id
        report.dumps_ingested.append(item.path)
        report.new_per_dump[item.path] = len(result.new_keys)
        report.new_papers += len(result.new_keys)
    report.total_papers = store.paper_count()


class _StoreCache:
    """The store as enrich's ``Cache``: what was looked up, kept between runs."""

    def __init__(self, store: Store, now: Clock, days: Mapping[str, date]) -> None:
        self.store, self.now, self.days = store, now, days
        self.given_up: set[str] = set()

    def get(self, keys: Sequence[str]) -> dict[str, Resolution]:
        return self.store.resolutions(keys)

    def put(self, resolutions: Sequence[Resolution]) -> None:
        self.given_up.update(self.store.put_resolutions(
            resolutions, self.now(), self.days, retry=ENRICH_RETRY, tries=ENRICH_TRIES))


def enrichment_enabled(config: Config) -> bool:
    """``[digest] enrich``, unless ``$DIGEST_ENRICH`` is 0 / false / off."""
    off = os.environ.get(ENRICH_OFF_ENV, "").strip().casefold() in ("0", "false", "off", "no")
    return config.enrich and not off


def enrich_papers(store: Store, config: Config, report: RunReport, now: Clock,
                  progress: Callable[[str], None] | None = None) -> None:
    """Look up the links, arXiv ids and names of the papers new since the last pass that
    came without them (``enrich``), within ``[digest] enrich_budget`` seconds, and keep
    them in the store. Never fails a run: what cannot be found now links to a search for
    its title and is asked again next run."""
    try:
        _enrich(store, config, report, now, progress)
    except (StoreError, sqlite3.Error) as exc:  # e.g. the store is busy: links wait
        report.warn(f"digest: warning: paper links were not looked up ({exc}); they are "
                    "looked up next run")


def _enrich(store: Store, config: Config, report: RunReport, now: Clock,
            progress: Callable[[str], None] | None) -> None:
    from .enrich import ARXIV_BASE, HF_BASE, Client, enrich
    from .fetch import arxiv_free_at, note_arxiv

    upto = store.latest_run()
    todo = store.enrichment_todo(now())
    if not todo:
        if upto > int(store.meta("enriched_upto") or 0):
            store.enriched_upto(upto)
        return
    days = {paper.key: day for paper, day in todo if day is not None}
    base = os.environ.get(ENRICH_URL_ENV, "").strip()
    cache = _StoreCache(store, now, days)
    say = progress or (lambda _line: None)

    def step(asked: int, total: int, linked: int) -> None:
        say(f"linking papers: {asked}/{total} asked of arXiv, {linked} found")

    started = time.monotonic()
    try:
        with Client(hf_base=base or HF_BASE, arxiv_base=base or ARXIV_BASE) as client:
            found = enrich([p for p, _ in todo], days, cache, client, config.enrich_budget,
                           arxiv_after=arxiv_free_at(), on_arxiv=note_arxiv, progress=step)
    except (StoreError, sqlite3.Error):
        raise
    except Exception as exc:  # links are a nicety: the digest must go out all the same
        report.warn(f"digest: warning: looking up paper links failed ({type(exc).__name__}: "
                    f"{str(exc)[:200]}); those papers link to a search for their title and "
                    "are asked again next run")
        return
    pending = [r for r in found.values() if r.pending and r.key not in cache.given_up]
    report.links = LinkReport(
        looked_up=len(found), from_hf=sum(1 for r in found.values() if r.source == "hf-daily"),
        from_arxiv=sum(1 for r in found.values() if r.source == "arxiv"), pending=len(pending),
        seconds=round(time.monotonic() - started, 1),
        why_pending=tuple(sorted({r.reason.rpartition("; ")[2][:120] for r in pending}))[:3])
    store.enriched_upto(upto)


def make_digests(store: Store, config: Config, renderer: Renderer, now: Clock,
                 only: str | None = None, persist: bool = True,
                 mail: MailContext | None = None,
                 due: Mapping[str, datetime | None] | None = None,
                 semantic: Semantic | None = None,
                 warn: Callable[[str], None] | None = None,
                 secret: bytes | None = None) -> list[Rendered]:
    """Each subscriber's next digest (papers first seen since their last one), as a list
    (``iter_digests`` makes them one at a time)."""
    return list(iter_digests(store, config, renderer, now, only, persist, mail, due, semantic,
                             warn, secret))


RENDER_LEASE = timedelta(minutes=10)  # a reader claimed by a worker that died waits this


def iter_digests(store: Store, config: Config, renderer: Renderer, now: Clock,
                 only: str | None = None, persist: bool = True,
                 mail: MailContext | None = None,
                 due: Mapping[str, datetime | None] | None = None,
                 semantic: Semantic | None = None,
                 warn: Callable[[str], None] | None = None,
                 secret: bytes | None = None, *, worker: str | None = None,
                 start: int = 0, upto: int | None = None, held: list[str] | None = None,
                 stop: Callable[[], bool] | None = None) -> Iterator[Rendered]:
    """Each subscriber's next digest (papers first seen since their last one), made (and
    with ``persist`` published) one at a time, so memory does not grow with readers.

    A subscriber the store has not registered yet gets none: registration happens with
    the first ingest that follows, so they start with the papers of their first run.
    Papers the subscriber already voted on are left out (their votes still train).
    With ``secret`` (and ``site_url``) the renderings carry the reader's 👍/👎 links.

    With ``worker`` several workers (processes, hosts) share the readers: each reader is
    claimed (``Store.claim_reader``) and their cursor read again before their digest is
    made, and one another worker recorded meanwhile is skipped. ``start``: the reader to
    begin with (workers begin apart and go round, so they seldom meet). ``upto``: the
    newest run to cover, read under the ingest hold (by default the newest run; another
    host's ingest may be half done after it). ``held`` collects the readers left to
    another worker's live claim; ``stop`` ends the round early when it says so.
    """
    upto = store.latest_run() if upto is None else upto
    zone = ZoneInfo(config.timezone)
    stems: list[set[str]] = []  # worked out once, only if anyone gets a digest
    warn = _once(warn)
    # Subscribers at the same cursor (and with no votes on its papers) share one batch.
    batches: dict[int, Batch] = {}
    cursors = store.cursors(before=upto)  # only those with papers waiting
    order = list(config.subscribers)
    if order:
        order = order[start % len(order):] + order[:start % len(order)]
    for profile in order:
        if (only is not None and profile.name != only) or (due is not None and
                                                            profile.name not in due):
            continue
        if stop is not None and stop():
            return
        cursor = cursors.get(profile.name)
        if cursor is None or cursor.run >= upto:
            continue
        claimed = False
        if worker is not None and persist:
            cursor = store.cursor(profile.name)  # another worker may have done them
            if cursor is None or cursor.run >= upto:
                continue
            at = now()
            if not store.claim_reader(profile.name, worker, at + RENDER_LEASE, at):
                if held is not None:
                    held.append(profile.name)
                continue  # another worker is making it
            claimed = True
            cursor = store.cursor(profile.name)
            if cursor is None or cursor.run >= upto:
                store.release_reader(profile.name, worker)
                continue
        try:
            rendered = _one_digest(store, config, renderer, now, profile, cursor, upto,
                                   batches, zone, mail, semantic, warn, secret, stems)
            if rendered is not None and persist:
                slot = (f"digest:{profile.name}", due[profile.name]) if due is not None \
                    else None
                rendered = _publish_digest(store, config, cursor, upto, rendered, slot,
                                           worker if claimed else None)
        except BaseException:
            if claimed:
                with contextlib.suppress(StoreError, sqlite3.Error):
                    store.release_reader(profile.name, str(worker))
            raise
        if rendered is None:
            if claimed:
                store.release_reader(profile.name, str(worker))
            continue
        yield rendered


def _one_digest(store: Store, config: Config, renderer: Renderer, now: Clock,
                profile: Profile, cursor: Cursor, upto: int, batches: dict[int, Batch],
                zone: ZoneInfo, mail: MailContext | None, semantic: Semantic | None,
                warn: Callable[[str], None] | None, secret: bytes | None,
                stems: list[set[str]]) -> Rendered | None:
    """One reader's digest of the runs after their cursor (None: nothing for them).
    ``stems``: the readers' stems, worked out the first time anyone gets a digest."""
    if cursor.run not in batches:
        papers = store.papers_after(cursor.run, upto)
        batches[cursor.run] = Batch(papers, min(
            (p.first_seen for p in papers if p.first_seen), default=None))
    batch = batches[cursor.run]
    votes = store.votes(profile.name)
    judged = {v.paper.key for v in votes}
    papers = [p for p in batch.papers if p.key not in judged]
    if not papers:
        return None
    if not stems:
        stems.append(stems_of(config.subscribers))
    corpus, queries = batch.corpus(papers, stems[0], store, semantic, warn,
                                   config.subscribers)
    items, rest = rank(corpus, profile, votes, queries)
    generated = now().astimezone(zone)
    digest = Digest(
        title=config.title, profile=profile, number=cursor.last_issue + 1,
        generated_at=generated,
        covers_from=(cursor.last_digest_at or batch.first or generated).astimezone(zone)
        if cursor.last_issue else None,
        covers_to=generated, new_count=len(papers), items=tuple(items),
        others=tuple(rest[: config.also_new]), others_total=len(rest),
        page_dates=tuple(store.page_dates(cursor.run, upto)),
        feed_url=config.feed_url(profile.name) if profile.feed else None,
        intro=config.intro,
    )
    links = links_for(config.site_url, secret, profile.name)
    return Rendered(digest, renderer.markdown(digest, links=links),
                    renderer.html_page(digest, links=links),
                    mail=mail.message(config, renderer, digest, warn) if mail else None)


def _once(warn: Callable[[str], None] | None) -> Callable[[str], None] | None:
    """``warn``, saying each message at most once."""
    if warn is None:
        return None
    said: set[str] = set()

    def say(message: str) -> None:
        if message not in said:
            said.add(message)
            warn(message)
    return say


@dataclass(slots=True)
class Batch:
    """The papers of runs after one cursor, analysed once per set of papers ranked."""

    papers: list[Paper]
    first: datetime | None
    _corpora: dict[tuple[str, ...], Corpus] = field(default_factory=dict)

    def corpus(self, papers: list[Paper], stems: set[str], store: Store,
               semantic: Semantic | None, warn: Callable[[str], None] | None,
               profiles: Sequence[Profile]) -> tuple[Corpus, Mapping[str, np.ndarray] | None]:
        """The Corpus of ``papers`` (this batch, maybe less the reader's judged papers), with
        their stored vectors when every one has some, and the query vectors."""
        key = tuple(p.key for p in papers)
        found = self._corpora.get(key)
        if found is None:
            matrix = semantic.stored(store, papers) if semantic else None
            if semantic and matrix is None and warn:
                warn(f"{store.path}: warning: some new papers have no stored embedding for "
                     f"{semantic.model} (ingested while semantic ranking was off); this "
                     "digest is ranked without the semantic signal")
            found = self._corpora[key] = build_corpus(papers, stems, matrix)
        return found, semantic.query_vectors(profiles) if semantic else None


def _publish_digest(store: Store, config: Config, cursor: Cursor, upto: int,
                    rendered: Rendered, slot: tuple[str, datetime | None] | None,
                    claim: str | None = None) -> Rendered | None:
    """Record one digest and write its files, in the transaction that moves the reader's
    cursor (None: another worker recorded this issue first, after this one's lease ran
    out, or a helper of a killed run did; nothing of ours was written)."""
    digest = rendered.digest
    name = stem(digest.number, digest.generated_at)
    folder = config.digests_dir / digest.profile.name
    md_path, html_path = folder / f"{name}.md", folder / f"{name}.html"

    def write() -> None:  # the cursor is ours: no other worker writes this issue now
        if folder.is_dir():  # files of this issue number that a crash left unrecorded
            for stale in folder.glob(f"{digest.number:04d}-*"):
                if stale not in (md_path, html_path) and stale.suffix in (".md", ".html"):
                    stale.unlink()
        atomic_write(md_path, rendered.markdown.encode("utf-8"))
        atomic_write(html_path, rendered.html.encode("utf-8"))
        checkpoint("run:after-render")

    try:
        store.record_issue(digest.profile.name, digest.number, cursor.run, upto,
                           digest.generated_at, digest.new_count, digest.items,
                           (str(md_path), str(html_path)), rendered.mail, slot, claim, write)
    except MovedOn:  # another worker (or a helper of a run that was killed) recorded it
        return None
    return Rendered(digest, rendered.markdown, rendered.html, (str(md_path), str(html_path)),
                    rendered.mail)


def feed_identity(store: Store, config: Config, now: Clock) -> tuple[str, str, datetime]:
    """(tag authority, tag date, empty-feed time): minted once per store, then fixed."""
    host = urlsplit(config.site_url).hostname if config.site_url else None
    authority = store.set_meta_once("tag_authority", host or "digest.invalid")
    created = store.set_meta_once("created_at", now().astimezone(UTC).isoformat(
        timespec="seconds"))
    tag_date = created[:10]
    return authority, tag_date, datetime.fromisoformat(created)


FEED_FINGERPRINT = "feed_fingerprint:"  # store meta, + publisher:name: what made a feed


@functools.cache
def _code_hash() -> str:
    """The code that shapes a feed's bytes: this package's version and its rendering
    modules (a checkout edited in place changes them without a new version)."""
    from . import feed as feed_module
    from . import identity as identity_module
    from . import render as render_module

    parts = [__version__, importlib.metadata.version("feedgen")]
    for module in (feed_module, render_module, identity_module):
        with contextlib.suppress(OSError, TypeError):
            parts.append(hashlib.sha256(Path(str(module.__file__)).read_bytes()).hexdigest())
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def feed_fingerprints(config: Config, renderer: Renderer, identity: tuple[str, str, datetime]
                      ) -> dict[str, str]:
    """Per reader with a feed: a hash of everything but the store's issues that shapes
    the feed's bytes (templates, code, the feed's identity, title, URL, size, keywords)."""
    common = _feed_common(config, renderer, identity)
    return {p.name: hashlib.sha256(json.dumps(
        [common, p.name, config.feed_url(p.name), [[k.term, k.weight] for k in p.keywords]],
        default=str).encode()).hexdigest() for p in config.subscribers if p.feed}


FEEDS_BUILT = "feeds_built:"  # store meta, + publisher: the state its feeds were current in


def feeds_state(store: Store, config: Config, renderer: Renderer,
                identity: tuple[str, str, datetime]) -> str:
    """One hash of what all the feeds are made from: what every fingerprint hashes, the
    newest issue, and how many feeds are known current (a changed paper drops its feeds'
    fingerprints). "" while a feed was built with an entry left out (marked partial)."""
    state = store.feed_state(f"{FEED_FINGERPRINT}{publisher_id(config.data_dir)}:")
    if state[2]:
        return ""  # a feed left an entry out: it is tried (and told) again every run
    common = _feed_common(config, renderer, identity)
    return hashlib.sha256(json.dumps([common, _feed_readers(config), state],
                                     default=str).encode()).hexdigest()


# config id -> (config, its feed readers' JSON, their feed files)
_READERS: dict[int, tuple[Config, str, tuple[str, ...]]] = {}


def _per_config(config: Config) -> tuple[str, tuple[str, ...]]:
    """What each reader's feed is made of (as JSON) and their feed files: worked out once
    per config object (a daemon keeps one for its life)."""
    kept = _READERS.get(id(config))
    if kept is None or kept[0] is not config:
        _READERS.clear()
        folder = str(config.feeds_dir)
        kept = _READERS[id(config)] = (config, json.dumps(
            [[p.name, config.feed_url(p.name), [[k.term, k.weight] for k in p.keywords]]
             for p in config.subscribers if p.feed]), tuple(
            os.path.join(folder, f"{p.name}.atom") for p in config.subscribers if p.feed))
    return kept[1], kept[2]


def _feed_readers(config: Config) -> str:
    return _per_config(config)[0]


def feeds_current(store: Store, config: Config, renderer: Renderer, now: Clock) -> bool:
    """True when ``write_feeds`` would build no feed now (its quick check)."""
    state = feeds_state(store, config, renderer, feed_identity(store, config, now))
    return bool(state) and store.meta(FEEDS_BUILT + publisher_id(config.data_dir)) == state and \
        _feeds_there(config)


def _feed_paths(config: Config) -> list[str]:
    return list(_per_config(config)[1])


def _feeds_there(config: Config) -> bool:
    """Every reader's feed is a file in the feeds folder (one listing)."""
    try:
        with os.scandir(config.feeds_dir) as entries:
            there = {e.name for e in entries if e.is_file()}
    except OSError:
        there = set()
    return there.issuperset(f"{p.name}.atom" for p in config.subscribers if p.feed)


def _feed_common(config: Config, renderer: Renderer, identity: tuple[str, str, datetime]
                 ) -> str:
    common = json.dumps({
        "code": _code_hash(), "override": renderer.override_hashes(),
        "templates": {n: renderer.source_hash(n)
                      for n in dict.fromkeys((*renderer.TEMPLATES, *renderer.SITE_TEMPLATES))},
        "identity": [identity[0], identity[1], identity[2].isoformat()],
        "title": config.title, "size": config.feed_size}, sort_keys=True)
    return common


def _sha_of(value: object) -> str:
    return hashlib.sha256(repr(value).encode("utf-8", "surrogatepass")).hexdigest()


def write_feeds(store: Store, config: Config, renderer: Renderer, now: Clock,
                report: RunReport) -> None:
    """Bring every subscriber's feed up to date with the store; rewrite only what changed.

    A feed is built only when what makes it differs from what it was last built from
    (the store's meta ``feed_fingerprint:<name>``: the reader's feed fingerprint and a hash
    of the issue rows in the window; a paper in it changing drops the setting) or its file
    is missing: a run that recorded no issue builds none. A build renders only the entries
    whose kept HTML (``feed_entries``) was made from other inputs. The file is written
    before the setting is kept, so a crash between the two makes the next run build again.
    """
    identity = feed_identity(store, config, now)
    authority, tag_date, created = identity
    state = feeds_state(store, config, renderer, identity)
    me = publisher_id(config.data_dir)  # each data folder publishes its own feeds
    if state and store.meta(FEEDS_BUILT + me) == state and _feeds_there(config):
        report.feeds_unchanged += _feed_paths(config)  # nothing changed; every file is there
        return
    marks = feed_fingerprints(config, renderer, identity)
    for profile in config.subscribers:
        if not profile.feed:
            continue
        path = config.feeds_dir / f"{profile.name}.atom"
        mark = marks[profile.name]
        built_from = (f"{mark} {_sha_of(store.feed_sources(profile.name, config.feed_size))}"
                      f" {store.feed_generation(profile.name)}")
        key = f"{FEED_FINGERPRINT}{me}:{profile.name}"
        if store.meta(key) == built_from and path.is_file():
            report.feeds_unchanged.append(str(path))
            continue

        left_out: list[str] = []

        def warn(message: str, path: Path = path, left_out: list[str] = left_out) -> None:
            left_out.append(message)
            report.warn(f"{path}: warning: {message}")

        window = store.feed_window(profile.name, config.feed_size)
        sources = [_sha_of((mark, row)) for _, _, row, _ in window]
        made: list[tuple[int, int, str, str]] = []

        def content(n: int, item: Ranked, profile: Profile = profile,
                    window: list[tuple[int, Ranked, tuple[object, ...],
                                       tuple[str, str] | None]] = window,
                    sources: list[str] = sources,
                    made: list[tuple[int, int, str, str]] = made) -> str:
            kept = window[n][3]
            if kept is not None and kept[0] == sources[n]:
                return kept[1]
            html = renderer.feed_entry(item, profile.keywords)
            made.append((window[n][0], item.rank, sources[n], html))
            return html

        data = build_feed(
            authority=authority, tag_date=tag_date, name=profile.name, title=config.title,
            self_url=config.feed_url(profile.name), items=[item for _, item, _, _ in window],
            keywords=profile.keywords, renderer=renderer, empty_updated=created, warn=warn,
            content=content)
        (report.feeds_written if atomic_write(path, data) else report.feeds_unchanged).append(
            str(path))
        store.keep_feed_entries(profile.name, made,
                                oldest=min((i for i, _, _, _ in window), default=None),
                                # an entry left out is tried (and told) again next run
                                meta=(key,
                                      f"{built_from} partial" if left_out else built_from))
    with contextlib.suppress(StoreError):  # not kept: the next run checks each feed again
        store.set_meta(FEEDS_BUILT + me, feeds_state(store, config, renderer, identity))


_RENDERERS: dict[tuple[str, tuple[tuple[str, int, int], ...]], Renderer] = {}


def checked_renderer(templates: Path | None) -> Renderer:
    """A Renderer whose every template compiled (``Renderer.check``), kept for the next run
    of this process (a daemon's tick) while the override folder lists the same files with
    the same sizes and times: compiling the templates is most of an idle tick."""
    listing: list[tuple[str, int, int]] = []
    if templates is not None and templates.is_dir():
        for path in sorted(templates.rglob("*")):
            with contextlib.suppress(OSError):
                st = path.stat()
                listing.append((str(path), st.st_size, st.st_mtime_ns))
    key = (str(templates), tuple(listing))
    found = _RENDERERS.get(key)
    if found is None:
        found = Renderer(templates)
        found.check()
        _RENDERERS.clear()  # one at a time: an edited folder's old one goes
        _RENDERERS[key] = found
    return found


def run(config: Config, *, now: Clock = utc_now, extra: Iterable[Path] = (),
        report: RunReport | None = None, send: bool = True,
        progress: Callable[[str], None] | None = None,
        due: Mapping[str, datetime | None] | None = None,
        wait: bool = False, semantic: Semantic | None = None,
        workers: int = 1) -> RunReport:
    """The main job: ingest the inbox, publish digests, regenerate feeds and the site,
    send e-mail.

    With ``due`` (name -> cadence slot) only those subscribers get a digest now, and each
    slot is marked done in the transaction that records the digest; the others' new papers
    wait for their own slot. ``wait`` queues behind another run. ``semantic`` is a model
    loaded already (a daemon's, kept across runs); by default ``[ranking]`` says.
    ``workers``: processes making the digests (this one and ``workers - 1`` more).
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    report = report or RunReport()
    if config.smtp is not None:
        config.smtp.password()  # a missing password is an error before anything is rendered
    if not config.inbox.is_dir():
        report.warn(f"{config.inbox}: warning: the inbox folder does not exist; "
                    "create it and drop page dumps there (key [digest].inbox)")
    renderer = checked_renderer(config.templates)  # broken templates stop it before ingest
    with exclusive(config.data_dir, "run", wait=wait):
        _run_locked(config, renderer, now, extra, report, send, progress, due, semantic, wait,
                    workers)
    return report


def _run_locked(config: Config, renderer: Renderer, now: Clock, extra: Iterable[Path],
                report: RunReport, send: bool, progress: Callable[[str], None] | None,
                due: Mapping[str, datetime | None] | None,
                semantic: Semantic | None, wait: bool = False, workers: int = 1) -> None:
    # Before anything is recorded (or a new store made): nothing half-published. An existing
    # store is asked below which readers can get an issue, and only their folders checked.
    none = () if config.has_store() else None
    check_output_folders(config, digests=none, site=none, feeds=none)
    remove_leftovers(config, report)
    store = open_store(config)
    own = semantic is None
    try:
        semantic = semantic or semantic_for(config.ranking, _note(report))
        _run_store(store, config, renderer, now, extra, report, send, progress, due,
                   semantic, wait, workers)
    finally:
        store.close()
        if semantic is not None and own:
            semantic.close()


def _run_store(store: Store, config: Config, renderer: Renderer, now: Clock,
               extra: Iterable[Path], report: RunReport, send: bool,
               progress: Callable[[str], None] | None,
               due: Mapping[str, datetime | None] | None, semantic: Semantic | None,
               wait: bool, workers: int) -> None:
    # Ingest (and link lookups) one run at a time among every host on the store (a paper
    # is new in exactly one run); digests are claimed per reader, so runs on several
    # hosts, and a run's workers, share the publishing.
    with store.hold("ingest", wait=wait):
        files = [p for p in [*inbox_files(config.inbox), *extra] if not store.known_file(p)]
        # Before ingest: with a file to ingest anyone may get an issue; without, only those
        # already behind (their digest folders; the feeds and the site are checked below).
        behind = None if files else store.behind()
        check_output_folders(config, digests=behind, site=behind, feeds=behind)
        ingest(store, files, report, now,
               subscribers=[p.name for p in config.subscribers],
               zone=ZoneInfo(config.timezone), semantic=semantic, progress=progress)
        checkpoint("run:after-ingest")
        if enrichment_enabled(config):
            enrich_papers(store, config, report, now, progress)
        # Read under the hold: another host's ingest, one transaction per dump, may add
        # papers to its run after this; they wait for the next digest, never skipped.
        upto = store.latest_run()
    quiet = False
    if not files:
        # The feeds and the site are rebuilt only if something that makes them changed
        # (a late link, an edited config): then any reader's feed or pages may be
        # written, so all of them are checked before an issue is recorded.
        feeds_ok = feeds_current(store, config, renderer, now)
        site_ok = site_current(config, store, renderer, load_secret(
            config.data_dir, create=False) if config.site_url else None)
        quiet = feeds_ok and site_ok
        if not quiet:
            check_output_folders(config, digests=(), site=() if site_ok else None,
                                 feeds=() if feeds_ok else None)
    mail, secret = _mail_and_secret(config, store)
    with publishing(config.data_dir):
        failed = _publish(store, config, renderer, now, report, mail, due, semantic, secret,
                          quiet, upto, workers)
    checkpoint("run:before-send")
    if send and config.smtp is not None:
        report.delivery = deliver(store, config.smtp, now, allowed=mail_recipients(config),
                                  progress=progress)
    if failed:  # what every worker recorded is published and sent: now say what failed
        mark_unclean(config.data_dir)  # a helper's write may have been cut short
        raise failed[0]


def _publish(store: Store, config: Config, renderer: Renderer, now: Clock,
             report: RunReport, mail: MailContext | None,
             due: Mapping[str, datetime | None] | None, semantic: Semantic | None,
             secret: bytes | None, quiet: bool, upto: int,
             workers: int = 1) -> list[BaseException]:
    """Digests, feeds and the site: everything a run writes into the output folders.
    ``quiet``: the feeds and the site were found current; with no issue recorded since,
    they still are. Each digest is published as it is made and only its summary kept.
    Returns what went wrong in helper processes (raised by the caller once the digests
    they and this process recorded are published and sent). ``upto``: the newest run to
    cover, read under the ingest hold."""
    # No more workers than readers waiting (only asked when there is more than one).
    workers = min(workers, _waiting(store, config, due, upto)) if workers > 1 else 1
    helpers, stop = _start_helpers(config, now, due, upto, workers, report.warn)
    # On SQLite one run at a time uses the store (the data folder's lock): claims are
    # needed only among its own workers. On a server another host's run may share it.
    shared = bool(helpers) or store.engine != "sqlite"
    try:
        for rendered in iter_digests(store, config, renderer, now, mail=mail, due=due,
                                     semantic=semantic, warn=report.warn, secret=secret,
                                     worker=worker_name(0) if shared else None, upto=upto,
                                     held=report.held):
            report.digests.append(_summary(rendered, 0))
    except BaseException:
        if stop is not None:
            stop.set()  # each helper finishes the reader in hand, then returns
        for helper in helpers:  # wait for them (what they recorded stands); ours is raised
            with contextlib.suppress(BaseException):
                helper.exception()
        raise
    failed: list[BaseException] = []
    for n, helper in enumerate(helpers, 1):
        try:
            digests, warnings, held, error = helper.result()
        except BrokenProcessPool:
            failed.append(DigestError(
                f"{config.data_dir}: digest worker {n} died (killed, or out of memory); "
                "every digest recorded stands, and the readers it held get theirs from a "
                f"run {int(RENDER_LEASE.total_seconds() // 60)} minutes on at the latest "
                "(their claim's lease)"))
            continue
        except BaseException as exc:  # the others are still waited for
            failed.append(exc)
            continue
        report.digests += digests
        report.held += held
        for line in warnings:
            report.warn(line)
        if error is not None:
            failed.append(error.exception(n))
    order = {p.name: n for n, p in enumerate(config.subscribers)}
    report.digests.sort(key=lambda d: order.get(str(d["subscriber"]), len(order)))
    if quiet and not report.digests:
        report.feeds_unchanged += _feed_paths(config)
        return failed
    write_feeds(store, config, renderer, now, report)
    site = build_site(config, store, renderer, secret,
                      subscribers={str(d["subscriber"]) for d in report.digests})
    report.site_written += site.written
    return failed


def _waiting(store: Store, config: Config, due: Mapping[str, datetime | None] | None,
             upto: int) -> int:
    """How many readers (due, if ``due``) have papers waiting: more workers than that
    would have nothing to do."""
    behind = store.cursors(before=upto)
    return sum(1 for p in config.subscribers
               if p.name in behind and (due is None or p.name in due))


def _summary(rendered: Rendered, worker: int) -> dict[str, object]:
    """What a run reports of a digest it published (the renderings themselves go);
    ``worker``: which of the run's processes made it (0: the run's own)."""
    d = rendered.digest
    return {"worker": worker, "subscriber": d.profile.name, "issue": d.number, "new": d.new_count,
            "matched": len(d.items), "markdown": rendered.paths[0] if rendered.paths else None,
            "html": rendered.paths[1] if rendered.paths else None,
            "mail": rendered.mail.recipient if rendered.mail else None}


def _mail_and_secret(config: Config, store: Store) -> tuple[MailContext | None, bytes | None]:
    """What making e-mails needs, and the key of the vote and unsubscribe links."""
    mail = MailContext.of(config, store)
    return mail, mail.secret if mail else load_secret(config.data_dir) if config.site_url \
        else None


@dataclass(frozen=True, slots=True)
class HelperError:
    """What went wrong in a helper process, as plain data (any exception crosses back)."""

    kind: str
    message: str
    exit_code: int
    trace: str | None  # a bug's traceback (a DigestError explains itself)

    def exception(self, n: int) -> DigestError:
        error = DigestError(f"digest worker {n}: {self.message}" + (
            f"\n{self.trace}" if self.trace else ""))
        error.exit_code = self.exit_code
        return error


Share = tuple[list[dict[str, object]], list[str], list[str], HelperError | None]
_STOP: Any = None  # in a helper process: the run's stop event


def _helper_init(stop: Any, parent: int) -> None:
    """A helper's start: SIGINT (Ctrl-C reaches the whole process group) and SIGTERM
    (systemd stops every process of the service) finish the reader in hand, then return;
    the run's process decides what to do. If the run's process dies, so does the helper,
    at once, as in a crash (on Linux: nothing would read its result, and it would wait
    for that forever)."""
    import signal

    global _STOP
    _STOP = stop
    with contextlib.suppress(Exception):  # Linux only: elsewhere ``stop`` sees it
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before that
        os._exit(1)
    signal.signal(signal.SIGINT, lambda _n, _f: stop.set())
    signal.signal(signal.SIGTERM, lambda _n, _f: stop.set())


def _start_helpers(config: Config, now: Clock, due: Mapping[str, datetime | None] | None,
                   upto: int, workers: int, warn: Callable[[str], None]
                   ) -> tuple[list[Future[Share]], Any]:
    """``workers - 1`` processes making digests beside this one, each starting its round
    of the readers at its own share; each in a pool of its own, so one that dies takes
    no other with it. Also the event that tells them to stop."""
    if workers < 2:
        return [], None
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    share = max(1, len(config.subscribers) // workers)
    started: list[Future[Share]] = []
    for n in range(1, workers):
        try:
            pool = ProcessPoolExecutor(1, mp_context=context, initializer=_helper_init,
                                       initargs=(stop, os.getpid()))
            try:
                started.append(pool.submit(render_share, config, now,
                                           dict(due) if due is not None else None, upto, n,
                                           n * share, os.getpid()))
            finally:
                pool.shutdown(wait=False)  # the process ends with its task
        except OSError as exc:  # out of processes or files: the ones started work on
            warn(f"digest: warning: could not start digest worker {n} ({exc.strerror or exc});"
                 f" going on with {len(started) + 1}; lower --workers")
            break
    return started, stop


def render_share(config: Config, now: Clock, due: Mapping[str, datetime | None] | None,
                 upto: int, n: int, start: int, parent: int) -> Share:
    """A helper process of ``run --workers``: make and publish the digests no other
    worker has claimed, beginning at reader ``start``, while the run's process
    (``parent``) lives and has not said stop; (their summaries, warnings, readers left to
    another worker's claim, what went wrong or None)."""
    warnings: list[str] = []
    held: list[str] = []
    digests: list[dict[str, object]] = []

    def stop() -> bool:
        return os.getppid() != parent or (_STOP is not None and _STOP.is_set())

    try:
        # Never puts the clean mark back: the run's own section answers for it.
        with publishing(config.data_dir, restore=False):
            store = open_store(config)
            semantic = None
            try:
                semantic = semantic_for(config.ranking,
                                        lambda line: warnings.append(f"digest: {line}"))
                renderer = checked_renderer(config.templates)
                mail, secret = _mail_and_secret(config, store)
                for rendered in iter_digests(
                        store, config, renderer, now, mail=mail, due=due, semantic=semantic,
                        warn=warnings.append, secret=secret, worker=worker_name(n),
                        start=start, upto=upto, held=held, stop=stop):
                    digests.append(_summary(rendered, n))
            finally:
                store.close()
                if semantic is not None:
                    semantic.close()
    except BaseException as exc:  # told to the run, raised once all is out
        import traceback

        mine = isinstance(exc, DigestError)
        return digests, warnings, held, HelperError(
            type(exc).__name__, str(exc) if mine else f"{type(exc).__name__}: {exc}",
            exc.exit_code if isinstance(exc, DigestError) else 1,
            None if mine else traceback.format_exc())
    return digests, warnings, held, None


def _note(report: RunReport) -> Callable[[str], None]:
    return lambda line: report.warn(f"digest: {line}")


def _readers(config: Config, names: Collection[str] | None) -> list[str]:
    """The configured readers among ``names`` (None: all of them)."""
    if names is None:
        return [p.name for p in config.subscribers]
    return [p.name for p in config.subscribers if p.name in names] if names else []


def output_folders(config: Config, *, digests: Collection[str] | None = None,
                   site: Collection[str] | None = None) -> list[tuple[str, Path]]:
    """(config key, folder) of the folders a run publishes into: the shared ones, and the
    digest and site folders of the readers named (None: every reader)."""
    folders = [("feeds_dir", config.feeds_dir)] if any(p.feed for p in config.subscribers) \
        else []
    folders.append(("data_dir", config.digests_dir))
    folders += [("data_dir", config.digests_dir / name) for name in _readers(config, digests)]
    folders += [("site_dir", config.site), *(("site_dir", config.site / name)
                                             for name in _readers(config, site))]
    return folders


def check_output_folders(config: Config, *, digests: Collection[str] | None = None,
                         site: Collection[str] | None = None,
                         feeds: Collection[str] | None = None) -> None:
    """ConfigError naming the key and the path when a run could not publish its files.

    Checked before anything is recorded, so a run never records digests it then cannot
    write (or feeds it cannot update). Read-only: a missing folder only needs a writable
    parent. ``digests``, ``site``, ``feeds``: whose folders (and feed files) to check;
    None: everyone's.
    """
    problems = [f"[digest].{key}: {problem}" for key, folder in
                output_folders(config, digests=digests, site=site)
                if (problem := folder_problem(folder))]
    wanted = {f"{name}.atom" for name in _readers(config, feeds)} & {
        f"{p.name}.atom" for p in config.subscribers if p.feed}
    if wanted:
        with contextlib.suppress(OSError), os.scandir(config.feeds_dir) as entries:
            problems += [f"[digest].feeds_dir: {e.path} is a folder, not a file; remove it so "
                         "the feed can be written" for e in entries
                         if e.name in wanted and e.is_dir()]
    if problems:
        raise ConfigError(str(config.path), problems)


def remove_leftovers(config: Config, report: RunReport) -> None:
    """Remove the temporary files that a killed run left in the output folders.

    Only names of digest's own temporary-file pattern, only in the folders it publishes
    into, and only while the run lock is held (so no writer is using one).
    """
    if not leftovers_possible(config.data_dir):
        return  # every write of ours finished: nothing can have been left
    folders = {str(config.feeds_dir), str(config.data_dir / "outbox"), str(config.site)}
    for parent in (config.digests_dir, config.site):
        with contextlib.suppress(OSError), os.scandir(parent) as entries:  # none yet
            folders.update(e.path for e in entries
                           if e.is_dir(follow_symlinks=False) and e.name != TEMP_DIR)
    stuck = False  # every folder is listed (this is rare): earlier versions' names too
    for folder in sorted(folders):
        for path, why in remove_stale_temps(Path(folder)):
            stuck = True
            report.warn(f"{path}: warning: cannot remove this temporary file of an "
                        f"interrupted run: {why}")
    if not stuck and config.data_dir.is_dir():
        mark_clean(config.data_dir)


def mail_recipients(config: Config) -> set[str]:
    """Subscribers the config still wants to e-mail (queued mail of others is cancelled)."""
    return {p.name for p in config.subscribers if p.email and p.mail}


def send_pending(config: Config, *, now: Clock = utc_now, dry_run: bool = False,
                 progress: Callable[[str], None] | None = None,
                 workers: int = 1) -> tuple[SendReport, list[Path]]:
    """Deliver every pending message now, over ``workers`` SMTP connections at once (or,
    dry, write them as .eml files and mark nothing).

    Sending takes no data-folder lock: each message is claimed before it is sent, so other
    senders (a run, another ``digest send``, another host on a PostgreSQL store) may work
    at the same time and none sends a message another holds.
    """
    if config.smtp is None and not dry_run:
        raise ConfigError(str(config.path), ["[smtp]: missing: add an [smtp] table to send "
                                             "e-mail (see README, E-mail)"])
    if config.smtp is not None and not dry_run:
        config.smtp.password()
    if dry_run:
        with exclusive(config.data_dir, "send"):
            store = open_store(config)
            try:
                written = []
                with publishing(config.data_dir):
                    for d in store.deliveries(("pending",)):
                        path = config.data_dir / "outbox" / f"{d.subscriber}-{d.issue:04d}.eml"
                        atomic_write(path, d.raw)
                        written.append(path)
                return SendReport(), written
            finally:
                store.close()
    assert config.smtp is not None
    store = open_store(config)
    try:
        if workers == 1:
            return deliver(store, config.smtp, now, due_only=False,
                           allowed=mail_recipients(config), progress=progress), []
        from .send import deliver_parallel

        return deliver_parallel(lambda: open_store(config), config.smtp, now, workers,
                                store=store, due_only=False, allowed=mail_recipients(config),
                                progress=progress), []
    finally:
        store.close()


def backfill(config: Config, paths: Iterable[Path], *, now: Clock = utc_now,
             report: RunReport | None = None) -> RunReport:
    """Add dumps to the store as already seen: they never appear in any digest."""
    report = report or RunReport()
    with exclusive(config.data_dir, "ingest"):
        store = open_store(config)
        try:
            with store.hold("ingest"):
                ingest(store, paths, report, now, kind="backfill",
                       zone=ZoneInfo(config.timezone))
        finally:
            store.close()
    return report


def preview(config: Config, *, subscriber: str | None = None, dumps: Iterable[Path] = (),
            now: Clock = utc_now,
            report: RunReport | None = None) -> tuple[RunReport, list[Rendered]]:
    """The next digests as ``run`` would make them now; nothing is written anywhere."""
    if subscriber is not None:
        config.subscriber(subscriber)  # a clear error for an unknown name
    report = report or RunReport()
    renderer = Renderer(config.templates)
    renderer.check()
    semantic = semantic_for(config.ranking, _note(report))
    store = snapshot_store(config)
    try:  # what ingest writes (vectors too) stays in memory (and the vector cache)
        ingest(store, [*inbox_files(config.inbox), *dumps], report, now,
               subscribers=[p.name for p in config.subscribers], zone=ZoneInfo(config.timezone),
               semantic=semantic)
        mail = MailContext.of(config, store, create_secret=False)
        secret = load_secret(config.data_dir, create=False) or (mail.secret if mail else None)
        rendered = make_digests(store, config, renderer, now, only=subscriber, persist=False,
                                mail=mail, semantic=semantic, warn=report.warn, secret=secret)
    finally:
        store.close()
        if semantic is not None:
            semantic.close()
    return report, rendered
