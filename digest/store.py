"""The seen-paper store: one SQLite file (WAL), schema migrated on open.

Invariants:
* a paper's ``key`` never changes once stored (feed ids are minted from it);
* ingesting one dump is one transaction: all of its papers and sightings or none;
* ``papers.first_run`` orders papers by the run that first saw them, so "new since
  a subscriber's last digest" is an index range scan, never a read of the store;
* recording a digest issue and advancing the subscriber's cursor is one transaction;
  the issue's matched keywords (``issues.terms``) are kept in it;
* ``snapshot`` (preview, status) reads the file in place and keeps its writes in memory;
* a kept feed entry (``feed_entries``) is used only while the hash of what made it holds.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InputError, MovedOn, StoreError, UsageError
from .faults import checkpoint
from .identity import normalise_arxiv_id, normalise_title
from .models import INTEREST, Match, Paper, ParsedDump, Ranked, Resolution, Vote
from .schema import MIGRATIONS

if TYPE_CHECKING:
    from .config import Config

_PAPER_COLUMNS = (
    "p.key, p.title, p.abstract, p.authors, p.author_names, p.published, p.date_raw, "
    "p.upvotes, p.links, p.arxiv_id, p.url, p.first_seen, p.summary, p.version"
)
_N_PAPER_COLUMNS = _PAPER_COLUMNS.count(",") + 1


@dataclass(frozen=True, slots=True)
class DumpRecord:
    """A dump the store has already ingested."""

    id: int
    name: str
    sha256: str
    run_id: int
    ingested_at: datetime


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What ingesting one dump changed."""

    dump_id: int
    run_id: int
    new_keys: tuple[str, ...]
    seen: int


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A rendered e-mail waiting in (or written to) the outbox."""

    recipient: str
    message_id: str
    subject: str
    raw: bytes


@dataclass(frozen=True, slots=True)
class Delivery:
    """One outbox row."""

    id: int
    subscriber: str
    issue: int
    recipient: str
    message_id: str
    subject: str
    raw: bytes
    status: str
    attempts: int
    uncertain: int  # tries the server never confirmed (the message may have arrived)
    next_attempt_at: datetime
    last_error: str | None
    sent_at: datetime | None
    uncertain_since: datetime | None = None  # when the first unconfirmed try was made
    failed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class IssueRecord:
    """One published digest issue of a subscriber (what the site's pages are made of)."""

    id: int
    subscriber: str
    number: int
    from_run: int
    to_run: int
    generated_at: datetime
    new_papers: int
    matched: int


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a subscriber's digests stand: papers of runs after ``run`` are unsent."""

    name: str
    run: int
    last_issue: int
    last_digest_at: datetime | None


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds")


def _parse_ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _matches_json(item: Ranked) -> str:
    """A ranked item's explanation: its matches, and what the learned signals added."""
    matches = [[m.term, m.weight, m.title_hits, m.abstract_hits, m.contribution, m.via]
               for m in item.matches]
    if not item.similar and not item.learned:
        return json.dumps(matches)  # the form every store had before votes
    return json.dumps({"matches": matches, "similar": list(item.similar),
                       "learned": item.learned})


def _ranked_from(paper: Paper, score: float, explained: str, rank: int) -> Ranked:
    found = json.loads(explained)
    if isinstance(found, list):
        found = {"matches": found}
    return Ranked(paper, score, tuple(Match(*m) for m in found["matches"]), rank,
                  tuple(found.get("similar", ())), bool(found.get("learned", False)))


def _ranked_row(row: sqlite3.Row | tuple[object, ...]) -> Ranked:
    """A ranked item from ``{_PAPER_COLUMNS}, score, matches, rank, ...`` (what follows the
    three is the caller's)."""
    score, explained, rank = tuple(row)[_N_PAPER_COLUMNS:_N_PAPER_COLUMNS + 3]
    return _ranked_from(_paper_from_row(row), float(str(score)), str(explained),
                        int(str(rank)))


_TERMS_MIGRATION = 7  # the migration that adds issues.terms (filled by _fill_issue_terms)
_ENRICH_MIGRATION = 8  # the migration that adds enrichment and stale_pages
_CHANGES_MIGRATION = 10  # the migration that adds feed_changes and page_changes
_CLAIMS_MIGRATION = 11  # the migration that adds render_claims and tallies


def _item_terms(item: Ranked) -> list[str]:
    """The keywords one ranked paper matched, each once (interest-sentence words are not
    keywords and are left out): what an issue's ``terms`` column lists, paper by paper."""
    return list(dict.fromkeys(m.via or m.term for m in item.matches if m.via != INTEREST))


def _json_terms(explained: str) -> list[str]:
    """``_item_terms`` of a stored explanation (``issue_items.matches``)."""
    found = json.loads(explained)
    matches = found if isinstance(found, list) else found.get("matches", [])
    return list(dict.fromkeys(str(m[5] or m[0]) for m in matches
                              if len(m) < 6 or m[5] != INTEREST))


def _json_strings(value: object) -> tuple[str, ...]:
    """A stored JSON list of strings; what an older version stored oddly reads as empty."""
    try:
        found = json.loads(str(value), strict=False)
    except ValueError:
        return ()
    return tuple(x for x in found if isinstance(x, str)) if isinstance(found, list) else ()


def _date_or_none(value: object) -> date | None:
    try:
        return date.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


_CHUNK = 500  # keys per IN (...) list: far below SQLite's limit on bound parameters


PACE_SENDERS = 64  # senders that may wait for a slot at once (`send --workers` at most)
SQLITE_MIN = (3, 35, 0)  # RETURNING, and upserts of any form


def _check_sqlite(path: Path, found: tuple[int, int, int] = sqlite3.sqlite_version_info
                  ) -> None:
    """StoreError when this Python's SQLite library is too old for the store's SQL."""
    if found < SQLITE_MIN:
        raise StoreError(f"{path}: this Python's SQLite is {'.'.join(map(str, found))}; "
                         f"digest needs {'.'.join(map(str, SQLITE_MIN))} or newer (for "
                         "RETURNING): use a newer Python build, or a PostgreSQL store "
                         "([store] url)")


class _Known:
    """Stored papers by arXiv id, key and normalised title: what ``Store._find_paper``
    looks up, read for a whole dump at once and kept current while it is added."""

    __slots__ = ("arxiv", "by_arxiv", "by_key", "by_title", "title_of")

    def __init__(self) -> None:
        self.by_arxiv: dict[str, int] = {}
        self.by_key: dict[str, int] = {}
        self.by_title: dict[str, list[int]] = {}
        self.arxiv: dict[int, str | None] = {}
        self.title_of: dict[int, str] = {}  # the stored title_norm (never normalised again)

    def add(self, paper_id: int, key: str, arxiv_id: str | None, title_norm: str) -> None:
        if arxiv_id:
            self.by_arxiv.setdefault(arxiv_id, paper_id)
        self.by_key.setdefault(key, paper_id)
        ids = self.by_title.setdefault(title_norm, [])
        if paper_id not in ids:
            ids.append(paper_id)
            ids.sort()
        self.arxiv[paper_id] = arxiv_id or self.arxiv.get(paper_id)
        self.title_of.setdefault(paper_id, title_norm)

    def find(self, key: str, arxiv_id: str | None, title_norm: str) -> int | None:
        """As ``Store._find_paper``: the arXiv id, then the key, then the oldest paper of
        the same title unless both carry arXiv ids and they differ."""
        if arxiv_id and (found := self.by_arxiv.get(arxiv_id)) is not None:
            return found
        if (found := self.by_key.get(key)) is not None:
            return found
        for paper_id in self.by_title.get(title_norm, ()):
            other = self.arxiv.get(paper_id)
            if not (arxiv_id and other and other != arxiv_id):
                return paper_id
        return None


def _chunks(items: list[str] | list[int]) -> Iterator[list[Any]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start:start + _CHUNK]


def _paper_from_row(row: sqlite3.Row | tuple[object, ...]) -> Paper:
    (key, title, abstract, authors, names, published, date_raw, upvotes, links, arxiv_id, url,
     first_seen, summary, version) = tuple(row)[:_N_PAPER_COLUMNS]
    return Paper(
        key=str(key), title=str(title), abstract=str(abstract),
        authors=authors if isinstance(authors, int) else None,
        author_names=_json_strings(names),
        published=_date_or_none(published),
        date_raw=str(date_raw) if date_raw else None,
        upvotes=upvotes if isinstance(upvotes, int) else None,
        links=_json_strings(links),
        arxiv_id=str(arxiv_id) if arxiv_id else None, url=str(url) if url else None,
        first_seen=_parse_ts(str(first_seen)), summary=str(summary or ""),
        version=version if isinstance(version, int) else None,
    )


class Store:
    """The store: SQLite here; ``pgstore.PgStore`` runs the same methods on PostgreSQL."""

    engine = "sqlite"

    def __init__(self, conn: sqlite3.Connection, path: str) -> None:
        self.conn = conn
        self.path = path

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def open(cls, path: Path) -> Store:
        """Open (creating and migrating as needed) the store file at ``path``."""
        _check_sqlite(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, isolation_level=None, timeout=30.0)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"{path}: cannot open the store: {exc}") from None
        store = cls(conn, str(path))
        store._migrate()
        return store

    @classmethod
    def snapshot(cls, path: Path) -> Store:
        """The store at ``path`` as preview and status see it: readable and writable, with
        nothing written anywhere (empty if absent); the file is untouched.

        A store of the current schema is read in place (``_Overlay``: the file is attached
        read-only and what is written goes to memory), so memory follows what is read, not
        the store's size. A store of an older schema is copied into memory and migrated
        there. A live WAL (another process has the store open) is read from a private copy
        of the file and its WAL, since reading through a WAL touches its -shm file.
        """
        _check_sqlite(path)
        wal = path.with_name(path.name + "-wal")
        tmp: tempfile.TemporaryDirectory[str] | None = None
        try:
            if not path.exists():
                return cls._in_memory(None, path)
            source = path
            if wal.exists():
                tmp = tempfile.TemporaryDirectory(prefix="digest-preview-")
                source = Path(tmp.name) / path.name
                shutil.copyfile(path, source)
                shutil.copyfile(wal, Path(tmp.name) / wal.name)
                copy = sqlite3.connect(source)  # our copy: fold its WAL into the file
                copy.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                copy.close()
            uri = f"{source.resolve().as_uri()}?mode=ro&immutable=1"
            probe = sqlite3.connect(uri, uri=True)
            try:
                version = int(probe.execute("PRAGMA user_version").fetchone()[0])
                if version < len(MIGRATIONS):
                    return cls._in_memory(probe, path)
            finally:
                probe.close()
            if version > len(MIGRATIONS):
                return cls._in_memory(None, path, version)  # says so, as open does
            store = _Overlay.attach(uri, str(path), tmp)
            tmp = None  # the overlay owns it now
            return store
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"{path}: cannot read the store: {exc}") from None
        finally:
            if tmp is not None:
                tmp.cleanup()

    @classmethod
    def _in_memory(cls, source: sqlite3.Connection | None, path: Path,
                   version: int = 0) -> Store:
        """A copy of ``source`` (or an empty store) in memory, migrated there."""
        memory = sqlite3.connect(":memory:", isolation_level=None)
        if source is not None:
            source.backup(memory)
        elif version:
            memory.execute(f"PRAGMA user_version = {version}")
        memory.execute("PRAGMA foreign_keys=ON")
        store = cls(memory, str(path))
        try:
            store._migrate()
        except StoreError:
            memory.close()
            raise
        return store

    @classmethod
    def read_only(cls, path: Path) -> Store | None:
        """The store at ``path`` for reading only, or None when there is no store file.

        Nothing is created or migrated on disk (the connection only reads; opened for
        writing where it may be, so SQLite tidies its -wal/-shm files away on close). A
        store of an older schema is read through an in-memory copy, migrated there.
        """
        if not path.is_file():
            return None
        _check_sqlite(path)
        uri = path.resolve().as_uri()
        try:
            try:
                conn = sqlite3.connect(f"{uri}?mode=rw", uri=True, isolation_level=None,
                                       timeout=30.0)
            except sqlite3.OperationalError:  # a file we may not write: read it as it is
                conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, isolation_level=None,
                                       timeout=30.0)
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot read the store: {exc}") from None
        store = cls(conn, str(path))
        try:
            conn.execute("PRAGMA query_only=ON")
            current = store._version() == len(MIGRATIONS)
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(f"{path}: cannot read the store: {exc}") from None
        except StoreError:
            conn.close()
            raise
        if current:
            return store
        conn.close()
        return cls.snapshot(path)

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def in_transaction(self) -> bool:
        """A transaction is open on this connection (none should be between calls)."""
        return bool(self.conn.in_transaction)

    @contextmanager
    def hold(self, what: str, *, wait: bool = False) -> Iterator[None]:
        """Exclusive use of the store for ``what`` ("ingest": adding papers) among
        every process on every host. SQLite: the data folder's lock file already gives it
        (one host, one folder), so nothing more is needed."""
        yield

    def _version(self) -> int:
        version = int(self.conn.execute("PRAGMA user_version").fetchone()[0])
        if version > len(MIGRATIONS):
            raise StoreError(
                f"{self.path}: the store has schema version {version}, newer than this digest "
                f"understands ({len(MIGRATIONS)}); upgrade digest"
            )
        return version

    def _migrate(self) -> None:
        while self._version() < len(MIGRATIONS):
            with self.transaction():
                # Read again under the write lock: another process (a run beside a
                # ``digest feedback``) may have migrated meanwhile.
                number = self._version()
                if number >= len(MIGRATIONS):
                    break
                for statement in MIGRATIONS[number].split(";"):
                    if statement.strip():
                        self.conn.execute(statement)
                if number + 1 == _TERMS_MIGRATION:  # what SQL alone cannot fill in
                    self._fill_issue_terms()
                self.conn.execute(f"PRAGMA user_version = {number + 1}")

    def _fill_issue_terms(self) -> None:
        """Every issue's matched keywords from its items (migration 7, in its transaction)."""
        rows = self.conn.execute("SELECT issue_id, matches FROM issue_items"
                                 " ORDER BY issue_id, rank")
        terms: dict[int, list[str]] = {}
        for issue_id, explained in rows:
            terms.setdefault(int(issue_id), []).extend(_json_terms(explained))
        self.conn.executemany("UPDATE issues SET terms = ? WHERE id = ?",
                              [(json.dumps(t), i) for i, t in terms.items()])
        self.conn.execute("UPDATE issues SET terms = '[]' WHERE terms IS NULL")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN (IMMEDIATE on SQLite: the write lock now) ... COMMIT, rolled back on any
        exception."""
        self._begin()
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")

    def _begin(self) -> None:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StoreError(f"{self.path}: cannot start a write: {exc}") from None

    # -- dumps and papers ------------------------------------------------------------------
    def find_dump(self, sha256: str) -> DumpRecord | None:
        """The dump with this content hash, if it was ingested before (under any name)."""
        row = self.conn.execute(
            "SELECT id, name, sha256, run_id, ingested_at FROM dumps WHERE sha256 = ?", (sha256,)
        ).fetchone()
        if row is None:
            return None
        return DumpRecord(row[0], row[1], row[2], row[3], _parse_ts(row[4]))

    def latest_run(self) -> int:
        """The id of the newest run (0 before the first)."""
        row = self.conn.execute("SELECT max(id) FROM runs").fetchone()
        return int(row[0] or 0)

    def known_file(self, path: Path) -> bool:
        """True when this very file (path, size, mtime) was ingested before: skip re-reading."""
        try:
            st = path.stat()
        except OSError:
            return False
        return self.conn.execute(
            "SELECT 1 FROM dumps WHERE path = ? AND size = ? AND mtime_ns = ?",
            (str(path.resolve()), st.st_size, st.st_mtime_ns)).fetchone() is not None

    def ingest(self, dump: ParsedDump, run_id: int | None, kind: str, now: datetime,
               subscribers: Sequence[str] = (),
               vectors: tuple[str, Mapping[str, bytes]] | None = None) -> IngestResult:
        """Add one parsed dump in one transaction; return the keys it saw first.

        With ``run_id`` None the run is started in the same transaction ('run' runs feed
        digests; 'backfill' runs only mark papers as seen), and any of ``subscribers``
        not met before is registered in it to start with this run's papers: a crash
        between ingest and digests cannot make a new subscriber miss them. ``vectors``
        (model id, {paper key in the dump: embedding blob}) go in the same transaction.
        """
        try:
            return self._ingest(dump, run_id, kind, now, subscribers, vectors)
        except OverflowError as exc:  # a number SQLite cannot hold: the dump is at fault
            raise InputError(dump.path, f"cannot store a value from this dump ({exc}); "
                                        "fix or remove the file") from None

    def _ingest(self, dump: ParsedDump, run_id: int | None, kind: str, now: datetime,
                subscribers: Sequence[str],
                vectors: tuple[str, Mapping[str, bytes]] | None) -> IngestResult:
        new_keys: list[str] = []
        name = Path(dump.path).name
        with self.transaction() as conn:
            if run_id is None:
                run_id = int(conn.execute("INSERT INTO runs (kind, started_at) VALUES (?, ?)"
                                          " RETURNING id", (kind, _ts(now))).fetchall()[0][0])
                conn.executemany(
                    "INSERT INTO subscribers (name, cursor_run, created_at) VALUES (?, ?, ?)"
                    " ON CONFLICT DO NOTHING", [(n, run_id - 1, _ts(now)) for n in subscribers])
            size: int | None = None
            mtime: int | None = None
            with contextlib.suppress(OSError):
                st = Path(dump.path).stat()
                size, mtime = st.st_size, st.st_mtime_ns
            cur = conn.execute(
                "INSERT INTO dumps (sha256, name, path, size, mtime_ns, shape, page_date, run_id,"
                " ingested_at, entries, new_papers, warnings)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?) RETURNING id",
                (dump.sha256, name, str(Path(dump.path).resolve()), size, mtime, dump.shape,
                 dump.page_date.isoformat() if dump.page_date else None, run_id, _ts(now),
                 len(dump.papers), json.dumps([str(w) for w in dump.warnings])),
            )
            dump_id = int(cur.fetchall()[0][0])
            half = len(dump.papers) // 2
            self._known = self._prefetch(dump.papers)
            added = 0
            seen: list[tuple[object, ...]] = []
            kept: list[tuple[int, str, bytes]] = []
            try:
                for i, paper in enumerate(dump.papers):
                    if i == half:
                        checkpoint("ingest:mid")
                    paper_id, is_new, inserted = self._upsert_paper(paper, run_id, dump_id, now)
                    added += inserted
                    if is_new:
                        new_keys.append(paper.key)
                    if vectors is not None and (blob := vectors[1].get(paper.key)) is not None:
                        kept.append((paper_id, vectors[0], blob))
                    seen.append((paper_id, dump_id, paper.line, paper.date_raw, paper.upvotes,
                                 paper.version))
            finally:
                self._known = None
            # In the same transaction, in one batch each (one round trip on a server).
            if kept:
                conn.executemany("INSERT INTO vectors (paper_id, model, vector) VALUES"
                                 " (?, ?, ?) ON CONFLICT (paper_id, model) DO UPDATE SET"
                                 " vector = excluded.vector", kept)
            conn.executemany(
                "INSERT INTO sightings (paper_id, dump_id, line, date_raw, upvotes,"
                " version) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", seen)
            conn.execute("UPDATE dumps SET new_papers = ? WHERE id = ?", (len(new_keys), dump_id))
            if added and len(MIGRATIONS) >= _CLAIMS_MIGRATION:
                self._count_papers(added)
        return IngestResult(dump_id, run_id, tuple(new_keys), len(dump.papers))

    _known: _Known | None = None  # during an ingest: the dump's stored papers, read at once
    _PREFETCH = True  # read a dump's stored papers in a few queries (not the overlay's)

    def _prefetch(self, papers: Sequence[Paper]) -> _Known | None:
        """The stored papers a dump's papers could be (by arXiv id, key or title), in three
        queries per 500 papers instead of up to three per paper."""
        if not self._PREFETCH:
            return None
        known = _Known()
        for column, values in (("arxiv_id", {p.arxiv_id for p in papers if p.arxiv_id}),
                               ("key", {p.key for p in papers}),
                               ("title_norm", {normalise_title(p.title) for p in papers})):
            for chunk in _chunks(sorted(values)):
                marks = ", ".join("?" for _ in chunk)
                for row in self.conn.execute("SELECT id, key, arxiv_id, title_norm FROM papers"
                                             f" WHERE {column} IN ({marks})", chunk):
                    known.add(int(row[0]), str(row[1]), row[2], str(row[3]))
        return known

    def _find_paper(self, paper: Paper) -> int | None:
        if self._known is not None:
            return self._known.find(paper.key, paper.arxiv_id, normalise_title(paper.title))
        conn = self.conn
        if paper.arxiv_id:
            row = conn.execute("SELECT id FROM papers WHERE arxiv_id = ?",
                               (paper.arxiv_id,)).fetchone()
            if row:
                return int(row[0])
        row = conn.execute("SELECT id FROM papers WHERE key = ?", (paper.key,)).fetchone()
        if row is not None:
            return int(row[0])
        # The same title seen before under an arXiv id (or without one) is the same paper,
        # unless both carry arXiv ids and they differ.
        for found_id, found_arxiv in conn.execute(
                "SELECT id, arxiv_id FROM papers WHERE title_norm = ? ORDER BY id",
                (normalise_title(paper.title),)):
            if not (paper.arxiv_id and found_arxiv and found_arxiv != paper.arxiv_id):
                return int(found_id)
        return None

    def _upsert_paper(self, paper: Paper, run_id: int, dump_id: int,
                      now: datetime) -> tuple[int, bool, int]:
        """(paper id, new in this run, 1 if a row was added else 0)."""
        existing = self._find_paper(paper)
        if existing is None:
            cur = self.conn.execute(
                "INSERT INTO papers (key, title_norm, arxiv_id, title, abstract, authors,"
                " author_names, published, date_raw, upvotes, links, url, first_run, first_dump,"
                " first_seen, summary, version, revision_only)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (paper.key, normalise_title(paper.title), paper.arxiv_id, paper.title,
                 paper.abstract, paper.authors, json.dumps(list(paper.author_names)),
                 paper.published.isoformat() if paper.published else None, paper.date_raw,
                 paper.upvotes, json.dumps(list(paper.links)), paper.url, run_id, dump_id,
                 _ts(now), paper.summary, paper.version, int(paper.revision)),
            )
            # A new version of a paper never seen before is an old paper: stored as seen
            # (so it is never new later), but in no digest.
            paper_id = int(cur.fetchall()[0][0])
            if self._known is not None:
                self._known.add(paper_id, paper.key, paper.arxiv_id,
                                normalise_title(paper.title))
            return paper_id, not paper.revision, 1
        # Seen before: fill in what the earlier sighting lacked; the key never changes. A longer
        # abstract replaces a shorter one, and the embedding of the old text goes with it.
        before = self._paper_row(existing)
        if len(str(before[2])) < len(paper.abstract):
            self.conn.execute("DELETE FROM vectors WHERE paper_id = ?", (existing,))
        self.conn.execute(
            "UPDATE papers SET"
            " abstract = CASE WHEN length(abstract) < length(:abstract) THEN :abstract"
            "   ELSE abstract END,"
            " authors = coalesce(authors, :authors), published = coalesce(published, :published),"
            " author_names = CASE WHEN author_names = '[]' THEN :names ELSE author_names END,"
            " summary = CASE WHEN summary = '' THEN :summary ELSE summary END,"
            " version = CASE WHEN :version IS NULL THEN version"
            "   WHEN coalesce(version, 0) > :version THEN version ELSE :version END,"
            " date_raw = coalesce(date_raw, :date_raw),"
            " upvotes = CASE WHEN :upvotes IS NULL THEN upvotes"  # an unknown count keeps ours
            "   WHEN coalesce(upvotes, 0) > :upvotes THEN upvotes ELSE :upvotes END,"
            " arxiv_id = coalesce(arxiv_id, :arxiv_id), url = coalesce(url, :url),"
            " links = CASE WHEN links = '[]' THEN :links ELSE links END"
            " WHERE id = :id",
            {"abstract": paper.abstract, "authors": paper.authors,
             "published": paper.published.isoformat() if paper.published else None,
             "date_raw": paper.date_raw, "upvotes": paper.upvotes, "arxiv_id": paper.arxiv_id,
             "url": paper.url, "links": json.dumps(list(paper.links)), "id": existing,
             "names": json.dumps(list(paper.author_names)), "summary": paper.summary,
             "version": paper.version},
        )
        if self._known is not None and paper.arxiv_id and before[9] is None:
            self._known.add(existing, str(before[0]), paper.arxiv_id,  # filled in now
                            self._known.title_of.get(existing) or normalise_title(
                                str(before[1])))
        self._settle(existing, before)
        return existing, False, 0

    def _paper_row(self, paper_id: int) -> tuple[object, ...]:
        """A stored paper's columns, as ``_paper_from_row`` reads them."""
        return tuple(self.conn.execute(f"SELECT {_PAPER_COLUMNS} FROM papers p WHERE p.id = ?",
                                       (paper_id,)).fetchone())

    def _settle(self, paper_id: int, before: tuple[object, ...]) -> None:
        """After an update of a paper: if it changed, tell what shows it."""
        if self._paper_row(paper_id) != before:
            self._paper_changed(paper_id)

    def _paper_changed(self, paper_id: int) -> None:
        """A stored paper's text changed: the feed entries kept of it are stale, and the
        feeds that show it must be built again (their ``feed_fingerprint:`` meta goes)."""
        if len(MIGRATIONS) < _TERMS_MIGRATION:  # a schema before feed entries were kept
            return
        self.conn.execute("DELETE FROM feed_entries WHERE (issue_id, rank) IN"
                          " (SELECT issue_id, rank FROM issue_items WHERE paper_id = ?)",
                          (paper_id,))
        if len(MIGRATIONS) >= _CHANGES_MIGRATION:  # told to every publisher (host)
            self.conn.execute(
                "INSERT INTO feed_changes (subscriber, n) SELECT DISTINCT i.subscriber, 1"
                " FROM issue_items ii JOIN issues i ON i.id = ii.issue_id WHERE"
                " ii.paper_id = ? ON CONFLICT (subscriber) DO UPDATE SET"
                " n = feed_changes.n + 1", (paper_id,))
            self.conn.execute("INSERT INTO page_changes (issue_id) SELECT DISTINCT issue_id"
                              " FROM issue_items WHERE paper_id = ?", (paper_id,))
        elif len(MIGRATIONS) >= _ENRICH_MIGRATION:  # the issue pages showing it, for the site
            self.conn.execute("INSERT INTO stale_pages SELECT DISTINCT issue_id"
                              " FROM issue_items WHERE paper_id = ? ON CONFLICT DO NOTHING",
                              (paper_id,))

    def _count_papers(self, added: int) -> None:
        """Papers were added (in the ingest transaction): the kept count goes up."""
        self.conn.execute("UPDATE tallies SET n = n + ? WHERE name = 'papers'", (added,))

    def paper_count(self) -> int:
        """How many distinct papers the store has seen (a kept count: one row read)."""
        row = self.conn.execute("SELECT n FROM tallies WHERE name = 'papers'").fetchone()
        if row is None:  # never seen: counted
            return int(self.conn.execute("SELECT count(*) FROM papers").fetchone()[0])
        return int(row[0])

    def papers_after(self, after_run: int, upto_run: int) -> list[Paper]:
        """Papers first seen by a digest run in (after_run, upto_run], oldest first."""
        rows = self.conn.execute(
            f"SELECT {_PAPER_COLUMNS} FROM papers p JOIN runs r ON r.id = p.first_run"
            " WHERE p.first_run > ? AND p.first_run <= ? AND r.kind = 'run'"
            " AND p.revision_only = 0 ORDER BY p.id",
            (after_run, upto_run),
        )
        return [_paper_from_row(row) for row in rows]

    def page_dates(self, after_run: int, upto_run: int) -> list[date]:
        """Page dates of the dumps ingested in (after_run, upto_run]."""
        rows = self.conn.execute(
            "SELECT DISTINCT page_date FROM dumps WHERE run_id > ? AND run_id <= ?"
            " AND page_date IS NOT NULL ORDER BY page_date", (after_run, upto_run))
        return [date.fromisoformat(r[0]) for r in rows]

    def meta(self, key: str) -> str | None:
        """A store-wide setting (feed id authority, creation time)."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else None

    def set_meta(self, key: str, value: str) -> None:
        """Set (or replace) a store-wide setting."""
        with self.transaction():
            self.conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key)"
                              " DO UPDATE SET value = excluded.value", (key, value))

    def page_changes(self, after: int) -> tuple[dict[str, set[int]], int]:
        """Issues whose pages show a paper that changed since change number ``after``
        (subscriber -> issue ids), and the newest change number (a publisher keeps it)."""
        out: dict[str, set[int]] = {}
        newest = after
        for seq, name, issue_id in self.conn.execute(
                "SELECT c.id, i.subscriber, c.issue_id FROM page_changes c JOIN issues i ON"
                " i.id = c.issue_id WHERE c.id > ? ORDER BY c.id", (after,)):
            out.setdefault(str(name), set()).add(int(issue_id))
            newest = max(newest, int(seq))
        return out, newest

    def newest_page_change(self) -> int:
        """The number of the newest page change (0 before any)."""
        return int(self.conn.execute("SELECT coalesce(max(id), 0) FROM page_changes"
                                     ).fetchone()[0])

    def feed_generation(self, name: str) -> int:
        """How many times a paper in this reader's issues changed (their feed's generation)."""
        row = self.conn.execute("SELECT n FROM feed_changes WHERE subscriber = ?",
                                (name,)).fetchone()
        return int(row[0]) if row else 0

    def newest_issue_id(self) -> int:
        """The id of the newest issue of anyone (0 before the first)."""
        return int(self.conn.execute("SELECT coalesce(max(id), 0) FROM issues").fetchone()[0])

    def feed_state(self, prefix: str) -> tuple[int, int, int]:
        """(newest issue id, all feeds' generations, settings under ``prefix`` marked
        partial): what changes when any feed may have to be built again (see
        pipeline.feeds_state)."""
        row = self.conn.execute(
            "SELECT (SELECT coalesce(max(id), 0) FROM issues),"
            " (SELECT coalesce(sum(n), 0) FROM feed_changes),"
            " coalesce(sum(CASE WHEN value LIKE '% partial' THEN 1 ELSE 0 END), 0) FROM meta"
            " WHERE substr(key, 1, ?) = ?", (len(prefix), prefix)).fetchone()
        return int(row[0]), int(row[1]), int(row[2])

    def set_meta_once(self, key: str, value: str) -> str:
        """Set a store-wide setting unless it is set already; return the value in force."""
        with self.transaction():
            self.conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT DO NOTHING",
                              (key, value))
        found = self.meta(key)
        assert found is not None
        return found

    # -- subscribers and digest issues -------------------------------------------------------
    def cursor(self, name: str) -> Cursor | None:
        """The subscriber's cursor, or None if digest has never seen this subscriber."""
        row = self.conn.execute(
            "SELECT name, cursor_run, last_issue, last_digest_at FROM subscribers WHERE name = ?",
            (name,)).fetchone()
        if row is None:
            return None
        return Cursor(row[0], row[1], row[2], _parse_ts(row[3]) if row[3] else None)

    def behind(self) -> set[str]:
        """Subscribers whose cursor is before the latest run (papers may wait for them)."""
        return {str(r[0]) for r in self.conn.execute(
            "SELECT name FROM subscribers WHERE cursor_run < (SELECT coalesce(max(id), 0)"
            " FROM runs)")}

    def cursors(self, *, before: int | None = None) -> dict[str, Cursor]:
        """Registered subscribers' cursors in one read (with ``before``: only those whose
        cursor is before that run, i.e. who have papers waiting)."""
        rows = self.conn.execute("SELECT name, cursor_run, last_issue, last_digest_at FROM"
                                 " subscribers WHERE cursor_run < ?",
                                 (before if before is not None else 2 ** 62,))
        return {str(r[0]): Cursor(r[0], r[1], r[2], _parse_ts(r[3]) if r[3] else None)
                for r in rows}

    def record_issue(self, name: str, number: int, from_run: int, to_run: int,
                     generated_at: datetime, new_papers: int, items: tuple[Ranked, ...],
                     paths: tuple[str | None, str | None],
                     mail: Outgoing | None = None,
                     slot: tuple[str, datetime | None] | None = None,
                     claim: str | None = None,
                     write: Callable[[], None] | None = None) -> None:
        """Record a digest issue, queue its e-mail, advance the cursor, (for the daemon)
        mark its cadence slot done and give up ``claim``'s hold on the reader: one
        transaction. The cursor moves only from where the digest began (a compare and
        set, so two workers can never both record the issue): MovedOn if it had moved.
        ``write`` (the issue's files) is called once the cursor is this transaction's, so
        a worker that lost the reader writes nothing; if it fails, nothing is recorded."""
        with self.transaction() as conn:
            if not conn.execute(  # first: the row stays locked until commit
                    "UPDATE subscribers SET cursor_run = ?, last_issue = ?, last_digest_at = ?"
                    " WHERE name = ? AND cursor_run = ? AND last_issue = ? RETURNING name",
                    (to_run, number, _ts(generated_at), name, from_run, number - 1)
            ).fetchall():
                raise MovedOn(f"{self.path}: subscriber {name!r} moved on while this digest "
                              "was being made (is another digest running?); run again")
            if write is not None:
                write()
            issue_id = int(conn.execute(
                "INSERT INTO issues (subscriber, number, from_run, to_run, generated_at,"
                " new_papers, matched, markdown_path, html_path) VALUES (?, ?, ?, ?, ?, ?, ?,"
                " ?, ?) RETURNING id", (name, number, from_run, to_run, _ts(generated_at),
                                        new_papers, len(items), paths[0], paths[1])
            ).fetchall()[0][0])
            if len(MIGRATIONS) >= _TERMS_MIGRATION:
                conn.execute("UPDATE issues SET terms = ? WHERE id = ?", (json.dumps(
                    [t for r in items for t in _item_terms(r)]), issue_id))
            conn.executemany(
                "INSERT INTO issue_items (issue_id, rank, paper_id, score, matches)"
                " SELECT ?, ?, id, ?, ? FROM papers WHERE key = ?",
                [(issue_id, r.rank, r.score, _matches_json(r), r.paper.key)
                 for r in items])
            if mail is not None:  # not if they unsubscribed (on the web) since the run began
                conn.execute(
                    "INSERT INTO outbox (issue_id, subscriber, recipient, message_id, subject,"
                    " raw, next_attempt_at, created_at) SELECT ?, ?, ?, ?, ?, ?, ?, ?"
                    " FROM subscribers WHERE name = ? AND unsubscribed_at IS NULL",
                    (issue_id, name, mail.recipient, mail.message_id, mail.subject, mail.raw,
                     _ts(generated_at), _ts(generated_at), name))
            if slot is not None:
                self._set_job_slot(slot[0], slot[1], generated_at)
            if claim is not None:
                conn.execute(self._RELEASE_READER, (name, claim))

    _RELEASE_READER = "DELETE FROM render_claims WHERE subscriber = ? AND claimed_by = ?"

    def claim_reader(self, name: str, worker: str, until: datetime, now: datetime) -> bool:
        """Hold ``name``'s next digest for ``worker`` until ``until``: True unless another
        worker (another process or host) holds it under a lease still running at ``now``.
        One upsert that re-checks the lease on the newest row, so two never both win. A
        lease ending after ``until`` was taken by a clock ahead of ours (or ours stepped
        back): it is not waited for."""
        with self.transaction() as conn:
            return bool(conn.execute(
                "INSERT INTO render_claims (subscriber, claimed_by, lease_until)"
                " VALUES (:name, :worker, :until) ON CONFLICT (subscriber) DO UPDATE SET"
                " claimed_by = excluded.claimed_by, lease_until = excluded.lease_until"
                " WHERE render_claims.lease_until < :now OR render_claims.lease_until > :until"
                " OR render_claims.claimed_by = excluded.claimed_by RETURNING subscriber",
                {"name": name, "worker": worker, "until": _ts(until), "now": _ts(now)}
            ).fetchall())

    def release_reader(self, name: str, worker: str) -> None:
        """Give up ``worker``'s hold on ``name`` (when it recorded no issue for them)."""
        with self.transaction() as conn:
            conn.execute(self._RELEASE_READER, (name, worker))

    def feed_items(self, name: str, limit: int) -> list[Ranked]:
        """The newest ``limit`` ranked papers of a subscriber's digests, newest first."""
        rows = self.conn.execute(
            f"SELECT {_PAPER_COLUMNS}, ii.score, ii.matches, ii.rank FROM issues i"
            " JOIN issue_items ii ON ii.issue_id = i.id JOIN papers p ON p.id = ii.paper_id"
            " WHERE i.subscriber = ? ORDER BY i.number DESC, ii.rank ASC LIMIT ?",
            (name, limit))
        return [_ranked_row(row) for row in rows]

    _ISSUE_COLUMNS = ("id, subscriber, number, from_run, to_run, generated_at, new_papers,"
                      " matched")

    @staticmethod
    def _issue(row: tuple[Any, ...]) -> IssueRecord:
        return IssueRecord(int(row[0]), str(row[1]), int(row[2]), int(row[3]), int(row[4]),
                           _parse_ts(str(row[5])), int(row[6]), int(row[7]))

    def issues(self, name: str, *, after: int = 0) -> list[IssueRecord]:
        """A subscriber's issues numbered above ``after``, oldest first (an index range)."""
        rows = self.conn.execute(f"SELECT {self._ISSUE_COLUMNS} FROM issues WHERE subscriber"
                                 " = ? AND number > ? ORDER BY number", (name, after))
        return [self._issue(r) for r in rows]

    def latest_issues(self) -> dict[str, IssueRecord]:
        """Each subscriber's newest issue (subscribers with none are left out)."""
        columns = ", ".join(f"i.{c.strip()}" for c in self._ISSUE_COLUMNS.split(","))
        rows = self.conn.execute(  # one index look-up per subscriber, whatever the history
            f"SELECT {columns} FROM subscribers s JOIN issues i ON i.subscriber = s.name"
            " AND i.number = s.last_issue")
        return {r[1]: self._issue(r) for r in rows}

    def issue_items(self, issue_id: int) -> list[Ranked]:
        """The ranked papers of one issue, best first, with their explanations."""
        rows = self.conn.execute(
            f"SELECT {_PAPER_COLUMNS}, ii.score, ii.matches, ii.rank FROM issue_items ii"
            " JOIN papers p ON p.id = ii.paper_id WHERE ii.issue_id = ? ORDER BY ii.rank",
            (issue_id,))
        return [_ranked_row(row) for row in rows]

    def issue_terms(self, name: str) -> dict[int, list[str]]:
        """Issue number -> the keywords its papers matched (each once per paper, as
        ``Ranked.terms``; interest-sentence words are not keywords and are left out).

        One row per issue: the list is kept with the issue when it is recorded.
        """
        rows = self.conn.execute("SELECT number, terms FROM issues WHERE subscriber = ?"
                                 " ORDER BY number", (name,))
        return {int(number): [str(t) for t in json.loads(terms or "[]") if isinstance(t, str)]
                for number, terms in rows}

    def issue_terms_from_items(self, name: str) -> dict[int, list[str]]:
        """``issue_terms`` worked out from every matched paper of the reader's history
        (what it read before the terms were kept; tests and benches compare the two)."""
        rows = self.conn.execute(
            "SELECT i.number, ii.matches FROM issues i JOIN issue_items ii ON ii.issue_id = i.id"
            " WHERE i.subscriber = ? ORDER BY i.number, ii.rank", (name,))
        out: dict[int, list[str]] = {}
        for number, explained in rows:
            out.setdefault(int(number), []).extend(_json_terms(explained))
        return out

    def feed_sources(self, name: str, limit: int) -> list[tuple[object, ...]]:
        """The issue rows behind a reader's feed window (issue id, rank, paper id, score,
        explanation), newest first: what ``feed_items`` reads, papers aside (a paper's
        change is told by ``_paper_changed``)."""
        return [tuple(r) for r in self.conn.execute(
            "SELECT i.id, ii.rank, ii.paper_id, ii.score, ii.matches FROM issues i"
            " JOIN issue_items ii ON ii.issue_id = i.id WHERE i.subscriber = ?"
            " ORDER BY i.number DESC, ii.rank ASC LIMIT ?", (name, limit))]

    def feed_window(self, name: str, limit: int
                    ) -> list[tuple[int, Ranked, tuple[object, ...], tuple[str, str] | None]]:
        """``feed_items`` with, for each item, its issue id, its stored row as read (to
        hash) and the (source, html) of its entry kept before, if any."""
        rows = self.conn.execute(
            f"SELECT {_PAPER_COLUMNS}, ii.score, ii.matches, ii.rank, i.id, fe.source, fe.html"
            " FROM issues i JOIN issue_items ii ON ii.issue_id = i.id"
            " JOIN papers p ON p.id = ii.paper_id LEFT JOIN feed_entries fe"
            " ON fe.subscriber = i.subscriber AND fe.issue_id = i.id AND fe.rank = ii.rank"
            " WHERE i.subscriber = ? ORDER BY i.number DESC, ii.rank ASC LIMIT ?",
            (name, limit))
        out = []
        for row in rows:
            issue_id, source, html = row[_N_PAPER_COLUMNS + 3:]
            out.append((int(issue_id), _ranked_row(row),
                        tuple(row[:-2]), None if html is None else (str(source), str(html))))
        return out

    def keep_feed_entries(self, name: str, entries: Iterable[tuple[int, int, str, str]], *,
                          oldest: int | None, meta: tuple[str, str]) -> None:
        """Keep a reader's rendered feed entries ((issue id, rank, source hash, html)) and
        the meta setting saying what the feed was built from, in one transaction; rows of
        issues older than ``oldest`` (the oldest issue in the feed's window) are dropped."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM feed_entries WHERE subscriber = ? AND issue_id < ?",
                         (name, oldest if oldest is not None else 1 << 62))
            conn.executemany("INSERT INTO feed_entries (subscriber, issue_id, rank, source, html)"
                             " VALUES (?, ?, ?, ?, ?) ON CONFLICT (subscriber, issue_id, rank)"
                             " DO UPDATE SET source = excluded.source, html = excluded.html",
                             [(name, i, r, src, h) for i, r, src, h in entries])
            conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key)"
                         " DO UPDATE SET value = excluded.value", meta)

    def paper(self, key: str) -> Paper | None:
        """The stored paper a key names (by the key, its arXiv id or its title), or None."""
        found = self.paper_ids([key])
        if key not in found:
            return None
        return _paper_from_row(self._paper_row(found[key]))

    # -- enrichment (links, arXiv ids and names for papers read without them) ------------------
    _DAILY_SHAPES = ("blank-separated", "with-metadata", "compact", "markdown-listing")

    def enrichment_todo(self, now: datetime) -> list[tuple[Paper, date | None]]:
        """Papers to look up, with the day of the daily page each was copied from (or None).

        Those first seen by a digest run since the last finished pass (meta
        ``enriched_upto``) that have neither a page nor an arXiv id, and those a pass left
        ``pending`` whose retry is due by ``now`` (an API that is down is not asked again
        every daemon tick). Both by index: the cost follows the new papers, not the store.
        """
        upto = int(self.meta("enriched_upto") or 0)
        query = (f"SELECT {_PAPER_COLUMNS}, d.shape, d.page_date, p.published, e.page_date"
                 " FROM papers p JOIN dumps d ON d.id = p.first_dump"
                 " LEFT JOIN enrichment e ON e.paper_id = p.id"
                 " WHERE p.url IS NULL AND p.arxiv_id IS NULL AND p.revision_only = 0 AND ")
        rows = [  # due retries first: new papers must not starve them
            *self.conn.execute(query + "p.id IN (SELECT paper_id FROM enrichment"
                               " WHERE pending = 1 AND next_at <= ?) ORDER BY p.id",
                               (_ts(now),)),
            *self.conn.execute(
                query + "p.first_run > ? AND e.paper_id IS NULL AND p.first_run IN"
                " (SELECT id FROM runs WHERE kind = 'run' AND id > ?) ORDER BY p.id",
                (upto, upto))]
        out: list[tuple[Paper, date | None]] = []
        seen: set[str] = set()
        for row in rows:
            paper = _paper_from_row(row)
            if paper.key in seen:
                continue
            seen.add(paper.key)
            shape, page_day, published, asked_day = row[_N_PAPER_COLUMNS:]
            # The page's own day; a copy without one but with a date per paper: that day.
            day = asked_day if asked_day is not None else (
                page_day if shape in self._DAILY_SHAPES else None) or (
                published if shape == "with-metadata" else None)
            out.append((paper, _date_or_none(day)))
        return out

    def enriched_upto(self, run: int) -> None:
        """Papers first seen up to ``run`` have been through a finished enrichment pass."""
        self.set_meta("enriched_upto", str(run))

    def resolutions(self, keys: Sequence[str]) -> dict[str, Resolution]:
        """What enrichment found of each key looked up before (enrich's ``Cache.get``)."""
        ids = self.paper_ids(keys)
        out: dict[str, Resolution] = {}
        for key, paper_id in ids.items():
            row = self.conn.execute(
                "SELECT p.title, p.arxiv_id, p.url, p.author_names, e.source, e.pending,"
                " e.reason FROM enrichment e JOIN papers p ON p.id = e.paper_id"
                " WHERE e.paper_id = ?", (paper_id,)).fetchone()
            if row is None:
                continue
            title, arxiv, url, names, source, pending, reason = row
            out[key] = Resolution(key=key, title=str(title), arxiv_id=arxiv, url=url,
                                  author_names=_json_strings(names), source=source,
                                  pending=bool(pending), reason=str(reason))
        return out

    def put_resolutions(self, resolutions: Sequence[Resolution], now: datetime,
                        days: Mapping[str, date] | None = None, *,
                        retry: timedelta = timedelta(minutes=30), tries: int = 6
                        ) -> list[str]:
        """Keep what enrichment found (enrich's ``Cache.put``), in one transaction.

        A resolved paper gets the link and names it lacked, and the arXiv id unless another
        stored paper has it already (then they stay two papers, as before); the feeds and
        issue pages that show a changed paper are made again. A pending one whose lookup
        failed is asked again ``retry`` later, doubling with each failure; after ``tries``
        failures it is given up (final, the reason says so): their keys are returned.
        """
        given_up: list[str] = []
        days = days or {}
        with self.transaction() as conn:
            ids = self.paper_ids(r.key for r in resolutions)
            for r in resolutions:
                paper_id = ids.get(r.key)
                if paper_id is None:
                    continue
                row = conn.execute("SELECT attempts FROM enrichment WHERE paper_id = ?",
                                   (paper_id,)).fetchone()
                attempts = (int(row[0]) if row else 0) + int(r.pending and r.failed)
                pending, reason = r.pending, r.reason
                if pending and attempts >= tries:
                    pending, reason = False, f"{reason}; given up after {attempts} tries"
                    given_up.append(r.key)
                if r.resolved:
                    before = self._paper_row(paper_id)
                    taken = r.arxiv_id and conn.execute(
                        "SELECT 1 FROM papers WHERE arxiv_id = ? AND id != ?",
                        (r.arxiv_id, paper_id)).fetchone()
                    conn.execute(
                        "UPDATE papers SET url = coalesce(url, ?),"
                        " arxiv_id = coalesce(arxiv_id, ?),"
                        " author_names = CASE WHEN author_names = '[]' THEN ? ELSE author_names"
                        " END WHERE id = ?",
                        (r.url, None if taken else r.arxiv_id,
                         json.dumps(list(r.author_names)), paper_id))
                    self._settle(paper_id, before)
                day = days.get(r.key)
                # A lookup that failed backs off; one the budget stopped goes on next run.
                wait = retry * (2 ** max(attempts - 1, 0)) if r.failed else timedelta(0)
                conn.execute(
                    "INSERT INTO enrichment (paper_id, source, pending, reason, page_date,"
                    " checked_at, attempts, next_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (paper_id) DO UPDATE SET source = excluded.source,"
                    " pending = excluded.pending, reason = excluded.reason,"
                    " page_date = excluded.page_date, checked_at = excluded.checked_at,"
                    " attempts = excluded.attempts, next_at = excluded.next_at",
                    (paper_id, r.source, int(pending), reason[:1000],
                     # "": its listing answered, so a retry goes straight to arXiv
                     "" if r.listed else day.isoformat() if day else None, _ts(now),
                     attempts, _ts(now + wait) if pending else None))
        return given_up

    # -- readers' votes and paper vectors ---------------------------------------------------
    def paper_ids(self, keys: Iterable[str]) -> dict[str, int]:
        """The stored id of each key that names an ingested paper; unknown keys are left out.

        A key is looked up as stored, then by what it says: ``arxiv:<id>`` by the arXiv
        id, ``title:<title>`` by the normalised title (a paper first stored under the other
        kind of key is the same paper, as at ingest).
        """
        wanted = list(dict.fromkeys(keys))
        found: dict[str, int] = {}
        for chunk in _chunks(wanted):
            marks = ", ".join("?" for _ in chunk)
            found.update((str(k), int(i)) for k, i in self.conn.execute(
                f"SELECT key, id FROM papers WHERE key IN ({marks})", chunk))
        for key in wanted:
            if key in found:
                continue
            kind, _, value = key.partition(":")
            row = None
            if kind == "arxiv" and (arxiv := normalise_arxiv_id(value)):
                row = self.conn.execute("SELECT id FROM papers WHERE arxiv_id = ?",
                                        (arxiv,)).fetchone()
            elif kind == "title" and value.strip():
                row = self.conn.execute("SELECT id FROM papers WHERE title_norm = ? ORDER BY id"
                                        " LIMIT 1", (normalise_title(value),)).fetchone()
            if row is not None:
                found[key] = int(row[0])
        return found

    def record_votes(self, subscriber: str, votes: Sequence[tuple[str, bool]],
                     at: datetime) -> list[Vote]:
        """Record a reader's votes ((paper key, like), last word per paper wins): one
        transaction. The same vote again changes nothing (its time stays); a different one
        replaces it. An unknown key is a UsageError naming it, and nothing is recorded.
        """
        with self.transaction() as conn:
            ids = self.paper_ids(k for k, _ in votes)
            unknown = [k for k, _ in votes if k not in ids]
            if unknown:
                raise UsageError(
                    f"{self.path}: no ingested paper has the key "
                    + ", ".join(repr(k) for k in dict.fromkeys(unknown))
                    + "; nothing was recorded. Keys are printed by `digest parse --json` and "
                    "`digest rank --json` (and `digest feedback --list`); the paper must have "
                    "been ingested by `digest run` or `digest ingest` first")
            chosen = {ids[k]: like for k, like in votes}
            conn.executemany(
                "INSERT INTO feedback (subscriber, paper_id, vote, at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (subscriber, paper_id) DO UPDATE SET vote = excluded.vote,"
                " at = CASE WHEN feedback.vote = excluded.vote THEN feedback.at"
                " ELSE excluded.at END",
                [(subscriber, pid, 1 if like else -1, _ts(at)) for pid, like in chosen.items()])
            got = dict(self._votes(subscriber, list(chosen)))
        return [got[pid] for pid in chosen if pid in got]

    def votes(self, subscriber: str) -> list[Vote]:
        """A reader's votes, newest first, each with its paper as stored."""
        return [v for _, v in self._votes(subscriber, None)]

    def _votes(self, subscriber: str,
               paper_ids: list[int] | None) -> list[tuple[int, Vote]]:
        """(paper id, vote) of a reader's votes (on these papers only, when given)."""
        found: list[tuple[int, Vote]] = []
        for chunk in [None] if paper_ids is None else _chunks(paper_ids):
            only = "" if chunk is None else f" AND f.paper_id IN ({', '.join('?' * len(chunk))})"
            rows = self.conn.execute(
                f"SELECT {_PAPER_COLUMNS}, f.vote, f.at, f.paper_id FROM feedback f"
                f" JOIN papers p ON p.id = f.paper_id WHERE f.subscriber = ?{only}"
                " ORDER BY f.at DESC, f.paper_id DESC", [subscriber, *(chunk or ())])
            for row in rows:
                vote, at, paper_id = row[_N_PAPER_COLUMNS:]
                found.append((int(paper_id), Vote(_paper_from_row(row), int(vote) > 0,
                                                  _parse_ts(str(at)))))
        return found

    def reset_votes(self, subscriber: str) -> int:
        """Forget every vote of a reader; return how many there were."""
        with self.transaction() as conn:
            return int(conn.execute("DELETE FROM feedback WHERE subscriber = ?",
                                    (subscriber,)).rowcount)

    def remove_votes(self, subscriber: str, keys: Iterable[str]) -> int:
        """Forget a reader's votes on these papers (unknown keys are ignored); return how many."""
        ids = list(self.paper_ids(keys).values())
        removed = 0
        with self.transaction() as conn:
            for chunk in _chunks(ids):
                removed += conn.execute(
                    f"DELETE FROM feedback WHERE subscriber = ? AND paper_id IN"
                    f" ({', '.join('?' * len(chunk))})", [subscriber, *chunk]).rowcount
        return removed

    def judged(self, subscriber: str) -> set[str]:
        """The keys of every paper the reader voted on."""
        rows = self.conn.execute("SELECT p.key FROM feedback f JOIN papers p ON p.id ="
                                 " f.paper_id WHERE f.subscriber = ?", (subscriber,))
        return {str(r[0]) for r in rows}

    def vectors(self, model: str, keys: Iterable[str]) -> dict[str, bytes]:
        """The stored embeddings (blobs) of these papers for ``model``; only those present."""
        found: dict[str, bytes] = {}
        for chunk in _chunks(list(dict.fromkeys(keys))):
            marks = ", ".join("?" for _ in chunk)
            found.update((str(k), bytes(v)) for k, v in self.conn.execute(
                "SELECT p.key, v.vector FROM papers p JOIN vectors v ON v.paper_id = p.id"
                f" AND v.model = ? WHERE p.key IN ({marks})", [model, *chunk]))
        return found

    def outgrown(self, papers: Iterable[Paper]) -> set[str]:
        """Keys of these papers whose stored abstract is shorter than theirs (ingesting them
        replaces it, so a vector of the stored text would be stale)."""
        plist = list(papers)
        lengths: dict[str, int] = {}
        for chunk in _chunks(list(dict.fromkeys(p.key for p in plist))):
            marks = ", ".join("?" for _ in chunk)
            lengths.update((str(k), int(n)) for k, n in self.conn.execute(
                f"SELECT key, length(abstract) FROM papers WHERE key IN ({marks})", chunk))
        return {p.key for p in plist if p.key in lengths and lengths[p.key] < len(p.abstract)}

    def put_vectors(self, model: str, blobs: Mapping[str, bytes]) -> int:
        """Store embeddings of ingested papers for ``model`` (by key; one transaction); a
        paper that has one keeps it. Returns how many were added."""
        with self.transaction() as conn:
            ids = self.paper_ids(blobs)
            cur = conn.executemany("INSERT INTO vectors (paper_id, model, vector)"
                                   " VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                                   [(ids[k], model, b) for k, b in blobs.items() if k in ids])
            return int(cur.rowcount)

    # -- the outbox ------------------------------------------------------------------------
    _DELIVERY = ("SELECT o.id, o.subscriber, i.number, o.recipient, o.message_id, o.subject,"
                 " o.raw, o.status, o.attempts, o.uncertain, o.next_attempt_at, o.last_error,"
                 " o.sent_at, o.uncertain_since, o.failed_at"
                 " FROM outbox o JOIN issues i ON i.id = o.issue_id")

    @staticmethod
    def _delivery(row: tuple[object, ...]) -> Delivery:
        (id_, subscriber, issue, recipient, mid, subject, raw, status, attempts, uncertain, due,
         error, sent, uncertain_since, failed_at) = row
        return Delivery(int(str(id_)), str(subscriber), int(str(issue)), str(recipient),
                        str(mid), str(subject), bytes(raw) if isinstance(raw, bytes) else b"",
                        str(status), int(str(attempts)), int(str(uncertain)), _parse_ts(str(due)),
                        str(error) if error else None, _parse_ts(str(sent)) if sent else None,
                        _parse_ts(str(uncertain_since)) if uncertain_since else None,
                        _parse_ts(str(failed_at)) if failed_at else None)

    def mailed_to(self, address: str) -> set[str]:
        """Names of subscribers with mail queued or sent to ``address`` (any letter case)."""
        rows = self.conn.execute("SELECT DISTINCT subscriber FROM outbox"
                                 " WHERE lower(recipient) = lower(?)", (address,))
        return {r[0] for r in rows}

    def deliveries(self, statuses: Sequence[str] = ("pending", "failed")) -> list[Delivery]:
        """Outbox rows in these states, oldest first (for status and dry runs)."""
        marks = ", ".join("?" for _ in statuses)
        rows = self.conn.execute(f"{self._DELIVERY} WHERE o.status IN ({marks}) ORDER BY o.id",
                                 tuple(statuses))
        return [self._delivery(tuple(r)) for r in rows]

    def is_pending(self, delivery_id: int) -> bool:
        """True while the message is still to be sent (not cancelled by an unsubscribe made
        since the sender read the queue)."""
        row = self.conn.execute("SELECT status FROM outbox WHERE id = ?",
                                (delivery_id,)).fetchone()
        return bool(row and row[0] == "pending")

    # Claims: a sender takes a few messages at a time (``claim``), each for a lease; another
    # sender skips them until it ends. The claim row is locked, not the outbox row, so every
    # write here takes the outbox row first, then the claim rows (in id order): no deadlock
    # on PostgreSQL. Each mark clears the claim.
    _CLAIMABLE = ("(c.lease_until IS NULL OR c.lease_until < :now)"
                  " AND (c.tried IS NULL OR c.tried <= :upto)")
    _STILL_CLAIMABLE = ("(outbox_claims.lease_until IS NULL OR outbox_claims.lease_until < :now)"
                        " AND (outbox_claims.tried IS NULL OR outbox_claims.tried <= :upto)")

    def claim(self, worker: str, limit: int, lease: timedelta, now: datetime,
              due_only: bool = True, *, tried_upto: int | None = None) -> list[Delivery]:
        """Take up to ``limit`` pending messages for ``worker`` until ``now + lease``, fewest
        attempts first (then oldest): those due (all, unless ``due_only``) that no other
        sender holds under a live lease, and (with ``tried_upto``) not tried since the
        ``tries`` mark a pass began with. One transaction; on PostgreSQL the candidates are
        locked with SKIP LOCKED, so concurrent claimers never wait for each other, and the
        claim itself is an upsert that re-checks the lease on the newest row, so two
        claimers never take the same message."""
        params: dict[str, Any] = {"now": _ts(now), "until": _ts(now + lease), "worker": worker,
                                  "upto": 2 ** 62 if tried_upto is None else tried_upto,
                                  "limit": limit}
        due = " AND o.next_attempt_at <= :now" if due_only else ""
        lock = " FOR UPDATE OF o SKIP LOCKED" if self.engine == "postgresql" else ""
        claimed: list[int] = []
        with self.transaction() as conn:
            for _ in range(5):  # PostgreSQL: candidates another claimer took meanwhile
                found = sorted(int(r[0]) for r in conn.execute(
                    "SELECT o.id FROM outbox o LEFT JOIN outbox_claims c ON c.id = o.id"
                    f" WHERE o.status = 'pending'{due} AND {self._CLAIMABLE}"
                    f" ORDER BY o.attempts, o.id LIMIT :limit{lock}", params).fetchall())
                for delivery_id in found:
                    if conn.execute(
                            "INSERT INTO outbox_claims (id, claimed_by, lease_until)"
                            " VALUES (:id, :worker, :until) ON CONFLICT (id) DO UPDATE SET"
                            " claimed_by = excluded.claimed_by,"
                            " lease_until = excluded.lease_until"
                            f" WHERE {self._STILL_CLAIMABLE}"
                            " RETURNING id", {**params, "id": delivery_id}).fetchall():
                        claimed.append(delivery_id)
                if claimed or not found:
                    break
            if not claimed:
                return []
            marks = ", ".join("?" for _ in claimed)
            rows = conn.execute(f"{self._DELIVERY} WHERE o.id IN ({marks})",
                                tuple(claimed)).fetchall()
        return sorted((self._delivery(tuple(r)) for r in rows),
                      key=lambda d: (d.attempts, d.id))

    def renew(self, delivery_id: int, worker: str, until: datetime) -> bool:
        """Extend ``worker``'s lease on a message to ``until``; False when it no longer
        holds it (the lease ran out and another sender took it over)."""
        with self.transaction():
            cur = self.conn.execute("UPDATE outbox_claims SET lease_until = ?"
                                    " WHERE id = ? AND claimed_by = ?",
                                    (_ts(until), delivery_id, worker))
            return bool(cur.rowcount)

    def release(self, worker: str) -> int:
        """Give back what ``worker`` still holds (a pass that stopped early); how many."""
        with self.transaction():
            cur = self.conn.execute(
                "UPDATE outbox_claims SET claimed_by = NULL, lease_until = NULL WHERE id IN"
                " (SELECT id FROM outbox_claims WHERE claimed_by = ? ORDER BY id"
                + (" FOR UPDATE)" if self.engine == "postgresql" else ")"), (worker,))
            return int(cur.rowcount)

    def tries(self) -> int:
        """The mark of the latest try (a pass claims only messages tried up to its start)."""
        row = self.conn.execute("SELECT tries FROM send_pace WHERE id = 1").fetchone()
        return int(row[0]) if row else 0

    def pending_counts(self, now: datetime) -> tuple[int, int]:
        """Pending messages: (all, not due at ``now``)."""
        row = self.conn.execute(
            "SELECT count(*), coalesce(sum(CASE WHEN next_attempt_at > ? THEN 1 ELSE 0 END),"
            " 0) FROM outbox WHERE status = 'pending'", (_ts(now),)).fetchone()
        return int(row[0]), int(row[1])

    def cancel_pending(self, keep: Collection[str], error: str, at: datetime) -> int:
        """Fail the pending mail of every subscriber not in ``keep`` (as ``mark_failed``
        does); how many messages."""
        with self.transaction() as conn:
            names = [str(r[0]) for r in conn.execute(
                "SELECT DISTINCT subscriber FROM outbox WHERE status = 'pending'")]
            cancelled = 0
            for name in sorted(set(names) - set(keep)):
                cancelled += int(conn.execute(
                    "UPDATE outbox SET status = 'failed', attempts = attempts + 1,"
                    " last_error = ?, failed_at = ? WHERE subscriber = ? AND status = 'pending'",
                    (error, _ts(at), name)).rowcount)
            return cancelled

    def pace(self, interval_s: float, now_epoch: float) -> float:
        """Reserve the next send slot of the whole store (every sender, every host): the
        later of ``now_epoch`` and the slot kept, which moves on by ``interval_s``. One
        transaction (the row locked on PostgreSQL); the caller waits until the slot."""
        lock = " FOR UPDATE" if self.engine == "postgresql" else ""
        with self.transaction() as conn:
            row = conn.execute(f"SELECT next_at FROM send_pace WHERE id = 1{lock}").fetchone()
            kept = float(row[0]) if row else 0.0
            # Ahead of now by more than every sender could have reserved: this clock
            # stepped back (or another host's runs ahead). Start from now, never stall.
            ahead = interval_s * PACE_SENDERS + 60
            slot = kept if now_epoch < kept <= now_epoch + ahead else now_epoch
            conn.execute("INSERT INTO send_pace (id, next_at) VALUES (1, ?) ON CONFLICT (id)"
                         " DO UPDATE SET next_at = excluded.next_at", (slot + interval_s,))
        return slot

    def mark_sent(self, delivery_id: int, now: datetime) -> None:
        """The server accepted the message: commit that at once."""
        with self.transaction():
            self.conn.execute("UPDATE outbox SET status = 'sent', sent_at = ?, attempts ="
                              " attempts + 1, last_error = NULL WHERE id = ?",
                              (_ts(now), delivery_id))
            self.conn.execute("DELETE FROM outbox_claims WHERE id = ?", (delivery_id,))

    def mark_retry(self, delivery_id: int, error: str, next_at: datetime,
                   uncertain_at: datetime | None = None) -> None:
        """A transient failure: stay pending, try again at ``next_at``.

        ``uncertain_at`` is the time of a try the server never confirmed; the first such
        time is kept in ``uncertain_since``.
        """
        with self.transaction():
            self.conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ?,"
                " uncertain = uncertain + ?, uncertain_since = coalesce(uncertain_since, ?)"
                " WHERE id = ? AND status = 'pending'",
                (error, _ts(next_at), int(uncertain_at is not None),
                 _ts(uncertain_at) if uncertain_at else None, delivery_id))
            # The try's mark comes from a counter that only grows (claim rows are deleted
            # when a message is sent, so their max would fall back and a pass retry again).
            mark = int(self.conn.execute("UPDATE send_pace SET tries = tries + 1 WHERE id = 1"
                                         " RETURNING tries").fetchall()[0][0])
            self.conn.execute(  # the claim cleared; the try marked after every other
                "INSERT INTO outbox_claims (id, tried) VALUES (?, ?) ON CONFLICT (id)"
                " DO UPDATE SET claimed_by = NULL, lease_until = NULL, tried = excluded.tried",
                (delivery_id, mark))

    def mark_failed(self, delivery_id: int, error: str, at: datetime | None = None,
                    uncertain: bool = False) -> None:
        """A permanent failure for this recipient, with the server's reply, at ``at`` (now)."""
        with self.transaction():
            self.conn.execute("UPDATE outbox SET status = 'failed', attempts = attempts + 1,"
                              " uncertain = uncertain + ?, last_error = ?, failed_at = ?"
                              " WHERE id = ? AND status = 'pending'",
                              (int(uncertain), error, _ts(at or datetime.now(UTC)),
                               delivery_id))
            self.conn.execute("DELETE FROM outbox_claims WHERE id = ?", (delivery_id,))

    def requeue_failed(self, ids: Collection[int], now: datetime) -> list[int]:
        """Put these failed messages back in the queue, due at ``now``, their counters reset.

        The Message-ID and the message bytes stay as they were, so a recipient's mail client
        can tell a repeat. Never the mail of a subscriber who has unsubscribed, nor mail that
        was cancelled by their unsubscribing: those stay failed. One transaction; returns the
        ids requeued.
        """
        requeued: list[int] = []
        with self.transaction() as conn:
            for delivery_id in ids:
                cur = conn.execute(
                    "UPDATE outbox SET status = 'pending', attempts = 0, uncertain = 0,"
                    " uncertain_since = NULL, failed_at = NULL, next_attempt_at = ?,"
                    " last_error = 'requeued after: ' || coalesce(last_error, 'failed')"
                    " WHERE id = ? AND status = 'failed'"
                    " AND coalesce(last_error, '') != 'unsubscribed before delivery'"
                    " AND subscriber NOT IN"
                    " (SELECT name FROM subscribers WHERE unsubscribed_at IS NOT NULL)",
                    (_ts(now), delivery_id))
                if cur.rowcount:
                    requeued.append(delivery_id)
                    conn.execute("DELETE FROM outbox_claims WHERE id = ?", (delivery_id,))
        return requeued

    def set_unsubscribed(self, name: str, when: datetime | None) -> bool:
        """Stop (or, with None, resume) mail to a subscriber; their history stays."""
        with self.transaction():
            self.conn.execute(  # never met yet: register them, starting after the latest run
                "INSERT INTO subscribers (name, cursor_run, created_at)"
                " VALUES (?, (SELECT coalesce(max(id), 0) FROM runs), ?) ON CONFLICT DO NOTHING",
                (name, _ts(when or datetime.now(UTC))))
            cur = self.conn.execute("UPDATE subscribers SET unsubscribed_at = ? WHERE name = ?",
                                    (_ts(when) if when else None, name))
            if when is not None:  # nothing more goes out to them, not even what was queued
                self.conn.execute("UPDATE outbox SET status = 'failed', last_error ="
                                  " 'unsubscribed before delivery' WHERE subscriber = ? AND"
                                  " status = 'pending'", (name,))
        return cur.rowcount > 0

    def unsubscribed(self) -> set[str]:
        """Names of subscribers who asked for no more mail."""
        rows = self.conn.execute("SELECT name FROM subscribers WHERE unsubscribed_at IS NOT NULL")
        return {r[0] for r in rows}

    def subscriber_rows(self) -> list[tuple[str, int, str | None, str | None]]:
        """(name, last issue, last digest time, unsubscribed at) for every known subscriber."""
        rows = self.conn.execute("SELECT name, last_issue, last_digest_at, unsubscribed_at"
                                 " FROM subscribers ORDER BY name")
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    # -- the scheduler and live sources ------------------------------------------------------
    def job_slot(self, name: str) -> datetime | None:
        """The scheduled slot a job last completed (None if never)."""
        row = self.conn.execute("SELECT last_slot FROM jobs WHERE name = ?", (name,)).fetchone()
        return _parse_ts(row[0]) if row and row[0] else None

    def job_slots(self, prefix: str) -> dict[str, datetime | None]:
        """The last slot of every job whose name starts with ``prefix``, in one read."""
        rows = self.conn.execute("SELECT name, last_slot FROM jobs WHERE substr(name, 1, ?) = ?",
                                 (len(prefix), prefix))
        return {str(n): _parse_ts(v) if v else None for n, v in rows}

    def set_job_slot(self, name: str, slot: datetime | None, now: datetime) -> None:
        """Remember that a job ran now, for ``slot``: a restart will not repeat it."""
        self.set_job_slots({name: slot}, now)

    def set_job_slots(self, slots: Mapping[str, datetime | None], now: datetime) -> None:
        """``set_job_slot`` for many jobs, in one transaction."""
        with self.transaction():
            for name, slot in slots.items():
                self._set_job_slot(name, slot, now)

    def _set_job_slot(self, name: str, slot: datetime | None, now: datetime) -> None:
        self.conn.execute(
            "INSERT INTO jobs (name, last_slot, last_run) VALUES (?, ?, ?) ON CONFLICT(name)"
            " DO UPDATE SET last_slot = coalesce(excluded.last_slot, jobs.last_slot),"
            " last_run = excluded.last_run",
            (name, _ts(slot) if slot else None, _ts(now)))

    def source_validators(self, name: str, url: str) -> tuple[str | None, str | None]:
        """The (ETag, Last-Modified) of a source's last good fetch of this very URL."""
        row = self.conn.execute("SELECT etag, last_modified, url FROM source_state"
                                " WHERE name = ?", (name,)).fetchone()
        return (row[0], row[1]) if row and row[2] == url else (None, None)

    def set_source_state(self, name: str, now: datetime, status: str, error: str | None = None,
                         etag: str | None = None, last_modified: str | None = None,
                         keep_validators: bool = True, url: str | None = None) -> None:
        """Record how a fetch went (validators replaced only after a good 200)."""
        with self.transaction():
            self.conn.execute(
                "INSERT INTO source_state (name, url, etag, last_modified, last_fetch,"
                " last_status, last_error) VALUES (:name, :url, :etag, :lm, :now, :status,"
                " :error) ON CONFLICT(name) DO UPDATE SET last_fetch = :now,"
                " last_status = :status, last_error = :error,"
                " url = CASE WHEN :keep = 1 THEN source_state.url ELSE :url END,"
                " etag = CASE WHEN :keep = 1 THEN source_state.etag ELSE :etag END,"
                " last_modified = CASE WHEN :keep = 1 THEN source_state.last_modified"
                " ELSE :lm END",
                {"name": name, "url": url, "etag": etag, "lm": last_modified, "now": _ts(now),
                 "status": status, "error": error, "keep": int(keep_validators)})

    def integrity_ok(self) -> bool:
        """PRAGMA integrity_check says ok."""
        return bool(self.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok")


class _Overlay(Store):
    """A store read in place and written in memory (``Store.snapshot``; nothing reaches disk).

    The file is attached read-only as ``disk``; ``main`` is an in-memory database holding
    the tables a preview writes (``_WRITTEN``), so unqualified names find those in memory
    and every other table (issues, their items, the outbox, votes) on disk, read-only. The
    small tables are copied whole; papers, their vectors and dumps are copied in only when
    a query could touch them (``_fault``), so memory follows the papers read, not the store.
    Every method that reads papers faults in the ones it asks for first. Writes to the
    tables left on disk fail (an in-memory store of the same schema has them).
    """

    _WRITTEN = ("meta", "runs", "dumps", "papers", "sightings", "subscribers", "vectors",
                "jobs", "source_state", "feed_entries", "stale_pages", "feed_changes",
                "page_changes", "render_claims", "tallies")
    _COPIED = ("meta", "runs", "subscribers", "jobs", "source_state", "tallies")  # one row
    _PREFETCH = False  # each look-up faults in what it reads (``_find_paper``)

    def __init__(self, conn: sqlite3.Connection, path: str,
                 tmp: tempfile.TemporaryDirectory[str] | None) -> None:
        super().__init__(conn, path)
        self._tmp = tmp

    @classmethod
    def attach(cls, uri: str, path: str,
               tmp: tempfile.TemporaryDirectory[str] | None) -> _Overlay:
        conn = sqlite3.connect(":memory:", isolation_level=None)
        try:
            conn.execute("ATTACH DATABASE ? AS disk", (uri,))
            marks = ", ".join("?" for _ in cls._WRITTEN)
            schema = conn.execute(  # the tables (then their indexes) exactly as on disk
                "SELECT sql FROM disk.sqlite_master WHERE type IN ('table', 'index') AND"
                f" tbl_name IN ({marks}) AND sql IS NOT NULL ORDER BY type = 'index', rowid",
                cls._WRITTEN).fetchall()
            for (sql,) in schema:
                conn.execute(sql)
            for table in cls._COPIED:
                conn.execute(f"INSERT INTO main.{table} SELECT * FROM disk.{table}")
            # New rows get the ids the disk would give them, never one of its own.
            conn.execute("INSERT INTO main.sqlite_sequence SELECT * FROM disk.sqlite_sequence")
            version = int(conn.execute("PRAGMA disk.user_version").fetchone()[0])
            conn.execute(f"PRAGMA main.user_version = {version}")
        except BaseException:
            conn.close()
            raise
        return cls(conn, path, tmp)

    def close(self) -> None:
        """Close the connection (and remove the private copy of a live store, if any)."""
        try:
            super().close()
        finally:
            if self._tmp is not None:
                self._tmp.cleanup()

    def _fault(self, where: str, params: Sequence[object]) -> None:
        """Copy the disk's papers matching ``where`` (over ``p``) and their vectors into
        memory, unless they are there already (possibly changed)."""
        self.conn.execute(
            "INSERT OR IGNORE INTO main.vectors SELECT v.* FROM disk.vectors v WHERE"
            f" v.paper_id IN (SELECT p.id FROM disk.papers p WHERE ({where})"
            " AND p.id NOT IN (SELECT id FROM main.papers))", params)
        self.conn.execute(
            f"INSERT OR IGNORE INTO main.papers SELECT p.* FROM disk.papers p WHERE {where}",
            params)

    def _fault_keys(self, keys: Iterable[str]) -> None:
        """The papers these keys name, as ``paper_ids`` looks them up."""
        wanted = list(dict.fromkeys(keys))
        for chunk in _chunks(wanted):
            self._fault(f"p.key IN ({', '.join('?' * len(chunk))})", chunk)
        for key in wanted:
            kind, _, value = key.partition(":")
            if kind == "arxiv" and (arxiv := normalise_arxiv_id(value)):
                self._fault("p.arxiv_id = ?", (arxiv,))
            elif kind == "title" and value.strip():
                self._fault("p.title_norm = ?", (normalise_title(value),))

    def _fault_dumps(self, where: str, params: Sequence[object]) -> None:
        self.conn.execute(f"INSERT OR IGNORE INTO main.dumps SELECT * FROM disk.dumps"
                          f" WHERE {where}", params)

    # -- reads that see the disk through memory ---------------------------------------------
    def find_dump(self, sha256: str) -> DumpRecord | None:
        self._fault_dumps("sha256 = ?", (sha256,))
        return super().find_dump(sha256)

    def known_file(self, path: Path) -> bool:
        self._fault_dumps("path = ?", (str(path.resolve()),))
        return super().known_file(path)

    def page_dates(self, after_run: int, upto_run: int) -> list[date]:
        self._fault_dumps("run_id > ? AND run_id <= ?", (after_run, upto_run))
        return super().page_dates(after_run, upto_run)

    def _find_paper(self, paper: Paper) -> int | None:
        self._fault("p.arxiv_id = ? OR p.key = ? OR p.title_norm = ?",
                    (paper.arxiv_id, paper.key, normalise_title(paper.title)))
        return super()._find_paper(paper)

    def papers_after(self, after_run: int, upto_run: int) -> list[Paper]:
        self._fault("p.first_run > ? AND p.first_run <= ?", (after_run, upto_run))
        return super().papers_after(after_run, upto_run)

    def feed_items(self, name: str, limit: int) -> list[Ranked]:
        self._fault_issue_papers(name)
        return super().feed_items(name, limit)

    def feed_window(self, name: str, limit: int
                    ) -> list[tuple[int, Ranked, tuple[object, ...], tuple[str, str] | None]]:
        self._fault_issue_papers(name)
        return super().feed_window(name, limit)

    def _fault_issue_papers(self, name: str) -> None:
        self._fault("p.id IN (SELECT ii.paper_id FROM disk.issues i JOIN disk.issue_items ii"
                    " ON ii.issue_id = i.id WHERE i.subscriber = ?)", (name,))

    def issue_items(self, issue_id: int) -> list[Ranked]:
        self._fault("p.id IN (SELECT paper_id FROM disk.issue_items WHERE issue_id = ?)",
                    (issue_id,))
        return super().issue_items(issue_id)

    def paper_ids(self, keys: Iterable[str]) -> dict[str, int]:
        wanted = list(keys)
        self._fault_keys(wanted)
        return super().paper_ids(wanted)

    def _votes(self, subscriber: str, paper_ids: list[int] | None) -> list[tuple[int, Vote]]:
        self._fault_voted(subscriber)
        return super()._votes(subscriber, paper_ids)

    def judged(self, subscriber: str) -> set[str]:
        self._fault_voted(subscriber)
        return super().judged(subscriber)

    def _fault_voted(self, subscriber: str) -> None:
        self._fault("p.id IN (SELECT paper_id FROM disk.feedback WHERE subscriber = ?)",
                    (subscriber,))

    def vectors(self, model: str, keys: Iterable[str]) -> dict[str, bytes]:
        wanted = list(keys)
        self._fault_keys(wanted)
        return super().vectors(model, wanted)

    def outgrown(self, papers: Iterable[Paper]) -> set[str]:
        plist = list(papers)
        self._fault_keys(p.key for p in plist)
        return super().outgrown(plist)


# -- choosing the engine -------------------------------------------------------------------
def open_store(config: Config) -> Store:
    """The store the config names: PostgreSQL (``[store] url``) or the SQLite file."""
    if config.store_url:
        from .pgstore import PgStore

        return PgStore.connect(config.store_url)
    return Store.open(config.store_path)


def snapshot_store(config: Config) -> Store:
    """``Store.snapshot`` on either engine: readable and writable, nothing kept."""
    if config.store_url:
        from .pgstore import PgSnapshot

        return PgSnapshot.connect(config.store_url)
    return Store.snapshot(config.store_path)


def read_only_store(config: Config) -> Store | None:
    """``Store.read_only`` on either engine (None: no store yet)."""
    if config.store_url:
        from .pgstore import PgStore

        return PgStore.connect(config.store_url)
    return Store.read_only(config.store_path)
