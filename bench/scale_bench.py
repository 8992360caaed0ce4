"""A store of a million papers, on SQLite and on PostgreSQL: what grows with it, what does not.

    python bench/scale_bench.py [--papers 1000000] [--quick] [--readers 1000] [--new 10000]
                                [--small 10000] [--workers 1,2,4] [--engines sqlite,postgresql]
                                [--large-only] [--pg-setting KEY=VALUE ...]

For each engine (PostgreSQL: a throwaway server from tests/pgcluster.py, durability off):

1. Builds a store of --papers papers (--quick: 100,000, and 100 readers) by ingesting
   synthetic dumps of 1,000 papers each (arXiv ids, varied titles, ~1 KB abstracts,
   authors) through ``Store.ingest``, one at a time (never all papers in memory); prints the
   ingest rate of the first and the last tenth of the dumps (flat: near 1x) and the size
   on disk; a small store of --small papers (10,000) is built the same way, as the baseline.
2. On both stores, with three subscribers who each have an issue already: the wall time
   and peak memory (VmHWM of a fresh process) of ``digest status --json``, ``digest
   preview`` (one small dump given) and an idle ``digest daemon --once``; the ratio
   large/small is the promise that they do not grow with the store (target <= 1.5x).
3. On both stores: a run of --new new papers (10 dumps in the inbox) for --readers
   subscribers, each with keywords drawn from a vocabulary and an e-mail address, as
   ``digest run --no-send`` in a fresh process, timed per phase (ingest, digests = rank
   + render + record, feeds, site); large/small is again the ratio that should stay near
   1. Then, on the large store, the queued e-mail sent to a loopback SMTP sink (aiosmtpd)
   with ``digest send --workers 1``, ``2`` and ``4`` (the same outbox put back to pending
   between passes), with the speed-up per added worker; likewise ``digest run --workers``
   (a new run of --new papers each) where that option exists.

Times are wall seconds inside the command (interpreter start-up left out) and, beside
them, the process's CPU seconds, which a machine busy with other work disturbs less.

Semantic ranking and link lookups are off (not measured here). The machine has 2 cores:
workers beyond that overlap waits (SMTP round trips, commits), not computation.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # this tree's digest (also in the commands' processes)
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(HERE))
from pgcluster import Cluster, find_bin_dir  # type: ignore[import-not-found,unused-ignore]  # noqa: E402
from pipeline_bench import vocabulary  # noqa: E402  (the same pseudo-words as there)

from digest.models import ParsedDump  # noqa: E402
from digest.sources.markup import make_paper  # noqa: E402
from digest.store import Store  # noqa: E402

SEED = 20261201
PER_DUMP = 1000
PER_MONTH = 30_000  # arXiv ids: this many a month, from 2201 on
REPEAT = 3  # each command of part 2 runs this often; the best is kept
NEW_DUMPS = 10  # the new papers of part 3 come in this many dumps
SITE = "https://digest.example.org/"
BASE = datetime(2026, 1, 1, 7, tzinfo=UTC)

CHILD = r"""
import json, sys, time
from pathlib import Path
phases = {}
if sys.argv[1] == "phases":  # time the stages of a run (module globals, looked up per call)
    from digest import pipeline

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                phases[name] = phases.get(name, 0.0) + time.perf_counter() - start
        return wrapper

    for name in ("ingest", "_publish", "write_feeds", "build_site"):
        setattr(pipeline, name, timed(name, getattr(pipeline, name)))
from digest.cli import main
start = time.perf_counter()
try:
    code = main(sys.argv[2:])
except SystemExit as exc:
    code = exc.code
took = time.perf_counter() - start
cpu = time.process_time()
if "_publish" in phases:  # digests are made and published one by one inside _publish
    phases["make_digests"] = phases.pop("_publish") - phases.get("write_feeds", 0.0) - \
        phases.get("build_site", 0.0)
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forking parent.
hwm = next(line.split()[1] for line in Path("/proc/self/status").read_text().splitlines()
           if line.startswith("VmHWM"))
print("@@ " + json.dumps({"rss": int(hwm) / 1024, "took": took, "cpu": cpu, "code": code,
                          "phases": phases}), file=sys.stderr)
