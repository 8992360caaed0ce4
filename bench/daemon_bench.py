"""The daemon: one poll over five sources, and memory held after 1,000 polls.

    python bench/daemon_bench.py [--polls 1000]

Serves fixture documents (the JSON API, an HTML page, an arXiv Atom result, an RSS feed)
from a real HTTP server on 127.0.0.1, plus a folder source, and times a daemon tick:
first with every document new, then with every source unchanged (304s), beside the
naive way of fetching without validators (every poll downloads and re-parses everything).
Then it runs --polls ticks of an unchanged source and prints the resident memory before
and after. Last, an idle tick (nothing fetched, nobody due) with 1 and with 100 subscribers
who each have a feed and an issue, beside the naive tick that builds every feed again and
renders every entry (what each tick did before feeds were built only when their inputs
changed): the ratio 100/1 should stay near 1.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from webserver import Web  # type: ignore[import-not-found]  # noqa: E402

from digest.config import load_config  # noqa: E402
from digest.daemon import Daemon  # noqa: E402
from digest.store import Store  # noqa: E402

LIVE = HERE.parent / "tests" / "data" / "live"


def rss_mb() -> float:
    """Resident memory of this process now."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return 0.0


class IdleRig:
    """A data folder with ``readers`` subscribers, each with a feed and an issue, and a
    daemon over it whose ticks find nothing to do."""

    def __init__(self, readers: int) -> None:
        self.readers = readers
        self.work = Path(tempfile.mkdtemp(prefix="digest-idle-bench-"))
        (self.work / "inbox").mkdir()
        shutil.copy(HERE.parent / "tests" / "data" / "shape_meta.txt", self.work / "inbox")
        (self.work / "config.toml").write_text(
            '[digest]\nsite_url = "https://bench.example.org/"\n[ranking]\nsemantic = false\n'
            + "".join(f'[[subscribers]]\nname = "r{n:03d}"\n' for n in range(readers)))
        self.config = load_config(self.work / "config.toml")
        self.clock = [datetime(2026, 11, 23, 8, tzinfo=UTC)]
        self.daemon = Daemon(self.config, now=lambda: self.clock[0], sleep=lambda _s: None)
        first = self.daemon.tick()
        assert first.run is not None and len(first.run.digests) == readers, first.run
        self.best = self.cpu = self.naive = float("inf")

    def forget(self) -> None:
        """The naive tick's state: no feed known to be current, no entry kept."""
        store = Store.open(self.config.store_path)
        store.conn.execute("DELETE FROM meta WHERE key LIKE 'feed_fingerprint:%'")
        store.conn.execute("DELETE FROM feed_entries")
        store.close()

    def tick(self, naive: bool = False) -> None:
        """One idle tick, timed; the best times are kept."""
        if naive:
            self.forget()
        self.clock[0] += timedelta(minutes=10)
        gc.collect()
        gc.disable()  # as timeit does: a collection's pause is not the tick's cost
        start, start_cpu = time.perf_counter(), time.process_time()
        report = self.daemon.tick()
        wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        gc.enable()
        assert report.run is not None and not report.run.digests
        if naive:
            self.naive = min(self.naive, wall)
        else:
            assert not report.run.feeds_written
            self.best, self.cpu = min(self.best, wall), min(self.cpu, cpu)

    def close(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)


def idle_ticks(repeat: int = 15) -> list[IdleRig]:
    """1 and 100 subscribers, their ticks interleaved (so a slower spell of the machine
    hits both alike), best of ``repeat``. CPU time leaves out the waits for fsync, which
    are the same for any number of readers and vary from tick to tick."""
    rigs = [IdleRig(1), IdleRig(100)]
    for naive in (False, True):
        for _ in range(repeat):
            for rig in rigs:
                rig.tick(naive)
    for rig in rigs:
        rig.close()
    return rigs


