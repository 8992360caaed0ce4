"""``digest store copy --to postgresql://...``: a SQLite store, copied into an empty
PostgreSQL database, row for row.

Nothing is minted again: every id, every meta value (``tag_authority`` and ``created_at``,
which feed ids are made of; ``store_id``), every outbox row (its Message-ID and the raw
message) arrives as it was, so the feeds built from the copy carry the same entry ids and
mail already queued or sent keeps its Message-IDs.

The source is read, never written: in place through a read-only, immutable connection, or,
when a ``-wal`` file lies beside it (another process has it open, or one died holding it),
from a private copy of the file and its WAL. Everything is read in one pass and checked
against the file afterwards: if the store was written while it was copied (a run or the
daemon started), the copy is refused and nothing is kept.

The target is opened with ``PgStore.connect``, which creates the schema. Every table the
source has is copied, parents before children (``PRAGMA foreign_key_list``), with COPY FROM
STDIN, streaming (a table is never in memory whole), all in one transaction that holds every
table locked: a failure anywhere leaves the target as empty as it was. The identity
sequences are then set past the highest id each table ever handed out (``sqlite_sequence``
included, so a deleted row's id is never handed out again), and every table's row count is
checked against the source's before anything is committed.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import LockedError, StoreError, UsageError
from .schema import MIGRATIONS

if TYPE_CHECKING:
    from .pgstore import PgStore

BATCH = 5000  # rows fetched from SQLite at a time (and between progress lines' checks)
LOCK_TIMEOUT = "10s"  # how long to wait for another user of the target to let go
_INTERNAL = "sqlite_"  # sqlite_sequence, sqlite_stat1, ...: SQLite's own tables
_BYTES = frozenset({"bytea"})
_TEXT = frozenset({"text", "varchar", "bpchar"})


@dataclass(frozen=True)
class CopyReport:
    """What ``copy_store`` copied: rows per table (in the order copied), the identity
    sequences' next ids, and how long it took."""

    source: str
    target: str  # the URL without a password
    tables: dict[str, int] = field(default_factory=dict)
    next_ids: dict[str, int] = field(default_factory=dict)  # table -> the id handed out next
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        """Rows copied, all tables together."""
        return sum(self.tables.values())

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        """The report as a person reads it: a line per table, then the total."""
        width = max((len(t) for t in self.tables), default=0)
        out = [f"{name:<{width}}  {count:>9,} rows" for name, count in self.tables.items()]
        out.append(f"copied {self.rows:,} rows in {len(self.tables)} tables from "
                   f"{self.source} to {self.target} in {self.seconds:.1f}s")
        return out

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (for ``--json``)."""
        return {"source": self.source, "target": self.target, "tables": dict(self.tables),
                "rows": self.rows, "next_ids": dict(self.next_ids),
                "seconds": round(self.seconds, 3)}


def copy_store(source: Path, url: str, *,
               progress: Callable[[str], None] | None = None) -> CopyReport:
    """Copy the SQLite store file ``source`` into the empty PostgreSQL database ``url``.

    ``url`` is a ``postgresql://`` URL (its password, if needed, from libpq's environment:
    ``PGPASSWORD`` or ``~/.pgpass``). The database must hold no digest data yet: its schema
    is created here if it is missing, and a database with any papers, runs, issues or
    other rows (say a run was pointed at it already) is refused (``UsageError``) and left
    as it is. Point the config at the database (``[store] url``) only after the copy.

    ``source`` must be a store of this digest's schema version: an older one is refused
    (``StoreError``; run ``digest run`` once on it, still on SQLite, to migrate it), as is a
    newer one or a file that is not a store. ``source`` is never written (its bytes, times
    and folder stay as they were); it must not be written meanwhile either (stop the daemon
    and runs first; a change is noticed and the copy refused, with nothing kept).

    Either everything is copied, in one transaction, or nothing is. ``progress`` hears a
    line per table. Returns the rows copied per table; raises ``StoreError`` when a row
    cannot be copied or the counts do not match (the target is then left empty).
    """
    started = time.monotonic()
    say = progress or (lambda _line: None)
    if not source.is_file():
        what = "is not a file" if source.exists() else "does not exist"
        raise UsageError(f"{source}: {what}: there is no SQLite store to copy (the store is "
                         "digest.sqlite3 in [digest] data_dir; pass the config that uses it)")
    from .pgstore import PgStore, _safe

    before = _file_state(source)
    with _read_source(source) as conn:
        tables = _source_tables(conn, source)
        target = PgStore.connect(url)  # creates (migrates) the schema
        try:
            report = _copy(conn, tables, target, str(source), _safe(url), say,
                           lambda: _check_unchanged(source, before), started)
        finally:
            target.close()
    return report


# -- the source ----------------------------------------------------------------------------
@contextlib.contextmanager
def _read_source(source: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to the store: the file itself (immutable: nothing, not even
    a ``-shm`` file, is made beside it), or a private copy of it and its WAL."""
    wal = source.with_name(source.name + "-wal")
    tmp: tempfile.TemporaryDirectory[str] | None = None
    try:
        read = source
        if wal.exists():  # open elsewhere, or left by a crash: fold a copy, not the file
            tmp = tempfile.TemporaryDirectory(prefix="digest-copy-")
            read = Path(tmp.name) / source.name
            shutil.copyfile(source, read)
            shutil.copyfile(wal, Path(tmp.name) / wal.name)
            fold = sqlite3.connect(read)
            try:
                fold.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                fold.close()
        conn = sqlite3.connect(f"{read.resolve().as_uri()}?mode=ro&immutable=1", uri=True,
                               isolation_level=None)
    except (OSError, sqlite3.Error) as exc:
        if tmp is not None:
            tmp.cleanup()
        raise StoreError(f"{source}: cannot read the store: {exc}") from None
    try:
        conn.execute("BEGIN")  # one read transaction: every table as of one moment
        yield conn
    finally:
        conn.close()
        if tmp is not None:
            tmp.cleanup()