"""


# -- synthetic papers ----------------------------------------------------------------------
SURNAMES = ("Ahn", "Brandt", "Castro", "Dubois", "Eze", "Fischer", "Gupta", "Haddad", "Ito",
            "Jensen", "Kowalski", "Li", "Moreau", "Nakamura", "Okafor", "Petrov", "Quinn",
            "Rossi", "Silva", "Tanaka", "Uddin", "Varga", "Wang", "Xu", "Yilmaz", "Zhou")


class Texts:
    """Titles (Zipf-distributed words), abstracts of ~1 KB (sentences drawn from a pool,
    so making a million of them is cheap) and author lists, from one seeded generator."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.vocab = vocabulary(rng)
        self.cum = list(itertools.accumulate(1.0 / (i + 1) for i in range(len(self.vocab))))
        self.sentences = [self.words(rng.randint(10, 22)).capitalize() + "."
                          for _ in range(20_000)]

    def words(self, k: int) -> str:
        return " ".join(self.rng.choices(self.vocab, cum_weights=self.cum, k=k))

    def title(self) -> str:
        return self.words(self.rng.randint(6, 12)).title()

    def abstract(self) -> str:
        return " ".join(self.rng.choices(self.sentences, k=self.rng.randint(6, 9)))

    def authors(self) -> tuple[str, ...]:
        return tuple(f"{chr(65 + self.rng.randrange(26))}. {self.rng.choice(SURNAMES)}"
                     for _ in range(self.rng.randint(1, 8)))


def arxiv_id(g: int) -> str:
    """The g-th paper's arXiv id (unique for every g below 100 years of months)."""
    month = g // PER_MONTH
    return f"{22 + month // 12:02d}{month % 12 + 1:02d}.{g % PER_MONTH + 1:05d}"


def synthetic_dump(texts: Texts, number: int, first: int, count: int) -> ParsedDump:
    """Dump ``number``: papers ``first`` .. ``first + count - 1``, made as a parser makes
    them (``make_paper``)."""
    day = date(2022, 1, 1) + timedelta(days=number)
    path = f"/nowhere/scale-{number:05d}.json"
    papers = tuple(make_paper(
        title=texts.title(), abstract=texts.abstract(), source=path, line=n + 1,
        arxiv_id=(aid := arxiv_id(first + n)), authors=texts.authors(), published=day,
        upvotes=texts.rng.randrange(200), url=f"https://huggingface.co/papers/{aid}")
        for n in range(count))
    return ParsedDump(path, hashlib.sha256(path.encode()).hexdigest(), "hf-daily", day,
                      day.isoformat(), papers)


def json_dump(path: Path, texts: Texts, first: int, count: int, day: date) -> None:
    """A Hugging Face daily-papers JSON dump (what a live source saves in the inbox)."""
    items = [{"paper": {"id": arxiv_id(first + n), "title": texts.title(),
                        "summary": texts.abstract(),
                        "authors": [{"name": a} for a in texts.authors()],
                        "upvotes": texts.rng.randrange(200),
                        "publishedAt": f"{day.isoformat()}T09:00:00.000Z"}}
             for n in range(count)]
    path.write_text(json.dumps(items), encoding="utf-8")


# -- stores ----------------------------------------------------------------------------------
@dataclass
class Rig:
    """One store (SQLite file or PostgreSQL database) and the folders around it."""

    engine: str  # "sqlite" or "postgresql"
    papers: int
    folder: Path
    url: str | None = None  # PostgreSQL
    ingested: list[tuple[int, float]] = field(default_factory=list)  # (papers, s) per dump
    built: float = 0.0  # seconds to build, making the synthetic dumps included

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    @property
    def label(self) -> str:
        return f"{self.papers:,} p"

    def open(self) -> Store:
        if self.url is not None:
            from digest.pgstore import PgStore

            return PgStore.connect(self.url)
        return Store.open(self.data_dir / "digest.sqlite3")

    def size_mb(self) -> float:
        if self.url is not None:
            store = self.open()
            try:
                size = int(store.conn.execute(
                    "SELECT pg_database_size(current_database())").fetchone()[0])
            finally:
                store.close()
            return size / 2**20
        path = self.data_dir / "digest.sqlite3"
        wal = path.with_name(path.name + "-wal")
        return (path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)) / 2**20

    def config(self, name: str, inbox: Path, body: str) -> Path:
        """A config in folder/<name>/ over this store; ``body`` adds tables."""
        where = self.folder / name
        where.mkdir(parents=True, exist_ok=True)
        inbox.mkdir(parents=True, exist_ok=True)
        store = f'[store]\nurl = "{self.url}"\n' if self.url else ""
        path = where / "config.toml"
        path.write_text(
            f'[digest]\ntitle = "Scale"\ninbox = "{inbox}"\ndata_dir = "{self.data_dir}"\n'
            f'site_url = "{SITE}"\n[ranking]\nsemantic = false\n{store}{body}',
            encoding="utf-8")
        return path


