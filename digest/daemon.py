"""``digest daemon``: poll the sources and publish each digest on its cadence, unattended.

The ``schedule`` package only provides the poll tick; which digests are due is worked out
by cadence.py against the slots remembered in the store, so a daemon started after
downtime publishes one catch-up digest per subscriber and a restart never repeats one.
One daemon per data folder (``daemon.lock``); each tick also takes the run lock, so a
``digest run`` by hand never overlaps a tick. SIGTERM and SIGINT let the current tick
finish, then the daemon exits 0.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import schedule

from .cadence import Cadence, latest_slot, parse_cadence, slot_due
from .config import Config
from .errors import DigestError
from .fetch import PollReport, poll
from .fsutil import remove_stale_temps
from .lock import exclusive
from .models import RunReport
from .pipeline import run
from .store import Store, open_store

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class TickReport:
    """What one tick did."""

    poll: PollReport
    due: list[str]
    run: RunReport | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def undelivered(self) -> bool:
        """E-mail that was due in this tick could not be delivered (failed or to retry)."""
        delivery = self.run.delivery if self.run is not None else None
        return delivery is not None and bool(delivery.failed or delivery.retrying)


class Daemon:
    """The scheduler; ``tick`` is one poll-and-publish step, driven by any clock."""

    def __init__(self, config: Config, *, now: Clock = _utc_now,
                 log: Callable[[str], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep, http_timeout: float = 30.0,
                 send: bool = True, workers: int = 1) -> None:
        self.config = config
        self.workers = workers  # processes making a tick's digests (``run --workers``)
        self.now = now
        self.log = log or (lambda _line: None)
        self.sleep = sleep
        self.http_timeout = http_timeout
        self.send = send
        self.started = False  # holds the daemon lock (a signal before that just exits)
        self.stopping = threading.Event()  # set by serve's caller on SIGTERM
        self.last: TickReport | None = None  # the latest tick that finished
        self._slots: dict[str, datetime | None] = {}  # job slots as ``due`` last read them
        self._cadences = [(p.name, parse_cadence(p.cadence),
                           ZoneInfo(p.timezone or config.timezone)) for p in config.subscribers]

    def due(self, store: Store, moment: datetime) -> dict[str, datetime | None]:
        """Subscribers owed a digest at ``moment``, with the slot it is for."""
        owed: dict[str, datetime | None] = {}
        slots = self._slots = store.job_slots("digest:")
        latest: dict[tuple[Cadence, ZoneInfo], datetime | None] = {}  # readers share them
        for name, cadence, zone in self._cadences:
            if (cadence, zone) not in latest:
                latest[cadence, zone] = latest_slot(cadence, zone, moment)
            if slot_due(latest[cadence, zone], moment, slots.get(f"digest:{name}")):
                owed[name] = latest[cadence, zone]
        return owed

    def tick(self) -> TickReport:
        """Poll every source, then publish the digests that are due."""
        moment = self.now()
        store = open_store(self.config)
        try:
            polled = (poll(self.config, store, now=self.now, timeout=self.http_timeout,
                           sleep=self.sleep, log=self.log, stop=self.stopping.is_set)
                      if self.config.sources else PollReport())
            owed = self.due(store, moment)
        finally:
            store.close()
        report = TickReport(polled, sorted(owed))
        for name, reason in polled.failed:
            report.errors.append(f"source {name}: {reason}")
        report.run = run(self.config, now=self.now, extra=polled.folders, due=owed,
                         send=self.send, report=RunReport(sink=self.log), wait=True,
                         workers=self.workers)
        store = open_store(self.config)
        try:  # those with nothing new; a digest marked its own slot when it was recorded
            # Only slots that moved: "every run" has none, and a slot already kept stays.
            # Not those another worker (a host that may have died) was making: they are
            # owed again next tick, when its claim may have run out.
            store.set_job_slots({**{f"digest:{name}": slot for name, slot in owed.items()
                                    if slot is not None and name not in report.run.held
                                    and self._slots.get(f"digest:{name}") != slot},
                                 "poll": None}, moment)
        finally:
            store.close()
        digests = ", ".join(f"{d['subscriber']} #{d['issue']}" for d in report.run.digests)
        sent = report.run.delivery
        mail = (f"; e-mail: {len(sent.sent)} sent, {len(sent.retrying)} to retry, "
                f"{len(sent.failed)} failed" if sent is not None and
                (sent.sent or sent.retrying or sent.failed) else "")
        self.log(f"tick: {len(polled.saved)} fetched, {len(polled.unchanged)} unchanged, "
                 f"{len(polled.failed)} failed; {report.run.new_papers} new papers; "
                 f"digests: {digests or 'none'}{mail}")
        return report

    def safe_tick(self) -> TickReport | None:
        """A tick whose failure is logged, never fatal: the daemon lives on."""
        try:
            self.last = self.tick()
            return self.last
        except DigestError as exc:
            self.log(f"error: {exc}")
        except Exception as exc:  # a bug must not stop a months-long daemon
            self.log(f"internal error: {type(exc).__name__}: {exc} (run `digest run --debug` "
                     "to see the traceback, and please report it)")
        return None

    def serve(self, stop: threading.Event, *, once: bool = False, wait: bool = False) -> bool:
        """Run until ``stop`` is set (or one tick with ``once``), holding the daemon lock.

        Returns False when the ``once`` tick failed (so cron sees a non-zero exit).
        """
        self.stopping = stop
        with exclusive(self.config.data_dir, "daemon", wait=wait, name="daemon",
                       on_wait=self.log):
            self.started = True
            # The fetcher writes into the inbox only under this lock: a temp file left there
            # is from a daemon that was killed mid-fetch.
            for path, why in remove_stale_temps(self.config.inbox):
                self.log(f"{path}: cannot remove a leftover temporary file: {why}")
            if once:  # cron and timers: the tick's own line says all there is to say
                first = self.safe_tick()
                return first is not None and not first.errors
            self.log(f"daemon started: polling every {self.config.poll_interval:g} s, "
                     f"{len(self.config.sources)} source(s), "
                     f"{len(self.config.subscribers)} subscriber(s)")
            self.safe_tick()  # at start: catch up on whatever was missed while down
            ticker = schedule.Scheduler()
            ticker.every(max(1, round(self.config.poll_interval))).seconds.do(self.safe_tick)
            # schedule times jobs on the naive local wall clock, which a DST fall-back or an
            # NTP step stalls for up to an hour: pace the ticks by the monotonic clock.
            next_tick = time.monotonic() + self.config.poll_interval
            while not stop.is_set():
                if time.monotonic() >= next_tick:
                    ticker.run_all()
                    next_tick = time.monotonic() + self.config.poll_interval
                stop.wait(timeout=min(1.0, max(0.05, next_tick - time.monotonic())))
            self.log("daemon stopping: the last tick finished, the store is consistent")
        return True
