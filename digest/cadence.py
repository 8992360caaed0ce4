"""When each subscriber's digest is due (pure: the clock is passed in).

``schedule`` only ticks the daemon; the slot arithmetic lives here, with zoneinfo, so that
"daily 08:00" means 08:00 on the subscriber's wall clock on both sides of a DST change, and
a daemon that was down for three days owes one digest, not three.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FORM = re.compile(r"^(?:(immediate|hourly)|daily\s+(\d{1,2}):(\d{2})|"
                   r"weekly\s+([a-z]{3})[a-z]*\s+(\d{1,2}):(\d{2}))$", re.I)


@dataclass(frozen=True, slots=True)
class Cadence:
    """How often a subscriber's digest goes out."""

    kind: str  # "immediate", "hourly", "daily" or "weekly"
    at: time | None = None
    weekday: int | None = None  # 0 = Monday

    def __str__(self) -> str:
        if self.kind in ("immediate", "hourly"):
            return self.kind
        assert self.at is not None
        clock = self.at.strftime("%H:%M")
        if self.kind == "daily":
            return f"daily {clock}"
        assert self.weekday is not None
        return f"weekly {WEEKDAYS[self.weekday]} {clock}"


def parse_cadence(text: str) -> Cadence:
    """``"daily 08:00"``, ``"weekly mon 08:00"``, ``"hourly"`` or ``"immediate"``."""
    m = _FORM.match(" ".join(text.split()))
    if m is None:
        raise ValueError(f"{text!r} is not a cadence: use \"immediate\", \"hourly\", "
                         "\"daily 08:00\" or \"weekly mon 08:00\"")
    if m[1]:
        return Cadence(m[1].lower())
    hour, minute = (int(m[2]), int(m[3])) if m[2] else (int(m[5]), int(m[6]))
    if hour > 23 or minute > 59:
        raise ValueError(f"{text!r}: {hour:02d}:{minute:02d} is not a time of day")
    if m[2]:
        return Cadence("daily", time(hour, minute))
    day = m[4].lower()
    if day not in WEEKDAYS:
        raise ValueError(f"{text!r}: {m[4]!r} is not a weekday (mon, tue, ... sun)")
    return Cadence("weekly", time(hour, minute), WEEKDAYS.index(day))


def latest_slot(cadence: Cadence, zone: ZoneInfo, now: datetime) -> datetime | None:
    """The most recent scheduled time at or before ``now`` (aware); None for immediate."""
    local = now.astimezone(zone)
    if cadence.kind == "immediate":
        return None
    if cadence.kind == "hourly":
        top = local.replace(minute=0, second=0, microsecond=0)
        return top if top.astimezone(UTC) <= now.astimezone(UTC) else top - timedelta(hours=1)
    assert cadence.at is not None
    day = local.date()
    for back in range(0, 8):
        candidate_day = day - timedelta(days=back)
        if cadence.kind == "weekly" and candidate_day.weekday() != cadence.weekday:
            continue
        # Compare instants, not wall times: a time lost to a spring-forward gap maps to an
        # instant after the clock resumes, and must not count as passed before then.
        candidate = datetime.combine(candidate_day, cadence.at, tzinfo=zone)
        if candidate.astimezone(UTC) <= now.astimezone(UTC):
            return candidate
    raise AssertionError("a slot exists within a week")


def is_due(cadence: Cadence, zone: ZoneInfo, now: datetime, last: datetime | None) -> bool:
    """Is a digest owed: a slot has passed since the last one published (or ever)?"""
    return slot_due(latest_slot(cadence, zone, now), now, last)


def slot_due(slot: datetime | None, now: datetime, last: datetime | None) -> bool:
    """``is_due`` given the latest slot (readers with one cadence and zone share it)."""
    # A slot from the future was recorded under a clock that ran ahead: do not wait for it.
    return slot is None or last is None or slot > last or last > now