def build(rig: Rig, texts: Texts, first: int, say: bool) -> None:
    """Ingest rig.papers synthetic papers, PER_DUMP a dump, each dump made just before its
    ingest (not timed) and dropped after; the rate of each dump's ingest is kept."""
    store = rig.open()
    dumps = -(-rig.papers // PER_DUMP)
    started = time.perf_counter()
    try:
        for d in range(dumps):
            count = min(PER_DUMP, rig.papers - d * PER_DUMP)
            dump = synthetic_dump(texts, d, first + d * PER_DUMP, count)
            start = time.perf_counter()
            store.ingest(dump, None, "run", BASE + timedelta(minutes=d))
            rig.ingested.append((count, time.perf_counter() - start))
            if say and dumps >= 10 and (d + 1) % (dumps // 10) == 0:
                print(f"  ... {rig.engine}: {(d + 1) * PER_DUMP:,} papers in "
                      f"{time.perf_counter() - started:.0f} s "
                      f"({rate(rig.ingested[-(dumps // 10):]):,.0f} papers/s lately)",
                      file=sys.stderr, flush=True)
    finally:
        store.close()
    rig.built = time.perf_counter() - started


def rate(spans: list[tuple[int, float]]) -> float:
    """Papers per second over these dumps."""
    return sum(n for n, _ in spans) / max(1e-9, sum(s for _, s in spans))


# -- running digest ----------------------------------------------------------------------------
@dataclass
class Measured:
    rss: float  # MB
    took: float  # s, wall
    cpu: float  # s, this process's CPU (start-up included): less noisy on a busy machine
    phases: dict[str, float]


def measure(args: list[str], cwd: Path, mode: str = "plain", ok: tuple[int, ...] = (0,)
            ) -> Measured:
    """One ``digest`` command in a fresh interpreter: peak memory, seconds, phase times."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", CHILD, mode, *args], cwd=cwd, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          check=False)
    line = next((x for x in done.stderr.splitlines() if x.startswith("@@ ")), None)
    if line is None:
        raise SystemExit(f"digest {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    out = json.loads(line[3:])
    if (out["code"] or 0) not in ok:
        raise SystemExit(f"digest {' '.join(args)} exited {out['code']}:\n"
                         f"{done.stderr[-3000:]}")
    return Measured(out["rss"], out["took"], out["cpu"], out["phases"])


def best(commands: list[tuple[list[str], Path]], repeat: int = REPEAT) -> list[Measured]:
    """Each command's best of ``repeat`` runs (wall, CPU and peak memory each at its
    lowest), the commands taking turns so a busy spell of the machine hits all alike."""
    runs: list[list[Measured]] = [[] for _ in commands]
    for _ in range(repeat):
        for n, (args, cwd) in enumerate(commands):
            runs[n].append(measure(args, cwd))
    return [Measured(min(r.rss for r in got), min(r.took for r in got),
                     min(r.cpu for r in got), {}) for got in runs]


def has_option(command: str, option: str) -> bool:
    """``digest COMMAND --help`` lists ``option``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "digest", command, "--help"], env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:  # no __main__: ask the entry point
        done = subprocess.run([sys.executable, "-c", "from digest.cli import main; import sys;"
                               f" sys.exit(main([{command!r}, '--help']))"], env=env,
                              capture_output=True, text=True, check=False)
    return option in done.stdout


