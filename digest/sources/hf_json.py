"""The Hugging Face daily papers JSON API (``/api/daily_papers``): a list of papers.

Each item is ``{"paper": {...}, "title", "summary", "publishedAt", "numComments", ...}``
or the paper object itself. A papers web page carries the same items in its data block,
so ``read_items`` maps items to papers for both parsers.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any

from ..errors import InputError
from ..identity import content_hash
from ..models import Paper, ParsedDump, ParseWarning
from .markup import arxiv_id_in, clean, day_of, make_paper

NAME = "hf-daily"
_MAX_DIGITS = 40  # longer integers are no count or id of ours; int() refuses past 4,300
_LISTED = ("submittedOnDailyAt", "publishedAt")  # when the paper was listed, best first


class _TooLong:
    """Stands in for an integer too long to read, so the rest of the document survives."""

    def __repr__(self) -> str:
        return "<integer too long to read>"


TOO_LONG = _TooLong()


def sniff(text: str) -> float:
    """A JSON array of objects that carry papers."""
    head = text.lstrip()[:1]
    if head not in ("[", "{"):
        return 0.0
    return 1.0 if '"title"' in text[:20000] else 0.6


def _integer(digits: str) -> int | _TooLong:
    return int(digits) if len(digits) <= _MAX_DIGITS else TOO_LONG


def loads(text: str) -> Any:
    """JSON text as Python values; an integer too long to read becomes ``TOO_LONG``."""
    return json.loads(text, parse_int=_integer)


def _text(value: Any) -> str:
    """A JSON string field; anything else (numbers, lists, null) counts as missing."""
    return value if isinstance(value, str) else ""


def _int(value: Any) -> int | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**31
    return value if ok else None


def _field(where: tuple[dict[str, Any], ...], key: str) -> Any:
    """The first value given for ``key``: the paper's own fields first, then the item's."""
    return next((d[key] for d in where if d.get(key) is not None), None)


def _text_in(where: tuple[dict[str, Any], ...], key: str) -> str:
    """The first non-blank string given for ``key``."""
    return next((d[key] for d in where if _text(d.get(key)).strip()), "")


def _authors(people: Any) -> tuple[str, ...]:
    """Author names from ``[{"name": ...}, ...]`` (plain strings accepted too)."""
    if not isinstance(people, list):
        return ()
    names = (p.get("name") if isinstance(p, dict) else p for p in people)
    return tuple(name for name in names if isinstance(name, str))


def _listed(where: tuple[dict[str, Any], ...]) -> date | None:
    """The day the paper was listed, falling back to the day it was published."""
    for key in _LISTED:
        for d in where:
            day = day_of(_text(d.get(key)))
            if day:
                return day
    return None


def _paper(path: str, line: int, item: Any, notes: list[str]) -> Paper | None:
    """One item as a paper; None when it is none. ``notes`` hears what was left out."""
    raw = item.get("paper", item) if isinstance(item, dict) else None
    if not isinstance(raw, dict):
        notes.append("is not a paper object; skipped")
        return None
    where = (raw, item)
    title = _text_in(where, "title")
    if not clean(title):
        notes.append("has no paper title; skipped")
        return None
    upvotes = _field(where, "upvotes")
    if upvotes is TOO_LONG:
        notes.append("has an upvote count too long to read; kept without it")
    arxiv = arxiv_id_in(_text(raw.get("id")))
    return make_paper(
        title=title, abstract=_text_in(where, "summary"), summary=_text_in(where, "ai_summary"),
        source=path, line=line, arxiv_id=arxiv, authors=_authors(raw.get("authors")),
        published=_listed(where), upvotes=_int(upvotes),
        url=f"https://huggingface.co/papers/{arxiv}" if arxiv else None,
        links=(_text_in(where, "githubRepo"), _text_in(where, "projectPage")))


def read_items(path: str, items: list[Any],
               line: int | None = None) -> tuple[list[Paper], list[ParseWarning]]:
    """Papers from daily-papers items; a bad item is skipped with a warning, never fatal.

    Each paper's line is ``line`` when given (the page line of a data block), else the
    item's number.
    """
    papers: list[Paper] = []
    warnings: list[ParseWarning] = []
    for n, item in enumerate(items, 1):
        at = line or n
        notes: list[str] = []
        try:
            paper = _paper(path, at, item, notes)
        except Exception as exc:  # one hostile item must not cost the others
            paper = None
            reason = clean(str(exc))[:200]
            notes.append(f"could not be read ({type(exc).__name__}: {reason}); skipped")
        warnings.extend(ParseWarning(path, at, f"item {n} {note}") for note in notes)
        if paper is not None:
            papers.append(paper)
    return papers, warnings


def items_in(data: Any) -> list[Any] | None:
    """The list of items in a daily-papers document or page data block, if any."""
    if isinstance(data, dict):
        data = next((data[k] for k in ("dailyPapers", "papers") if k in data), None)
    return data if isinstance(data, list) else None


def parse(path: str, text: str, *, today: date) -> ParsedDump:
    """Each item is ``{"paper": {...}}`` or the paper itself."""
    try:
        data = loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not valid JSON ({exc.msg})", exc.lineno) from None
    items = items_in(data)
    if items is None:
        raise InputError(path, "JSON without a list of papers (expected the daily_papers API)")
    papers, warnings = read_items(path, items)
    return ParsedDump(path, content_hash(text), "hf-daily-json", None, None, tuple(papers),
                      tuple(warnings))
