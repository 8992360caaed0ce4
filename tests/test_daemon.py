"""The scheduler, driven by an injected clock (never by sleeping), and a real daemon process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import Clock, Project, dated

from digest.cadence import is_due, latest_slot, parse_cadence
from digest.cli import main
from digest.daemon import Daemon
from digest.errors import LockedError
from digest.lock import exclusive
from digest.store import Store


def fire_times(cadence: str, zone: str, start: datetime, days: int,
               step: timedelta = timedelta(minutes=15)) -> list[datetime]:
    """Step a clock like a polling daemon would and note when a digest is due."""
    c, z = parse_cadence(cadence), ZoneInfo(zone)
    fired, last, t = [], None, start
    while t < start + timedelta(days=days):
        if is_due(c, z, t, last):
            fired.append(t.astimezone(z))
            last = latest_slot(c, z, t)
        t += step
    return fired


@pytest.mark.parametrize(("zone", "start"), [
    ("Europe/Berlin", datetime(2026, 3, 25, tzinfo=UTC)),  # DST starts Sun 29 March
    ("Europe/Berlin", datetime(2026, 10, 21, tzinfo=UTC)),  # DST ends Sun 25 October
    ("America/New_York", datetime(2026, 3, 5, tzinfo=UTC)),  # DST starts Sun 8 March
    ("America/New_York", datetime(2026, 10, 29, tzinfo=UTC)),  # DST ends Sun 1 November
])
def test_daily_cadence_keeps_wall_clock_time_across_dst(zone: str, start: datetime) -> None:
    fired = fire_times("daily 08:00", zone, start, days=8)[1:]  # the first is a catch-up
    assert [t.strftime("%H:%M") for t in fired] == ["08:00"] * 8  # one a day, none twice
    assert [t.date() for t in fired] == [fired[0].date() + timedelta(days=i) for i in range(8)]
    offsets = {t.utcoffset() for t in fired}
    assert len(offsets) == 2  # the UTC time moved by an hour, the local time did not


def test_weekly_and_hourly_cadences() -> None:
    weekly = fire_times("weekly mon 08:00", "Asia/Tokyo",
                        datetime(2026, 11, 1, tzinfo=UTC), days=21)[1:]
    assert [(t.strftime("%a %H:%M")) for t in weekly] == ["Mon 08:00"] * 3
    hourly = fire_times("hourly", "UTC", datetime(2026, 11, 1, 0, 5, tzinfo=UTC), days=1)
    assert len(hourly) == 24 and all(t.minute == 5 for t in hourly)  # first poll after :00


def test_bad_cadences_are_config_errors(tmp_path: Path) -> None:
    from digest.config import load_config
    from digest.errors import ConfigError

    path = tmp_path / "config.toml"
    path.write_text('[[subscribers]]\nname = "a"\ncadence = "daily 25:00"\n'
                    '[[subscribers]]\nname = "b"\ncadence = "fortnightly"\n'
                    '[[subscribers]]\nname = "c"\ntimezone = "Mars/Olympus"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert "[subscribers][0].cadence: 'daily 25:00': 25:00 is not a time of day" in text
    assert "[subscribers][1].cadence: 'fortnightly' is not a cadence" in text
    assert "[subscribers][2].timezone: unknown time zone 'Mars/Olympus'" in text


SCHEDULED = """
[[subscribers]]
name = "berlin"
cadence = "daily 08:00"
timezone = "Europe/Berlin"
max_items = 1000

[[subscribers]]
name = "nyc"
cadence = "daily 08:00"
timezone = "America/New_York"
max_items = 1000

