"""Sources: read a dump file, sniff its format, hand it to the parser that fits.

Each format lives in its own module exposing ``NAME``, ``sniff(text) -> float``
(0 = not mine, 1 = certainly mine) and ``parse(path, text, *, today) -> ParsedDump``.
JSON, HTML and feed parsers join ``PARSERS`` beside the text-dump parser.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import date, datetime, tzinfo
from pathlib import Path
from types import ModuleType

from ..errors import InputError
from ..models import ParsedDump
from . import feeds, hf_html, hf_json, hf_text

PARSERS: tuple[ModuleType, ...] = (hf_text, hf_json, hf_html, feeds)
_MIN_CONFIDENCE = 0.5


def decode(path: str, raw: bytes) -> str:
    """Bytes -> text: UTF-8 with or without BOM, line endings made LF."""
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise InputError(path, "UTF-16 text: save the page as UTF-8 and drop it again")
    if b"\x00" in raw[:4096]:
        raise InputError(path, "not a page dump: this is a binary file; remove it from the inbox")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputError(
            path, f"not UTF-8 text (bad byte at offset {exc.start}); save the page as UTF-8", line
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def parse_text(path: str, text: str, *, today: date, allow_empty: bool = False) -> ParsedDump:
    """Sniff which parser fits ``text`` and run it; InputError when none does.

    A document with no papers at all is an error too, unless ``allow_empty`` (a live
    source's listing may be empty today).
    """
    best, confidence = max(((p, p.sniff(text)) for p in PARSERS), key=lambda pc: pc[1])
    if confidence < _MIN_CONFIDENCE:
        raise InputError(
            path,
            "not a page dump: no papers listing found (expected a copied Hugging Face "
            "papers page: title lines each followed by an abstract); remove it from the inbox",
        )
    try:
        parsed: ParsedDump = best.parse(path, text, today=today)
    except RecursionError:
        raise InputError(path, "nested too deeply to read; remove it from the inbox") from None
    except InputError:
        raise
    except Exception as exc:  # hostile input must not stop every later run
        raise InputError(path, f"could not be read by the {best.NAME} parser "
                               f"({type(exc).__name__}: {exc}); remove it from the inbox and "
                               "report it") from None
    if not parsed.papers and not allow_empty:
        raise InputError(path, f"no papers found in this {best.NAME} document; remove it from "
                               "the inbox")
    return parsed


def file_date(path: Path, zone: tzinfo | None = None) -> date:
    """The day a dump was saved (its modification time, in ``zone`` or local time).

    Yearless dates in the dump resolve against it.
    """
    return datetime.fromtimestamp(path.stat().st_mtime, tz=zone).date()


def read_dump(path: Path, *, today: date | None = None, zone: tzinfo | None = None) -> ParsedDump:
    """Read and parse one dump file."""
    try:
        raw = path.read_bytes()
        day = today or file_date(path, zone)
    except OSError as exc:
        raise InputError(str(path), f"cannot read: {exc.strerror}") from None
    return parse_text(str(path), decode(str(path), raw), today=day)


def inbox_files(inbox: Path) -> list[Path]:
    """The dump files waiting in an inbox folder, in name order (hidden files skipped)."""
    if not inbox.is_dir():
        return []
    return sorted(p for p in inbox.iterdir() if p.is_file() and not p.name.startswith("."))


def iter_dumps(paths: Iterable[Path],
               zone: tzinfo | None = None) -> Iterator[ParsedDump | InputError]:
    """Parse each path in turn, yielding the error in place of a bad file so the rest go on."""
    for path in paths:
        try:
            yield read_dump(path, zone=zone)
        except InputError as exc:
            yield exc
