"""Turning a subscriber's e-mail off and on (the API `digest unsubscribe` and the web share).

One store transaction each, with no run lock: a run that is making digests meanwhile
reads the change when it records the issue, and queues no mail for someone who left.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from .config import Config
from .errors import UsageError
from .store import Store, open_store, read_only_store


def by_email(config: Config, store: Store, email: str) -> list[str]:
    """Every subscriber with this address: in the config, or with mail queued to it."""
    names = {p.name for p in config.subscribers
             if p.email and p.email.casefold() == email.casefold()}
    names |= store.mailed_to(email)
    if not names:
        raise UsageError(f"no subscriber has the e-mail {email!r} in {config.path}; subscribers "
                         "are added there, under [[subscribers]]")
    return sorted(names)


def set_mail(config: Config, names: Iterable[str], *, stop: bool,
             now: datetime | None = None) -> None:
    """Stop (``stop=True``) or resume e-mail to these subscribers; pending mail of those who
    stop is cancelled. Their history, feed and archive stay."""
    store = open_store(config)
    try:
        for name in names:
            store.set_unsubscribed(name, (now or datetime.now(UTC)) if stop else None)
    finally:
        store.close()


def set_mail_by_email(config: Config, email: str, *, stop: bool,
                      now: datetime | None = None) -> list[str]:
    """``set_mail`` for every subscriber with this address; return their names."""
    store = open_store(config)
    try:
        names = by_email(config, store, email)
    finally:
        store.close()
    set_mail(config, names, stop=stop, now=now)
    return names


def is_unsubscribed(config: Config, name: str) -> bool:
    """True when the subscriber asked for no more e-mail (nothing is created to find out)."""
    store = read_only_store(config)
    if store is None:
        return False
    try:
        return name in store.unsubscribed()
    finally:
        store.close()