def idle_rig(rig: Rig, texts: Texts, first: int) -> tuple[Path, Path]:
    """Part 2's config: three subscribers, each with an issue already (a first run over a
    small dump registers them and gives them one). Returns (config, the preview's dump)."""
    inbox = rig.folder / "inbox-idle"
    picks = (texts.vocab[40:43], texts.vocab[100:102], texts.vocab[200:203])
    subs = "".join(f'[[subscribers]]\nname = "{name}"\nkeywords = {json.dumps(words)}\n'
                   for name, words in zip(("ana", "bo", "cy"), picks, strict=True))
    config = rig.config("idle", inbox, subs)
    texts.rng.seed(SEED + 1)  # the same dumps on every store
    json_dump(inbox / "first.json", texts, first, 50, date(2026, 1, 2))
    measure(["run", "--config", str(config)], rig.folder)
    (inbox / "first.json").unlink()
    extra = rig.folder / "preview.json"
    json_dump(extra, texts, first + 50, 50, date(2026, 1, 3))
    return config, extra


def keywords(texts: Texts, rng: random.Random) -> list[str]:
    """5 to 10 keywords from the middle of the vocabulary, a quarter of them phrases."""
    middle = texts.vocab[50:2000]
    out = []
    for j in range(rng.randint(5, 10)):
        out.append(" ".join(rng.sample(middle, 2)) if j % 4 == 3 else rng.choice(middle))
    return out


def run_rig(rig: Rig, texts: Texts, readers: int, port: int) -> Path:
    """Part 3's config: ``readers`` subscribers with e-mail, sending to ``port``."""
    rng = random.Random(SEED + 3)  # the same readers on every store
    subs = "".join(f'[[subscribers]]\nname = "r{n:05d}"\nemail = "r{n:05d}@example.org"\n'
                   f"keywords = {json.dumps(keywords(texts, rng))}\n" for n in range(readers))
    smtp = (f'[smtp]\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\n'
            'from = "digest@example.org"\nmax_per_minute = 0\n')
    return rig.config("run", rig.folder / "inbox-run", smtp + subs)


def requeue_all(rig: Rig) -> int:
    """Every outbox message back to pending, as queued (between send passes)."""
    store = rig.open()
    try:
        with store.transaction() as conn:
            conn.execute("UPDATE outbox SET status = 'pending', sent_at = NULL, attempts = 0,"
                         " uncertain = 0, uncertain_since = NULL, failed_at = NULL,"
                         " last_error = NULL, next_attempt_at = created_at")
            conn.execute("DELETE FROM outbox_claims")
            conn.execute("UPDATE send_pace SET next_at = 0")
        return int(store.conn.execute("SELECT count(*) FROM outbox").fetchone()[0])
    finally:
        store.close()


def outbox_count(rig: Rig, status: str) -> int:
    """How many outbox messages have this status."""
    store = rig.open()
    try:
        return int(store.conn.execute("SELECT count(*) FROM outbox WHERE status = ?",
                                      (status,)).fetchone()[0])
    finally:
        store.close()


