"""Sources: read a dump file, sniff its format, hand it to the parser that fits.

Each format lives in its own module exposing ``NAME``, ``sniff(text) -> float``
(0 = not mine, 1 = certainly mine) and ``parse(path, text, *, today) -> ParsedDump``.
JSON, HTML and feed parsers join ``PARSERS`` beside the text-dump parser.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from datetime import date, datetime, tzinfo
from pathlib import Path
from types import ModuleType

from ..errors import InputError
from ..models import ParsedDump, ParseWarning
from . import feeds, hf_html, hf_json, hf_markdown, hf_text

# Markdown first: on a tie max() keeps the first, and a Markdown copy read as a text dump
# would give junk entries.
PARSERS: tuple[ModuleType, ...] = (hf_markdown, hf_text, hf_json, hf_html, feeds)
_MIN_CONFIDENCE = 0.5
# Structured listings say for themselves that they are listings: an empty one (an arXiv
# query with no results, a quiet feed, a day with no papers) is simply no papers.
_EMPTY_OK = frozenset({"feed", "hf-daily"})
# Boilerplate: runs of at least _SHINGLE words found in the abstract of every entry, when
# at least _BOILERPLATE_MIN_ENTRIES entries have one (fewer could share a phrase by chance).
_SHINGLE = 3
_BOILERPLATE_MIN_ENTRIES = 4
_EDGE = 32  # boilerplate is looked for in this many words at each end of an abstract


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
    if not parsed.papers and not allow_empty and best.NAME not in _EMPTY_OK:
        raise InputError(path, f"no papers found in this {best.NAME} document; remove it from "
                               "the inbox")
    return strip_boilerplate(parsed)


def _word_key(word: str) -> str:
    return word.strip(".,;:!?()[]{}\"'|·•").casefold()


def _edges(keys: list[str], common: set[tuple[str, ...]]) -> list[bool]:
    """Which words belong to a common run at the start or the end of an abstract (a card's
    header and footer; the same phrase inside several abstracts may be the papers' own)."""
    cover = [False] * len(keys)
    for i in range(len(keys) - _SHINGLE + 1):
        if tuple(keys[i:i + _SHINGLE]) in common:
            cover[i:i + _SHINGLE] = [True] * _SHINGLE
    drop = [False] * len(keys)
    i = 0
    while i < len(keys) and cover[i]:
        drop[i] = True
        i += 1
    j = len(keys) - 1
    while j >= i and cover[j]:
        drop[j] = True
        j -= 1
    return drop


def _ends(words: list[str]) -> list[str]:
    """The words boilerplate can be made of: the first and last ``_EDGE`` of an abstract."""
    return words if len(words) <= 2 * _EDGE else words[:_EDGE] + words[-_EDGE:]


def strip_boilerplate(dump: ParsedDump) -> ParsedDump:
    """Remove text that every entry's abstract starts or ends with ("Add to Selected
    Citations", "Download PDF", a journal's header): it says nothing about any paper, yet
    it would match keywords in all of them. One warning names what was removed.

    Only each abstract's first and last ``_EDGE`` words are looked at, so the cost does
    not grow with the abstracts' length.
    """
    words = [p.abstract.split() for p in dump.papers]
    keys = [[_word_key(w) for w in _ends(ws)] for ws in words]
    with_text = [k for k in keys if len(k) >= _SHINGLE]
    if len(with_text) < _BOILERPLATE_MIN_ENTRIES:
        return dump
    common: set[tuple[str, ...]] | None = None
    for k in sorted(with_text, key=len):
        found = set(zip(*(k[i:] for i in range(_SHINGLE)), strict=False))
        common = found if common is None else common & found
        if not common:
            return dump
    common = {s for s in common or () if any(s)}
    if not common:
        return dump
    papers = []
    removed = ""
    for paper, ws, ks in zip(dump.papers, words, keys, strict=True):
        if len(ws) <= 2 * _EDGE:
            drop = _edges(ks, common)
        else:  # the head and the tail on their own, the middle always kept
            head, tail = _edges(ks[:_EDGE], common), _edges(ks[_EDGE:], common)
            drop = head + [False] * (len(ws) - 2 * _EDGE) + tail
        if not any(drop):
            papers.append(paper)
            continue
        if not removed:
            removed = " ".join(w for w, d in zip(ws, drop, strict=True) if d)
        kept = " ".join(w for w, d in zip(ws, drop, strict=True) if not d)
        papers.append(dataclasses.replace(paper, abstract=kept))
    if not removed:
        return dump
    note = ParseWarning(dump.path, dump.papers[0].line,
                        f"text found in every entry removed before ranking: {removed[:80]!r}")
    return dataclasses.replace(dump, papers=tuple(papers), warnings=(*dump.warnings, note))


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
