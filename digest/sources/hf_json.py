"""The Hugging Face daily papers JSON API (``/api/daily_papers``): a list of papers."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

from ..errors import InputError
from ..identity import content_hash
from ..models import Paper, ParsedDump, ParseWarning
from .markup import arxiv_id_in, day_of, make_paper

NAME = "hf-daily"


def sniff(text: str) -> float:
    """A JSON array of objects that carry papers."""
    head = text.lstrip()[:1]
    if head not in ("[", "{"):
        return 0.0
    return 1.0 if '"title"' in text[:20000] else 0.6


def _text(value: Any) -> str:
    """A JSON string field; anything else (numbers, lists, null) counts as missing."""
    return value if isinstance(value, str) else ""


def _int(value: Any) -> int | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**31
    return value if ok else None


def parse(path: str, text: str, *, today: date) -> ParsedDump:
    """Each item is ``{"paper": {...}}`` or the paper itself."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not valid JSON ({exc.msg})", exc.lineno) from None
    items = data if isinstance(data, list) else data.get("papers") if isinstance(data, dict) \
        else None
    if not isinstance(items, list):
        raise InputError(path, "JSON without a list of papers (expected the daily_papers API)")
    papers: list[Paper] = []
    warnings: list[ParseWarning] = []
    for n, item in enumerate(items, 1):
        raw = item.get("paper", item) if isinstance(item, dict) else None
        if not isinstance(raw, dict):
            warnings.append(ParseWarning(path, n, f"item {n} is not a paper object; skipped"))
            continue
        title = _text(raw.get("title")) or _text(item.get("title"))
        if not title:
            warnings.append(ParseWarning(path, n, f"item {n} has no paper title; skipped"))
            continue
        people = raw.get("authors")
        authors = tuple(_text(a.get("name")) for a in people if isinstance(a, dict)
                        and _text(a.get("name"))) if isinstance(people, list) else ()
        arxiv = arxiv_id_in(_text(raw.get("id")))
        papers.append(make_paper(
            title=title, abstract=_text(raw.get("summary")) or _text(item.get("summary")),
            source=path, line=n, arxiv_id=arxiv, authors=authors,
            published=day_of(_text(raw.get("publishedAt")) or _text(item.get("publishedAt"))),
            upvotes=_int(raw.get("upvotes")),
            url=f"https://huggingface.co/papers/{arxiv}" if arxiv else None))
    return ParsedDump(path, content_hash(text), "hf-daily-json", None, None, tuple(papers),
                      tuple(warnings))