# -- the SMTP sink -----------------------------------------------------------------------------
class Sink:
    """A loopback SMTP server (aiosmtpd) that accepts and counts every message, keeping
    none (a full run queues hundreds of megabytes)."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.count = 0
        self.bytes = 0
        self.lock = threading.Lock()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.count += 1
            self.bytes += len(envelope.content or b"")
        return "250 Message accepted for delivery"

    def __enter__(self) -> Sink:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()



# -- the bench -----------------------------------------------------------------------------------
ENGINES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
IDLE_FIRST = 5_000_000  # the arXiv ids of part 2's dumps start at this paper
NEW_FIRST = 6_000_000  # and those of part 3's here (then on by --new per run)
PHASES = (("ingest", "ingest"), ("make_digests", "digests"), ("write_feeds", "feeds"),
          ("build_site", "site"))


def say(line: str = "") -> None:
    print(line, flush=True)


@dataclass
class Options:
    papers: int
    small: int
    new: int
    readers: int
    workers: tuple[int, ...]
    send_workers: bool  # digest send --workers exists
    run_workers: bool  # digest run --workers exists
    large_only: bool  # part 3 on the large store only (no small-store baseline run)


def part1(label: str, small: Rig, large: Rig) -> dict[str, float]:
    tenth = max(1, len(large.ingested) // 10)
    head, tail = rate(large.ingested[:tenth]), rate(large.ingested[-tenth:])
    deciles = [rate(large.ingested[i:i + tenth]) for i in range(0, len(large.ingested), tenth)]
    big, little = large.size_mb(), small.size_mb()
    say(f"1. {label}: a store of {large.papers:,} papers ({len(large.ingested):,} dumps of "
        f"{PER_DUMP:,}) built in {large.built:.0f} s")
    say(f"   ingest: {head:,.0f} papers/s over the first 10% of dumps, {tail:,.0f} over the "
        f"last 10% ({tail / head:.2f}x; flat is 1x)")
    say("   per tenth: " + ", ".join(f"{r:,.0f}" for r in deciles) + " papers/s")
    say(f"   on disk: {big:,.0f} MB ({big * 2**20 / large.papers / 1024:.2f} KB a paper); "
        f"the small store of {small.papers:,}: {little:,.1f} MB")
    return {"ingest_first_per_s": round(head), "ingest_last_per_s": round(tail),
            "ingest_last_vs_first": round(tail / head, 2), "disk_mb": round(big)}


def part2(label: str, rigs: list[Rig], texts: Texts) -> dict[str, float]:
    prepared = [idle_rig(rig, texts, IDLE_FIRST) for rig in rigs]
    commands: tuple[tuple[str, Callable[[str, str], list[str]]], ...] = (
        ("status --json", lambda c, x: ["status", "--config", c, "--json"]),
                ("preview", lambda c, x: ["preview", "--config", c, x]),
                ("daemon --once", lambda c, x: ["daemon", "--once", "--config", c]))
    small, large = rigs
    say(f"2. {label}: fresh process per command, best of {REPEAT}; 3 subscribers with an "
        "issue each; preview given one dump of 50 papers; the daemon tick is idle")
    say(f"   {'command':<16}{small.label + ' (peak, wall, CPU)':>30}{large.label:>28}"
        f"{'large/small: peak, wall, CPU':>34}")
    out: dict[str, float] = {}
    for name, argv in commands:
        got = best([(argv(str(c), str(x)), rig.folder)
                    for rig, (c, x) in zip(rigs, prepared, strict=True)])
        mem, took, cpu = (got[1].rss / got[0].rss, got[1].took / got[0].took,
                          got[1].cpu / got[0].cpu)
        say(f"   {name:<16}" + "".join(f"{m.rss:>11.1f} MB {m.took:>6.2f} s {m.cpu:>6.2f} s"
                                       for m in got)
            + f"{mem:>11.2f}x {took:>6.2f}x {cpu:>6.2f}x")
        out[f"{name.split()[0]}_mem_ratio"] = round(mem, 2)
        out[f"{name.split()[0]}_time_ratio"] = round(took, 2)
        out[f"{name.split()[0]}_cpu_ratio"] = round(cpu, 2)
    counts = [count_ms(rig) for rig in rigs]
    grows = ("flat: both under a millisecond, one kept row read" if max(counts) < 1 else
             "it grows with the store" if counts[1] > 1.5 * counts[0] else "flat")
    say(f"   in each: Store.paper_count (once a run, daemon tick or preview) "
        f"{counts[0]:.2f} ms vs {counts[1]:.2f} ms: {grows} "
        f"({counts[1] / max(1e-6, counts[0]):.0f}x for {large.papers / small.papers:.0f}x "
        "the papers)")
    out["paper_count_ms"] = round(counts[1], 2)
    return out


def count_ms(rig: Rig) -> float:
    """The best of three ``paper_count`` calls, in milliseconds."""
    store = rig.open()
    try:
        took = []
        for _ in range(3):
            start = time.perf_counter()
            store.paper_count()
            took.append(time.perf_counter() - start)
        return min(took) * 1000
    finally:
        store.close()


def phase_row(label: str, m: Measured) -> str:
    return (f"   {label:<14}" + "".join(f"{m.phases.get(k, 0.0):>9.2f}" for k, _ in PHASES)
            + f"{m.took:>9.2f}{m.cpu:>9.2f}{m.rss:>10.0f}")


def run_once(rig: Rig, texts: Texts, config: Path, opts: Options, k: int,
             workers: int | None = None) -> Measured:
    """Run k: --new new papers in the inbox, then ``digest run --no-send``, timed per phase."""
    inbox = rig.folder / "inbox-run"
    per = -(-opts.new // NEW_DUMPS)
    first = NEW_FIRST + k * opts.new
    texts.rng.seed(SEED + 10 + k)  # the same new papers on every store
    for d in range(NEW_DUMPS):
        count = min(per, opts.new - d * per)
        if count > 0:
            json_dump(inbox / f"run{k}-{d:02d}.json", texts, first + d * per, count,
                      date(2026, 2, 1) + timedelta(days=10 * k + d))
    argv = ["run", "--no-send", "--config", str(config)]
    if workers is not None:
        argv += ["--workers", str(workers)]
    return measure(argv, rig.folder, mode="phases")


def part3(label: str, rigs: list[Rig], texts: Texts, opts: Options, sink: Sink
          ) -> dict[str, float]:
    large = rigs[1]
    if opts.large_only:
        rigs = [large]
    configs = [run_rig(rig, texts, opts.readers, sink.port) for rig in rigs]
    say(f"3. {label}: digest run --no-send of {opts.new:,} new papers ({NEW_DUMPS} dumps) for "
        f"{opts.readers:,} subscribers with e-mail, fresh process; seconds per phase")
    say(f"   {'store':<14}" + "".join(f"{n:>9}" for _, n in PHASES) + f"{'total':>9}"
        f"{'CPU':>9}{'peak MB':>10}")
    runs = []
    for rig, config in zip(rigs, configs, strict=True):
        runs.append(run_once(rig, texts, config, opts, 0))
        say(phase_row(rig.label, runs[-1]))
        queued = outbox_count(rig, "pending")
        if queued != opts.readers:
            say(f"   !! {queued:,} messages queued, not {opts.readers:,}")
    last = runs[-1]
    out: dict[str, float] = {"run_s": round(last.took, 2), "run_peak_mb": round(last.rss)}
    if len(runs) == 2:
        ratio = {n: runs[1].phases.get(k, 0.0) / max(1e-9, runs[0].phases.get(k, 0.0))
                 for k, n in PHASES}
        say(f"   {'large/small':<14}" + "".join(f"{ratio[n]:>8.2f}x" for _, n in PHASES)
            + f"{runs[1].took / runs[0].took:>8.2f}x{runs[1].cpu / runs[0].cpu:>8.2f}x"
            f"{runs[1].rss / runs[0].rss:>9.2f}x")
        out.update({"run_time_ratio": round(runs[1].took / runs[0].took, 2),
                    "run_cpu_ratio": round(runs[1].cpu / runs[0].cpu, 2),
                    "digests_ratio": round(ratio["digests"], 2)})
    digests = last.phases.get("make_digests", 0.0)
    say(f"   digests: {opts.readers / max(1e-9, digests):,.0f} a second (rank + render + "
        "e-mail + record, per subscriber) on the large store")
    out.update(sends(large, configs[-1], sink, opts))
    if opts.run_workers:
        say(f"   rendering with digest run --workers N, on the large store (a new run of "
            f"{opts.new:,} papers each):")
        base = last.phases.get("make_digests", 0.0)
        for n, w in enumerate(opts.workers[1:], 1):
            m = run_once(large, texts, configs[-1], opts, n, w)
            took = m.phases.get("make_digests", 0.0)
            say(phase_row(f"--workers {w}", m))
            say(f"     --workers {w}: digests {base / took:.2f}x faster than 1 worker "
                f"({(base / took - 1) / (w - 1) * 100:+.0f}% per added worker); peak is this "
                "process's, each helper process has its own")
            out[f"render_speedup_{w}"] = round(base / took, 2)
    else:
        say("   rendering is single-process: digest run has no --workers option")
    return out


def sends(rig: Rig, config: Path, sink: Sink, opts: Options) -> dict[str, float]:
    """The large store's outbox sent over and over, one pass per worker count."""
    counts = opts.workers if opts.send_workers else (1,)
    say(f"   digest send to a loopback SMTP sink (aiosmtpd), {rig.label} store, the same "
        f"{opts.readers:,} messages each pass (put back to pending between passes):")
    if not opts.send_workers:
        say("   (digest send has no --workers option: one sender only)")
    out: dict[str, float] = {}
    took: dict[int, float] = {}
    previous: int | None = None
    for w in counts:
        queued = requeue_all(rig)
        before, size = sink.count, sink.bytes
        argv = ["send", "--config", str(config), "--json"]
        if opts.send_workers:
            argv += ["--workers", str(w)]
        m = measure(argv, rig.folder)
        got = sink.count - before
        sent = outbox_count(rig, "sent")
        if got != queued or sent != queued:
            say(f"   !! {got:,} received and {sent:,} marked sent of {queued:,}")
        took[w] = m.took
        extra = ""
        if previous is not None:
            step = took[previous] / m.took
            extra = (f"; {took[1] / m.took:.2f}x of 1 worker, {step:.2f}x of {previous} "
                     f"({(step - 1) / (w - previous) * 100:+.0f}% per added worker)")
        say(f"     --workers {w}: {m.took:6.2f} s, {got / m.took:6.0f} messages/s "
            f"({(sink.bytes - size) / max(1, got) / 1024:.0f} KB each), peak {m.rss:.0f} MB"
            + extra)
        out[f"send_{w}_per_s"] = round(got / m.took)
        previous = w
    return out


