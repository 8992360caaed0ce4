"""Peak memory of `digest status --json` and `digest preview` as the store grows.

    python bench/status_bench.py [--sizes 2000,40000]

Builds one store per size with synthetic papers (direct SQL: 100 papers a run, an issue of
10 papers per run for each of two subscribers, its e-mail sent and kept in the outbox),
drops one small dump in the inbox, and runs each command in a fresh subprocess, reading
its peak resident memory (VmHWM). Each is run as it is now (the store read in place)
and as the naive baseline (``Store.snapshot`` copying the whole store into memory, as it
did before), and the largest/smallest ratio is printed for both. Semantic ranking is off (its model
alone peaks near 300 MB, the same at every size).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PER_RUN = 100
ITEMS = 10
NAMES = ("ana", "bo")

CHILD = r"""
import sys, time
from pathlib import Path
if sys.argv[1] == "naive":
    import sqlite3
    from digest.store import Store
    def snapshot(cls, path):  # the whole store copied into memory
        return cls._in_memory(sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro"
                                              "&immutable=1", uri=True), path)
    Store.snapshot = classmethod(snapshot)
from digest.cli import main
start = time.perf_counter()
try:
    code = main(sys.argv[2:])
except SystemExit as exc:
    code = exc.code
took = time.perf_counter() - start
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forking parent.
hwm = next(line.split()[1] for line in Path("/proc/self/status").read_text().splitlines()
           if line.startswith("VmHWM"))