[[subscribers]]
name = "now"
max_items = 1000
"""


def issues(project: Project) -> dict[str, list[tuple[int, int]]]:
    store = Store.open(project.config().store_path)
    try:
        rows = store.conn.execute("SELECT subscriber, number, new_papers FROM issues"
                                  " ORDER BY subscriber, number").fetchall()
    finally:
        store.close()
    out: dict[str, list[tuple[int, int]]] = {}
    for name, number, new in rows:
        out.setdefault(name, []).append((number, new))
    return out


def test_downtime_gives_one_catch_up_digest_and_restarts_repeat_nothing(
        project: Project, shared_dumps: list[Path]) -> None:
    project.write_config(SCHEDULED)
    clock = Clock(datetime(2026, 11, 23, 7, 30, tzinfo=UTC))  # 08:30 Berlin, 02:30 New York
    dated(project.drop(shared_dumps[0]))
    d = Daemon(project.config(), now=clock)
    d.tick()
    assert issues(project) == {"berlin": [(1, 103)], "now": [(1, 103)], "nyc": [(1, 103)]}
    clock.tick(0.5)
    Daemon(project.config(), now=clock).tick()  # a restart inside the same slots: nothing
    assert issues(project) == {"berlin": [(1, 103)], "now": [(1, 103)], "nyc": [(1, 103)]}
    for path in shared_dumps[1:4]:  # three days of dumps arrive while the daemon is down
        dated(project.drop(path))
    clock.tick(3 * 24)
    Daemon(project.config(), now=clock).tick()
    caught_up = issues(project)
    assert caught_up["berlin"] == [(1, 103), (2, 13 + 47 + 87)]  # one digest, not three
    assert caught_up["nyc"] == caught_up["berlin"]
    clock.tick(1)
    Daemon(project.config(), now=clock).tick()
    assert issues(project) == caught_up


def test_subscribers_publish_on_their_own_cadence(project: Project,
                                                  shared_dumps: list[Path]) -> None:
    project.write_config(SCHEDULED)
    clock = Clock(datetime(2026, 11, 23, 7, 30, tzinfo=UTC))
    dated(project.drop(shared_dumps[0]))
    Daemon(project.config(), now=clock).tick()
    dated(project.drop(shared_dumps[1]))
    clock.tick(2)  # 09:30 UTC: 10:30 Berlin (already sent today), 04:30 New York
    Daemon(project.config(), now=clock).tick()
    assert {k: len(v) for k, v in issues(project).items()} == {"berlin": 1, "now": 2, "nyc": 1}
    clock.tick(4)  # 13:30 UTC = 08:30 New York: its slot has come
    Daemon(project.config(), now=clock).tick()
    assert {k: len(v) for k, v in issues(project).items()} == {"berlin": 1, "now": 2, "nyc": 2}


def test_two_daemons_at_once_one_runs(project: Project,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    config = project.config()
    with exclusive(config.data_dir, "daemon", name="daemon"):
        with pytest.raises(LockedError, match=r"daemon\.lock: held by digest daemon"):
            Daemon(config).serve(threading.Event(), once=True)
        assert main(["daemon", "--once", "--config", str(project.config_path)]) == 2
        assert "held by digest daemon (pid" in capsys.readouterr().err
    assert main(["daemon", "--once", "--config", str(project.config_path)]) == 0


def test_sigterm_mid_run_exits_cleanly_and_loses_nothing(project: Project,
                                                         shared_dumps: list[Path]) -> None:
    from webserver import Web

    web = Web({"/slow.rss": (Path(__file__).parent / "data" / "live" / "blog.rss",
                             "application/rss+xml")}).start()
    web.faults["/slow.rss"] = "slow"
    try:
        for path in shared_dumps:
            dated(project.drop(path))
        project.write_config(SCHEDULED, extra=f'[[sources]]\nname = "slow"\ntype = "feed"\n'
                                              f'url = "{web.url("/slow.rss")}"\n')
        proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; from digest.cli import main; "
             f"sys.exit(main(['daemon', '--config', {str(project.config_path)!r}]))"],
            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "daemon started" in line, line
        while not web.requests:  # the first tick is fetching the slow source
            threading.Event().wait(0.05)
        proc.send_signal(signal.SIGTERM)
        rest = proc.stderr.read()
        assert proc.wait(timeout=60) == 0, rest
        assert "SIGTERM: finishing the current step" in rest and "daemon stopping" in rest
    finally:
        web.stop()
    store = Store.open(project.config().store_path)
    try:
        assert store.integrity_ok()
        assert store.paper_count() == 318 + 2  # the dumps and the slow feed's two entries
    finally:
        store.close()
    assert main(["run", "--config", str(project.config_path)]) == 0
    assert sum(n for _, n in issues(project)["now"]) == 320  # every paper reached them once


def test_once_exits_non_zero_when_its_tick_fails(project: Project,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    project.write_config('[[subscribers]]\nname = "a"\n', extra='[[sources]]\nname = "down"\n'
                         'type = "feed"\nurl = "http://127.0.0.1:9/feed.xml"\n')
    assert main(["daemon", "--once", "--config", str(project.config_path)]) == 1
    err = capsys.readouterr().err
    assert "source down:" in err and "will try again next poll" in err


def test_sigterm_while_waiting_for_the_lock_exits_at_once(project: Project) -> None:
    config = project.config()
    with exclusive(config.data_dir, "daemon", name="daemon"):
        proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; from digest.cli import main; "
             f"sys.exit(main(['daemon', '--wait', '--config', {str(project.config_path)!r}]))"],
            stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        assert "waiting for" in proc.stderr.readline()  # it is now blocked on the lock
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert "stopped before starting" in proc.stderr.read()


def test_a_tick_failing_after_publishing_does_not_publish_twice_that_day(
        project: Project, shared_dumps: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    project.write_config(SCHEDULED)
    clock = Clock(datetime(2026, 11, 23, 7, 30, tzinfo=UTC))
    dated(project.drop(shared_dumps[0]))
    monkeypatch.setenv("DIGEST_FAULT", "run:before-send")  # fails after the digests
    assert Daemon(project.config(), now=clock).safe_tick() is None
    monkeypatch.delenv("DIGEST_FAULT")
    dated(project.drop(shared_dumps[1]))
    clock.tick(0.2)
    Daemon(project.config(), now=clock).tick()
    assert {k: len(v) for k, v in issues(project).items()} == {"berlin": 1, "nyc": 1, "now": 2}


def test_a_clock_that_ran_ahead_does_not_silence_digests(project: Project,
                                                         shared_dumps: list[Path]) -> None:
    project.write_config(SCHEDULED)
    wrong = Clock(datetime(2027, 11, 23, 7, 30, tzinfo=UTC))  # a year ahead for one tick
    Daemon(project.config(), now=wrong).tick()
    dated(project.drop(shared_dumps[0]))
    right = Clock(datetime(2026, 11, 24, 7, 30, tzinfo=UTC))
    Daemon(project.config(), now=right).tick()
    assert issues(project)["berlin"] == [(1, 103)]


@pytest.mark.parametrize(("cadence", "zone", "start"), [
    ("daily 02:30", "Europe/Berlin", datetime(2026, 3, 27, tzinfo=UTC)),  # 02:30 never exists
    ("daily 02:30", "America/New_York", datetime(2026, 3, 6, tzinfo=UTC)),
    ("hourly", "Pacific/Chatham", datetime(2026, 9, 26, tzinfo=UTC)),  # 45-minute offsets
])
def test_a_slot_lost_to_a_dst_gap_fires_once(cadence: str, zone: str, start: datetime) -> None:
    fired = fire_times(cadence, zone, start, days=4, step=timedelta(minutes=10))[1:]
    per_period = [t.strftime("%Y-%m-%d" if cadence.startswith("daily") else "%Y-%m-%d %H")
                  for t in fired]
    assert len(per_period) == len(set(per_period)), fired  # never twice in a day (an hour)
