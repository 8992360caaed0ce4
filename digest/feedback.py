"""Readers' 👍/👎 on papers: record, list, forget (a thin layer over the store).

Votes train the reader's ranking (``rank.rank(..., votes=...)``), and a paper the reader
judged is never offered to them as new again. Recording needs no run lock: each change
is one SQLite transaction, which waits (busy timeout) for a run's transaction to end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime

from .config import Config
from .errors import UsageError
from .identity import normalise_title
from .models import Paper, Vote
from .store import open_store, read_only_store


def check_subscriber(config: Config, subscriber: str) -> None:
    """UsageError naming the configured subscribers when ``subscriber`` is not one."""
    if all(p.name != subscriber for p in config.subscribers):
        names = ", ".join(p.name for p in config.subscribers) or "none configured"
        raise UsageError(f"no subscriber named {subscriber!r} in {config.path} (have: {names})")


def record(config: Config, subscriber: str, likes: Sequence[str] = (),
           dislikes: Sequence[str] = (), now: datetime | None = None) -> list[Vote]:
    """Record votes by paper key in one transaction; return them as stored, in the order given.

    Voting the same way twice is one vote; a new vote on a paper replaces the old one. An
    unknown key, or a key both liked and disliked, records nothing (UsageError).
    """
    check_subscriber(config, subscriber)
    both = sorted(set(likes) & set(dislikes))
    if both:
        raise UsageError("a paper cannot be liked and disliked at once: "
                         + ", ".join(repr(k) for k in both))
    votes = [(k, True) for k in likes] + [(k, False) for k in dislikes]
    if not votes:
        raise UsageError("nothing to record: give --like KEY or --dislike KEY")
    if not config.has_store():
        raise UsageError(f"{config.store_name}: no papers have been ingested yet, so there is "
                         "nothing to vote on; run `digest run` first")
    store = open_store(config)
    try:
        return store.record_votes(subscriber, votes, now or datetime.now(UTC))
    finally:
        store.close()


def votes(config: Config, subscriber: str) -> list[Vote]:
    """A reader's votes, newest first (none when there is no store yet; nothing is created)."""
    check_subscriber(config, subscriber)
    store = read_only_store(config)
    if store is None:
        return []
    try:
        return store.votes(subscriber)
    finally:
        store.close()


def undo(config: Config, subscriber: str, keys: Sequence[str]) -> int:
    """Forget the reader's votes on these papers; return how many there were."""
    check_subscriber(config, subscriber)
    if not config.has_store():
        return 0
    store = open_store(config)
    try:
        return store.remove_votes(subscriber, keys)
    finally:
        store.close()


def reset(config: Config, subscriber: str) -> int:
    """Forget every vote of a reader; return how many there were."""
    check_subscriber(config, subscriber)
    if not config.has_store():
        return 0
    store = open_store(config)
    try:
        return store.reset_votes(subscriber)
    finally:
        store.close()


def judged(votes: Iterable[Vote]) -> Callable[[Paper], bool]:
    """A test: is this paper (from a dump, maybe under another key) one the reader judged?

    The same rules as the store's identity: the key, the arXiv id, or the normalised title
    unless both sides carry different arXiv ids.
    """
    keys: set[str] = set()
    arxiv: set[str] = set()
    titles: dict[str, set[str | None]] = {}
    for v in votes:
        keys.add(v.paper.key)
        if v.paper.arxiv_id:
            arxiv.add(v.paper.arxiv_id)
        titles.setdefault(normalise_title(v.paper.title), set()).add(v.paper.arxiv_id)

    def seen(paper: Paper) -> bool:
        if paper.key in keys or (paper.arxiv_id and paper.arxiv_id in arxiv):
            return True
        ids = titles.get(normalise_title(paper.title))
        return ids is not None and (paper.arxiv_id is None or None in ids)

    return seen