def main() -> None:
    """Print the figures."""
    os.environ.setdefault("DIGEST_ENRICH", "0")  # no link lookups: not measured here
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--polls", type=int, default=1000)
    parser.add_argument("--idle-only", action="store_true", help="only the idle-tick figures")
    args = parser.parse_args()
    if not args.idle_only:
        polls(args.polls)
    rigs = idle_ticks()
    print("idle tick (nothing fetched, nobody due; each subscriber has a feed and an issue),"
          " best of 15, interleaved:")
    for rig in rigs:
        print(f"  {rig.readers:>3} subscriber(s): {rig.best * 1000:6.1f} ms wall, "
              f"{rig.cpu * 1000:6.1f} ms CPU   naive (every feed built, every entry rendered): "
              f"{rig.naive * 1000:7.1f} ms ({rig.naive / rig.best:.1f}x)")
    one, hundred = rigs
    print(f"  100 vs 1 subscriber: {hundred.cpu / one.cpu:.2f}x CPU, "
          f"{hundred.best / one.best:.2f}x wall (target <= 1.5x); naive "
          f"{hundred.naive / one.naive:.2f}x wall")


def polls(count: int) -> None:
    """The poll figures (the first part of the bench)."""
    web = Web({"/api/daily_papers": (LIVE / "daily.json", "application/json"),
               "/papers": (LIVE / "page.html", "text/html"),
               "/api/query": (LIVE / "arxiv.xml", "application/atom+xml"),
               "/blog.rss": (LIVE / "blog.rss", "application/rss+xml")}).start()
    work = Path(tempfile.mkdtemp(prefix="digest-daemon-bench-"))
    (work / "inbox").mkdir()
    (work / "folder").mkdir()
    shutil.copy(HERE.parent / "tests" / "data" / "shape_meta.txt", work / "folder")
    sources = "".join(
        f'[[sources]]\nname = "{n}"\ntype = "{t}"\nurl = "{web.url(p)}"\n{x}\n'
        for n, t, p, x in (("hf", "hf-daily", "/api/daily_papers", ""),
                           ("page", "hf-page", "/papers", ""),
                           ("arxiv", "arxiv", "/api/query", 'query = "cat:cs.CV"'),
                           ("blog", "feed", "/blog.rss", "")))
    (work / "config.toml").write_text(
        '[digest]\nsite_url = "https://bench.example.org/"\n'
        '[[subscribers]]\nname = "ana"\nkeywords = ["CLIP", "medical"]\n'
        f'{sources}[[sources]]\nname = "lab"\ntype = "folder"\npath = "folder"\n')
    config = load_config(work / "config.toml")
    clock = [datetime(2026, 11, 23, 8, tzinfo=UTC)]

    def now() -> datetime:
        return clock[0]

    daemon = Daemon(config, now=now, sleep=lambda _s: None)
    start = time.perf_counter()
    first = daemon.tick()
    t_first = time.perf_counter() - start
    clock[0] += timedelta(minutes=10)
    start = time.perf_counter()
    second = daemon.tick()
    t_second = time.perf_counter() - start

    store = Store.open(config.store_path)  # naive: forget the validators, fetch it all again
    store.conn.execute("DELETE FROM source_state")
    store.close()
    clock[0] += timedelta(minutes=10)
    start = time.perf_counter()
    naive = daemon.tick()
    t_naive = time.perf_counter() - start
    print(f"poll + run over 5 sources, all new:       {t_first * 1000:7.1f} ms "
          f"({len(first.poll.saved)} fetched, {first.run.new_papers if first.run else 0} "
          "new papers)")
    print(f"poll + run, all unchanged (4 x 304):      {t_second * 1000:7.1f} ms "
          f"({len(second.poll.unchanged)} unchanged)")
    print(f"poll + run without validators (naive):    {t_naive * 1000:7.1f} ms "
          f"({len(naive.poll.saved)} downloaded again) -> 304s are "
          f"{t_naive / t_second:.1f}x cheaper")

    single = load_config(work / "config.toml")
    single = type(single)(**{**{f: getattr(single, f) for f in single.__dataclass_fields__},
                             "sources": single.sources[:1]})
    one = Daemon(single, now=now, sleep=lambda _s: None)
    one.tick()
    before = rss_mb()
    start = time.perf_counter()
    for _ in range(count):
        clock[0] += timedelta(minutes=10)
        one.tick()
    elapsed = time.perf_counter() - start
    after = rss_mb()
    web.stop()
    print(f"{count} polls of an unchanged source: {elapsed:.1f} s "
          f"({elapsed / count * 1000:.1f} ms each); resident memory {before:.1f} MB "
          f"before, {after:.1f} MB after ({after - before:+.1f} MB)")


if __name__ == "__main__":
    main()