print(f"@@ {hwm} {took} {code}", file=sys.stderr)
"""


def build(work: Path, papers: int, rng: random.Random) -> Path:
    """A config and a store of ``papers`` papers; returns the config path."""
    (work / "inbox").mkdir(parents=True)
    config = work / "config.toml"
    # Semantic ranking off: loading its model peaks near 300 MB and would hide the store.
    config.write_text('[digest]\ntitle = "Bench"\n[ranking]\nsemantic = false\n' + "".join(
        f'[[subscribers]]\nname = "{n}"\nkeywords = ["learning", "vision"]\n' for n in NAMES),
        encoding="utf-8")
    shutil.copy(ROOT / "tests" / "data" / "shape_meta.txt", work / "inbox")
    sys.path.insert(0, str(ROOT))
    from digest.config import load_config
    from digest.store import Store

    path = load_config(config).store_path
    Store.open(path).close()
    words = [f"w{n}" for n in range(3000)] + ["learning", "vision", "model", "data"]
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous=OFF")
    runs = papers // PER_RUN
    at = "2026-01-01T07:00:00+00:00"
    with conn:
        for run in range(1, runs + 1):
            conn.execute("INSERT INTO runs (id, kind, started_at) VALUES (?, 'run', ?)",
                         (run, at))
            conn.execute(
                "INSERT INTO dumps (id, sha256, name, path, shape, page_date, run_id,"
                " ingested_at, entries, new_papers) VALUES (?, ?, ?, ?, 'synthetic',"
                " '2026-01-01', ?, ?, ?, ?)", (run, f"sha{run}", f"d{run}.txt",
                                               f"/nowhere/d{run}.txt", run, at, PER_RUN,
                                               PER_RUN))
            rows = []
            for n in range(PER_RUN):
                pid = (run - 1) * PER_RUN + n + 1
                title = " ".join(rng.choices(words, k=10))
                abstract = " ".join(rng.choices(words, k=180))
                rows.append((pid, f"arxiv:2601.{pid:05d}", title.lower(), f"2601.{pid:05d}",
                             title, abstract, run, run, at))
            conn.executemany(
                "INSERT INTO papers (id, key, title_norm, arxiv_id, title, abstract, first_run,"
                " first_dump, first_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            conn.executemany("INSERT INTO sightings (paper_id, dump_id, line) VALUES (?, ?, ?)",
                             [(r[0], run, i) for i, r in enumerate(rows)])
        for s, name in enumerate(NAMES):
            conn.execute("INSERT INTO subscribers (name, cursor_run, created_at, last_issue,"
                         " last_digest_at) VALUES (?, ?, ?, ?, ?)", (name, runs, at, runs, at))
            for run in range(1, runs + 1):
                issue = s * runs + run
                conn.execute("INSERT INTO issues (id, subscriber, number, from_run, to_run,"
                             " generated_at, new_papers, matched, terms) VALUES"
                             " (?, ?, ?, ?, ?, ?, ?, ?, '[]')",
                             (issue, name, run, run - 1, run, at, PER_RUN, ITEMS))
                conn.executemany(
                    "INSERT INTO issue_items (issue_id, rank, paper_id, score, matches)"
                    " VALUES (?, ?, ?, ?, '[]')",
                    [(issue, r + 1, (run - 1) * PER_RUN + r + 1, 1.0) for r in range(ITEMS)])
                conn.execute(
                    "INSERT INTO outbox (issue_id, subscriber, recipient, message_id, subject,"
                    " raw, status, next_attempt_at, created_at, sent_at) VALUES"
                    " (?, ?, ?, ?, ?, ?, 'sent', ?, ?, ?)",
                    (issue, name, f"{name}@example.org", f"<{issue}@bench>", "Bench",
                     rng.randbytes(20_000), at, at, at))
    conn.close()
    return config


def measure(mode: str, args: list[str]) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of one command in a fresh interpreter."""
    done = subprocess.run([sys.executable, "-c", CHILD, mode, *args], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    line = next((x for x in done.stderr.splitlines() if x.startswith("@@ ")), None)
    if line is None:
        raise SystemExit(f"{args[0]} failed:\n{done.stderr[-2000:]}")
    _, rss, took, code = line.split()
    if code not in ("0", "None"):
        raise SystemExit(f"{args[0]} exited {code}:\n{done.stderr[-2000:]}")
    return int(rss) / 1024, float(took)


def main() -> None:
    """Print the figures."""
    os.environ.setdefault("DIGEST_ENRICH", "0")  # no link lookups: not measured here
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="2000,40000")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    rng = random.Random(20261201)
    work = Path(tempfile.mkdtemp(prefix="digest-status-bench-"))
    results: dict[tuple[str, str, int], tuple[float, float]] = {}
    for size in sizes:
        start = time.perf_counter()
        config = build(work / str(size), size, rng)
        store = config.parent / "data" / "digest.sqlite3"
        print(f"store of {size:,} papers: {store.stat().st_size / 2**20:.1f} MB on disk "
              f"(built in {time.perf_counter() - start:.1f} s)")
        for command in ("status", "preview"):
            argv = ([command, "--config", str(config), "--json"] if command == "status"
                    else [command, "--config", str(config)])
            for mode in ("now", "naive"):
                before = store.read_bytes()
                results[(command, mode, size)] = measure(mode, argv)
                assert store.read_bytes() == before, "the store file changed"
                assert not store.with_name(store.name + "-wal").exists()
    print("\npeak resident memory (VmHWM) of one command in a fresh process; naive = "
          "Store.snapshot copying the whole store into memory")
    print(f"{'command':<16}{'mode':<7}" + "".join(f"{s:>12,} p" for s in sizes)
          + f"{'ratio':>9}{'seconds':>9}")
    for command in ("status --json", "preview"):
        key = command.split()[0]
        for mode in ("now", "naive"):
            mem = [results[(key, mode, s)][0] for s in sizes]
            print(f"{command:<16}{mode:<7}" + "".join(f"{m:>11.1f}MB" for m in mem)
                  + f"{mem[-1] / mem[0]:>8.2f}x{results[(key, mode, sizes[-1])][1]:>9.2f}")
    summary = {f"{c}:{m}": round(results[(c, m, sizes[-1])][0]
                                 / results[(c, m, sizes[0])][0], 2)
               for c in ("status", "preview") for m in ("now", "naive")}
    print(f"largest/smallest peak memory: {json.dumps(summary)} (target <= 1.5x for 'now')")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