def _source_tables(conn: sqlite3.Connection, source: Path) -> list[str]:
    """The store's tables, parents before children; StoreError unless the store is of the
    schema version this digest has."""
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        names = [str(r[0]) for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY rowid")
            if not str(r[0]).startswith(_INTERNAL)]
        parents = {t: {str(fk[2]) for fk in conn.execute(
            f"PRAGMA foreign_key_list({_quote(t)})")} - {t} for t in names}
    except sqlite3.Error as exc:
        raise StoreError(f"{source}: cannot read the store: {exc}") from None
    if version == 0 and "meta" not in names:
        raise StoreError(f"{source}: not a digest store (no schema in it): nothing to copy")
    if version < len(MIGRATIONS):
        raise StoreError(f"{source}: the store has schema version {version}, older than this "
                         f"digest's ({len(MIGRATIONS)}); run `digest run` once with this "
                         "digest (its [store] still the SQLite file) to migrate it, then copy "
                         "again")
    if version > len(MIGRATIONS):
        raise StoreError(f"{source}: the store has schema version {version}, newer than this "
                         f"digest understands ({len(MIGRATIONS)}); upgrade digest")
    return _parents_first(names, parents, source)


def _parents_first(names: list[str], parents: dict[str, set[str]], source: Path) -> list[str]:
    """``names`` ordered so that every table comes after the tables it refers to (ties
    keep the schema's order)."""
    unknown = sorted({p for ps in parents.values() for p in ps} - set(names))
    if unknown:
        raise StoreError(f"{source}: the store refers to tables it does not have: "
                         f"{', '.join(unknown)}")
    done: list[str] = []
    left = list(names)
    while left:
        ready = [t for t in left if parents[t] <= set(done)]
        if not ready:
            raise StoreError(f"{source}: the store's foreign keys go round in a circle: "
                             f"{', '.join(left)}")
        done += ready
        left = [t for t in left if t not in ready]
    return done


def _file_state(source: Path) -> tuple[tuple[int, int] | None, ...]:
    """Size and mtime of the store and its ``-wal`` and ``-journal`` files (None: absent)."""
    def one(path: Path) -> tuple[int, int] | None:
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        return st.st_size, st.st_mtime_ns

    return tuple(one(source.with_name(source.name + tail)) for tail in ("", "-wal",
                                                                        "-journal"))


def _check_unchanged(source: Path, before: tuple[tuple[int, int] | None, ...]) -> None:
    if _file_state(source) != before:
        raise StoreError(f"{source}: the store was written while it was copied (is a digest "
                         "run or the daemon using it?); stop it and copy again (nothing was "
                         "kept in the target)")


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [str(r[1]) for r in conn.execute(f"PRAGMA table_info({_quote(table)})")]


