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


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 \
        else None


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
        if not isinstance(raw, dict) or not isinstance(raw.get("title") or
                                                       (item or {}).get("title"), str):
            warnings.append(ParseWarning(path, n, f"item {n} has no paper title; skipped"))
            continue
        authors = tuple(str(a.get("name")) for a in raw.get("authors", [])
                        if isinstance(a, dict) and a.get("name"))
        arxiv = arxiv_id_in(str(raw.get("id") or ""))
        papers.append(make_paper(
            title=raw.get("title") or item.get("title"),
            abstract=str(raw.get("summary") or item.get("summary") or ""),
            source=path, line=n, arxiv_id=arxiv, authors=authors,
            published=day_of(raw.get("publishedAt") or item.get("publishedAt")),
            upvotes=_int(raw.get("upvotes")),
            url=f"https://huggingface.co/papers/{arxiv}" if arxiv else None))
    return ParsedDump(path, content_hash(text), "hf-daily-json", None, None, tuple(papers),
                      tuple(warnings))