def bench_engine(engine: str, folder: Path, cluster: Any, opts: Options, sink: Sink
                 ) -> dict[str, float]:
    label = ENGINES[engine]
    texts = Texts(random.Random(SEED))  # the same papers on either engine
    rigs = []
    for name, papers in (("small", opts.small), ("large", opts.papers)):
        url = cluster.create_database(f"scale_{name}") if cluster is not None else None
        rig = Rig(engine, papers, folder / name, url)
        build(rig, texts, 0, say=papers >= 100_000)
        rigs.append(rig)
    out = part1(label, *rigs)
    out.update(part2(label, rigs, texts))
    out.update(part3(label, rigs, texts, opts, sink))
    say()
    return out


@contextmanager
def engine_context(engine: str, settings: dict[str, str] | None = None) -> Iterator[Any]:
    """A throwaway PostgreSQL server for "postgresql" (its pools closed first at the end)."""
    if engine != "postgresql":
        yield None
        return
    with Cluster(settings=settings) as cluster:
        try:
            yield cluster
        finally:
            from digest.pgstore import close_pools

            close_pools()


def main() -> None:
    """Print the figures."""
    os.environ.setdefault("DIGEST_ENRICH", "0")  # no link lookups: not measured here
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--papers", type=int, default=None,
                        help="papers in the large store (default 1,000,000; --quick 100,000)")
    parser.add_argument("--quick", action="store_true",
                        help="a large store of 100,000 and 100 readers: a few minutes")
    parser.add_argument("--small", type=int, default=10_000, help="the baseline store")
    parser.add_argument("--new", type=int, default=10_000, help="new papers in part 3's run")
    parser.add_argument("--readers", type=int, default=None,
                        help="subscribers in part 3 (default 1,000; --quick 100)")
    parser.add_argument("--workers", default="1,2,4", help="sender (and renderer) counts")
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--large-only", action="store_true",
                        help="part 3 on the large store only (no baseline run: for many readers)")
    parser.add_argument("--pg-setting", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting of the throwaway PostgreSQL server (e.g. "
                             "shared_buffers=2GB); repeatable")
    args = parser.parse_args()
    pg_settings = dict(item.split("=", 1) for item in args.pg_setting)
    papers = args.papers or (100_000 if args.quick else 1_000_000)
    readers = args.readers or (100 if args.quick else 1000)
    opts = Options(papers, args.small, args.new, readers,
                   tuple(sorted({int(w) for w in args.workers.split(",")} | {1})),
                   has_option("send", "--workers"), has_option("run", "--workers"),
                   args.large_only)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    work = Path(tempfile.mkdtemp(prefix="digest-scale-bench-"))
    say(f"scale bench: a store of {opts.papers:,} papers beside one of {opts.small:,}; a run "
        f"of {opts.new:,} new papers for {opts.readers:,} subscribers; senders "
        f"{', '.join(map(str, opts.workers)) if opts.send_workers else '1 (no --workers)'};"
        f" engines {', '.join(engines)}; {os.cpu_count()} cores; in {work}")
    summary: dict[str, dict[str, float]] = {}
    started = time.perf_counter()
    try:
        with Sink() as sink:
            for engine in engines:
                if engine == "postgresql" and find_bin_dir() is None:
                    say("PostgreSQL: skipped (no server binaries: install Debian's postgresql)")
                    continue
                with engine_context(engine, pg_settings) as cluster:
                    summary[engine] = bench_engine(engine, work / engine, cluster, opts, sink)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    say(f"summary ({time.perf_counter() - started:.0f} s in all): {json.dumps(summary)}")
    say("targets: part 2 and the digests phase of part 3 at most 1.5x large/small; ingest "
        "last/first near 1x")


if __name__ == "__main__":
    main()