def _fresh_rows() -> dict[str, set[tuple[Any, ...]]]:
    """What the migrations themselves put in an empty store (meta's ``enriched_upto``,
    ``send_pace``'s one row), table -> rows: what a just-created target holds that is
    nobody's data (made by running the migrations on an in-memory SQLite database)."""
    memory = sqlite3.connect(":memory:", isolation_level=None)
    try:
        for migration in MIGRATIONS:
            memory.executescript(migration)
        names = [str(r[0]) for r in memory.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")
            if not str(r[0]).startswith(_INTERNAL)]
        found = {t: {tuple(r) for r in memory.execute(f"SELECT * FROM {_quote(t)}")}
                 for t in names}
    finally:
        memory.close()
    return {t: rows for t, rows in found.items() if rows}


# -- the target ----------------------------------------------------------------------------
def _copy(conn: sqlite3.Connection, tables: list[str], target: PgStore, source: str, shown: str,
          say: Callable[[str], None], unchanged: Callable[[], None],
          started: float) -> CopyReport:
    import psycopg

    raw = target.pg.raw
    try:
        with raw.transaction():
            columns = _target_columns(raw, shown, tables)
            for table in tables:
                mine = _columns(conn, table)
                if set(mine) != set(columns[table]):
                    raise StoreError(
                        f"{shown}: table {table} has columns {', '.join(columns[table])} "
                        f"there but {', '.join(mine)} in {source}: the schemas differ")
            _lock(raw, shown, tables)
            _refuse_data(raw, shown, tables)
            counts: dict[str, int] = {}
            for table in tables:
                counts[table] = _copy_table(conn, raw, table, columns[table], source)
                say(f"{table}: {counts[table]:,} rows")
            next_ids = _move_sequences(conn, raw)
            unchanged()  # what was read is what the file holds
            _check_counts(conn, raw, tables, counts, shown, source)
    except psycopg.Error as exc:
        raise StoreError(f"{shown}: the copy failed, nothing was kept: {_first_line(exc)}"
                         ) from None
    return CopyReport(source, shown, counts, next_ids, time.monotonic() - started)


def _target_columns(raw: Any, shown: str, tables: list[str]) -> dict[str, dict[str, str]]:
    """Table -> column -> its PostgreSQL type (``udt_name``: int8, text, bytea, float8)."""
    found: dict[str, dict[str, str]] = {}
    for table, column, kind in raw.execute(
            "SELECT table_name, column_name, udt_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position"):
        found.setdefault(str(table), {})[str(column)] = str(kind)
    missing = [t for t in tables if t not in found]
    if missing:
        raise StoreError(f"{shown}: the database lacks the tables {', '.join(missing)} "
                         "(its schema is not this digest's)")
    return {t: found[t] for t in tables}


def _lock(raw: Any, shown: str, tables: list[str]) -> None:
    """Every table locked against writers until the copy commits (readers may read: they
    see the empty database), so nothing can slip in between the check and the copy."""
    import psycopg
    from psycopg import sql

    raw.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT)))
    try:
        with raw.transaction():  # a savepoint: the error below is ours to word
            raw.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(
                sql.SQL(", ").join(sql.Identifier(t) for t in tables)))
    except psycopg.errors.LockNotAvailable:
        raise LockedError(f"{shown}: another digest is using the database; stop it (the "
                          "copy needs it to itself) and try again") from None


def _refuse_data(raw: Any, shown: str, tables: list[str]) -> None:
    """UsageError if any table holds a row that the migrations did not put there; then
    those rows go (the source has its own)."""
    from psycopg import sql

    fresh = _fresh_rows()
    held: list[str] = []
    for table in tables:
        count = int(raw.execute(sql.SQL("SELECT count(*) FROM {}").format(
            sql.Identifier(table))).fetchone()[0])
        if count > len(fresh.get(table, ())):
            held.append(f"{table}: {count:,}")
        elif count and table in fresh:
            rows = {tuple(r) for r in raw.execute(sql.SQL("SELECT * FROM {}").format(
                sql.Identifier(table)))}
            if not rows <= fresh[table]:
                held.append(f"{table}: {count:,}")
    if held:
        raise UsageError(f"{shown}: the database already holds digest data ({'; '.join(held)}"
                         " rows); copy into an empty database (create one, e.g. `createdb "
                         "digest2`, and pass its URL to --to); nothing was changed")
    for table in reversed(tables):
        if table in fresh:
            raw.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(table)))


def _copy_table(conn: sqlite3.Connection, raw: Any, table: str, columns: dict[str, str],
                source: str) -> int:
    """COPY one table (binary: bytes go as they are), a batch at a time; the rows written."""
    import psycopg
    from psycopg import sql

    names = list(columns)
    select = ", ".join(_read_as(c, columns[c]) for c in names)
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c in names))
    written = 0
    try:
        rows = conn.execute(f"SELECT {select} FROM {_quote(table)}")
        with raw.cursor().copy(statement) as copy:
            copy.set_types([columns[c] for c in names])
            while batch := rows.fetchmany(BATCH):
                for row in batch:
                    try:
                        copy.write_row(row)
                    except (TypeError, ValueError, OverflowError) as exc:
                        column = _misfit(row, names, columns)
                        raise StoreError(
                            f"{source}: table {table}, row {written + 1}: column {column} "
                            f"holds {row[names.index(column)]!r}, which PostgreSQL's "
                            f"{columns[column]} cannot take ({exc}); nothing was kept"
                            if column else f"{source}: table {table}, row {written + 1}: "
                            f"{exc}; nothing was kept") from None
                    written += 1
    except psycopg.Error as exc:
        raise StoreError(f"{source}: table {table} cannot be copied (row {written} or "
                         f"before): {_first_line(exc)}; nothing was kept") from None
    except sqlite3.Error as exc:
        raise StoreError(f"{source}: cannot read table {table} (after row {written}): "
                         f"{exc}") from None
    except UnicodeError as exc:
        raise StoreError(f"{source}: table {table} holds text that is not UTF-8 (after row "
                         f"{written}): {exc}") from None
    return written


_FITS: dict[str, tuple[type, ...]] = {"int8": (int,), "int4": (int,), "int2": (int,),
                                      "float8": (float, int), "float4": (float, int),
                                      "text": (str,), "bytea": (bytes,)}


def _misfit(row: tuple[Any, ...], names: list[str], columns: dict[str, str]) -> str | None:
    """The first column of ``row`` whose value is not of its PostgreSQL type's kind."""
    for name, value in zip(names, row, strict=True):
        kinds = _FITS.get(columns[name])
        if value is not None and kinds is not None and (
                not isinstance(value, kinds) or isinstance(value, bool)):
            return name
    return None


def _read_as(column: str, kind: str) -> str:
    """How a column is read so that it arrives as its PostgreSQL type: bytea columns as
    bytes and text columns as text, whatever SQLite stored (its columns take any type);
    numbers as they are (the server parses them: what is not one is refused)."""
    name = _quote(column)
    if kind in _BYTES:
        return f"CAST({name} AS BLOB)"
    if kind in _TEXT:
        return f"CAST({name} AS TEXT)"
    return name


def _move_sequences(conn: sqlite3.Connection, raw: Any) -> dict[str, int]:
    """Every identity column's sequence past the highest id the table holds or, on
    SQLite, ever handed out (``sqlite_sequence``); table -> the next id it hands out."""
    from psycopg import sql

    try:
        handed = {str(n): int(s) for n, s in conn.execute(
            "SELECT name, seq FROM sqlite_sequence")}
    except sqlite3.OperationalError:  # no AUTOINCREMENT table at all
        handed = {}
    next_ids: dict[str, int] = {}
    for table, column in raw.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND is_identity = 'YES'"
            " ORDER BY table_name").fetchall():
        table, column = str(table), str(column)
        top = raw.execute(sql.SQL("SELECT coalesce(max({}), 0) FROM {}").format(
            sql.Identifier(column), sql.Identifier(table))).fetchone()[0]
        last = max(int(top), handed.get(table, 0))
        # setval(seq, n, true): the next id is n + 1; (1, false): the next is 1
        raw.execute("SELECT setval(pg_get_serial_sequence(%s, %s), %s, %s)",
                    (sql.Identifier(table).as_string(raw), column, max(last, 1), last > 0))
        next_ids[table] = last + 1
    return next_ids


def _check_counts(conn: sqlite3.Connection, raw: Any, tables: list[str],
                  counts: dict[str, int], shown: str, source: str) -> None:
    from psycopg import sql

    wrong = []
    for table in tables:
        there = int(raw.execute(sql.SQL("SELECT count(*) FROM {}").format(
            sql.Identifier(table))).fetchone()[0])
        here = int(conn.execute(f"SELECT count(*) FROM {_quote(table)}").fetchone()[0])
        if not here == there == counts[table]:
            wrong.append(f"{table}: {here:,} in the store, {counts[table]:,} read, "
                         f"{there:,} in the database")
    if wrong:
        raise StoreError(f"{shown}: the copy of {source} does not match it ({'; '.join(wrong)});"
                         " nothing was kept")


def _quote(name: str) -> str:
    """An SQLite identifier, quoted."""
    return '"' + name.replace('"', '""') + '"'


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

