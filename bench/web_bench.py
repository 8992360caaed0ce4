"""What the site and the web face cost as history grows, each beside a naive baseline.

    python bench/web_bench.py [--subscribers 20] [--issues 10,50,200] [--items 10]
                              [--seconds 2]

Grows one real SQLite store (``Store.ingest`` one dump per run, ``record_issue`` one issue
per subscriber per run, as ``digest run`` records them) to each size of --issues. At each
size it adds one more run and times what the run's ``build_site`` does for that new issue
per subscriber (incremental) against rendering every page again (``full=True``), both from
the same files on disk, and a quiet run (no new issue). Then ``digest serve`` is started on
the biggest site, and one keep-alive httpx client measures requests/s of a feed (200, 304,
gzip) and a vote confirmation page, beside a client that opens a connection per request.
"""

from __future__ import annotations

import argparse
import os
import queue
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO
from zoneinfo import ZoneInfo

import httpx

from digest import site
from digest.config import Config, load_config
from digest.fsutil import atomic_write
from digest.links import WebLinks, links_for
from digest.models import Match, Paper, ParsedDump, Ranked, RunReport
from digest.pipeline import write_feeds
from digest.render import Renderer
from digest.store import Store
from digest.tokens import load_secret

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline_bench import synthetic_papers, vocabulary

SEED = 20261201
START = datetime(2026, 1, 1, 7, tzinfo=UTC)
SITE_URL = "https://bench.example.org/digest/"  # a path, so the served base is rebased
PAPERS_PER_RUN = 40  # each issue picks --items of the run's papers
KEYWORDS = 5  # per subscriber
SERVING = re.compile(r"^digest: serving .* at (http://\S+?:\d+)(/\S*)$")


# -- the history ------------------------------------------------------------------------------
def write_config(work: Path, names: list[str], keywords: dict[str, list[str]]) -> Config:
    """A config.toml with the subscribers (data, feeds and site folders beside it)."""
    lines = [f'[digest]\ntitle = "Bench"\nsite_url = "{SITE_URL}"\n']
    for name in names:
        kws = ", ".join(f'{{ term = "{k}", weight = 1.0 }}' for k in keywords[name])
        lines.append(f'[[subscribers]]\nname = "{name}"\nkeywords = [{kws}]\n')
    path = work / "config.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return load_config(path)


class History:
    """Runs recorded in the store: one ingested dump, then one issue per subscriber."""

    def __init__(self, store: Store, keywords: dict[str, list[str]], items: int,
                 rng: random.Random, vocab: list[str]) -> None:
        self.store, self.keywords, self.items = store, keywords, items
        self.rng, self.vocab = rng, vocab
        self.names = list(keywords)
        self.runs = 0
        self.last_run = store.latest_run()

    def when(self, run: int) -> datetime:
        return START + timedelta(days=run)

    def grow(self, upto: int) -> None:
        """Record runs (and an issue each for every subscriber) until there are ``upto``."""
        while self.runs < upto:
            self.runs += 1
            now = self.when(self.runs)
            papers = synthetic_papers(PAPERS_PER_RUN, self.rng, self.vocab,
                                      f"Run {self.runs} result")
            dump = ParsedDump(f"run-{self.runs}.txt", f"bench-run-{self.runs}", "synthetic",
                              now.date(), None, tuple(papers))
            run_id = self.store.ingest(dump, None, "run", now, self.names).run_id
            for name in self.names:
                self.store.record_issue(name, self.runs, self.last_run, run_id, now,
                                        len(papers), self.issue(name, papers), (None, None))
            self.last_run = run_id

    def issue(self, name: str, papers: list[Paper]) -> tuple[Ranked, ...]:
        """--items of the run's papers, each matched by one to three of the keywords."""
        picks = self.rng.sample(papers, self.items)
        out = []
        for rank, paper in enumerate(picks, 1):
            terms = self.rng.sample(self.keywords[name], self.rng.randint(1, 3))
            matches = tuple(Match(t, 1.0, self.rng.randint(0, 2), self.rng.randint(1, 6),
                                  round(self.rng.uniform(0.5, 4.0), 3)) for t in terms)
            out.append(Ranked(paper, round(10.0 - rank * 0.5, 3), matches, rank))
        return tuple(out)


# -- the site ---------------------------------------------------------------------------------
def pages_on_disk(folder: Path) -> int:
    """Files of the site (temp folders of a writer left out)."""
    return sum(len(files) for root, _, files in os.walk(folder) if ".digest-tmp" not in root)


class SiteState:
    """The files a run's site build changes, saved so the next timing starts from the same
    disk: every index page and each subscriber's newest issue page before the run."""

    def __init__(self, config: Config, store: Store, names: list[str]) -> None:
        zone = ZoneInfo(config.timezone)
        latest = store.latest_issues()
        paths = [config.site / "index.html"]
        for name in names:
            issues = store.issues(name)
            paths.append(config.site / name / "index.html")
            if len(issues) >= 2:  # the page before the new one gains a "next" link
                paths.append(config.site / name / site._page(issues[-2], zone))
        self.saved = {p: p.read_bytes() for p in paths if p.is_file()}
        self.new = [config.site / name / site._page(latest[name], zone) for name in names]

    def restore(self) -> None:
        for path in self.new:
            path.unlink(missing_ok=True)
        for path, data in self.saved.items():
            path.write_bytes(data)


def best(fn: Callable[[], object], repeat: int, before: Callable[[], None] | None = None
         ) -> float:
    """The fastest of ``repeat`` timed calls (``before`` runs untimed ahead of each)."""
    times = []
    for _ in range(repeat):
        if before is not None:
            before()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


@dataclass
class SiteRow:
    issues: int
    pages: int
    written: int
    incremental: float
    full: float
    quiet: float
    quiet_written: int
    latest: float
    terms: float
    terms_naive: float
    archive: float
    dates: float
    writes: float


def site_size(config: Config, store: Store, renderer: Renderer, secret: bytes,
              history: History, issues: int, repeat: int) -> SiteRow:
    """Bring the site to ``issues - 1`` issues, record one more run, time the builds."""
    names = history.names
    history.grow(issues - 1)
    site.build_site(config, store, renderer, secret)  # catch up: the pages of the sizes between
    history.grow(issues)
    state = SiteState(config, store, names)
    written: list[int] = []
    sizes: list[int] = []

    def incremental() -> None:
        report = site.build_site(config, store, renderer, secret, subscribers=names)
        written.append(len(report.written))
        sizes[:] = [Path(w).stat().st_size for w in report.written]

    t_inc = best(incremental, repeat, state.restore)
    t_full = best(lambda: site.build_site(config, store, renderer, secret, full=True),
                  1, state.restore)
    state.restore()
    incremental()  # leave the site current for the quiet run (and the next size)
    quiet: list[int] = []

    def quiet_run() -> None:
        report = site.build_site(config, store, renderer, secret, subscribers=())
        quiet.append(len(report.written))

    t_quiet = best(quiet_run, max(repeat, 5))
    # Where the incremental time goes: the archive page reads every issue's terms.
    zone = ZoneInfo(config.timezone)
    t_latest = best(store.latest_issues, max(repeat, 5))
    t_terms = best(lambda: [store.issue_terms(n) for n in names], repeat)
    # the naive baseline: every matched paper of the history parsed again (what it did)
    t_terms_naive = best(lambda: [store.issue_terms_from_items(n) for n in names], repeat)
    assert all(store.issue_terms(n) == store.issue_terms_from_items(n) for n in names)
    newest = store.issues(names[0])[-1]
    t_dates = best(lambda: store.page_dates(newest.from_run, newest.to_run), max(repeat, 5))

    def archives() -> None:
        for profile in config.subscribers:
            issues_ = store.issues(profile.name)
            site._archive_page(config, renderer, store, profile, issues_,
                               [site._page(i, zone) for i in issues_], zone)

    t_archive = best(archives, repeat)
    scratch = config.site.parent / "scratch"  # same disk; not served, not counted
    scratch.mkdir(exist_ok=True)

    def writes() -> None:  # the floor: the same number of files of the same sizes
        for n, size in enumerate(sizes):
            atomic_write(scratch / f"{issues}-{n}.html", os.urandom(size))

    t_writes = best(writes, 3)
    return SiteRow(issues, pages_on_disk(config.site), written[0], t_inc, t_full, t_quiet,
                   max(quiet), t_latest, t_terms, t_terms_naive, t_archive, t_dates, t_writes)


# -- the server -------------------------------------------------------------------------------
def _pump(stream: IO[str], lines: queue.Queue[str | None], count: list[int]) -> None:
    """Read the server's stderr to its end (the access log must never fill the pipe)."""
    for raw in stream:
        count[0] += 1
        if count[0] < 50 or raw.startswith("digest:"):
            lines.put(raw.rstrip("\n"))
    lines.put(None)


@dataclass
class Measured:
    label: str
    requests: int
    seconds: float
    size: int
    connection: str  # the Connection header of the last response ("" when absent)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def measure(client: httpx.Client, label: str, url: str, headers: dict[str, str], status: int,
            seconds: float, check: Callable[[httpx.Response], bool] = lambda r: True
            ) -> Measured:
    """GETs of ``url`` for ``seconds`` (after a few untimed ones); the body is read raw,
    so a gzip response is not decompressed by the client."""
    def one() -> tuple[httpx.Response, int]:
        with client.stream("GET", url, headers=headers) as response:
            size = sum(len(chunk) for chunk in response.iter_raw())
        if response.status_code != status or not check(response):
            raise SystemExit(f"{label}: unexpected {response.status_code} "
                             f"{dict(response.headers)}")
        return response, size

    for _ in range(20):
        one()
    n, size = 0, 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        last, size = one()
        n += 1
        if time.perf_counter() >= deadline:
            break
    return Measured(label, n, time.perf_counter() - start, size,
                    last.headers.get("Connection", ""))


def digest_command() -> list[str]:
    script = Path(sys.executable).with_name("digest")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from digest.cli import main; sys.exit(main())"]


def bench_server(config: Config, secret: bytes, name: str, key: str, seconds: float) -> None:
    """Start ``digest serve --port 0`` on the site and time GETs over one client."""
    process = subprocess.Popen(
        [*digest_command(), "serve", "--config", str(config.path), "--port", "0"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, encoding="utf-8", errors="replace")
    assert process.stderr is not None
    lines: queue.Queue[str | None] = queue.Queue()
    count = [0]
    reader = threading.Thread(target=_pump, args=(process.stderr, lines, count), daemon=True)
    reader.start()
    try:
        base = ""
        while not base:
            line = lines.get(timeout=30)
            if line is None:
                raise SystemExit(f"digest serve exited ({process.wait()}) before serving")
            if found := SERVING.match(line):
                base = found.group(1) + found.group(2)
        print(f"\nserver: `digest serve --port 0` (waitress, 4 threads) at {base}; "
              "client: httpx, one keep-alive connection, same machine")
        feed = f"{base}{config.feeds_dir.name}/{name}.atom"
        vote = WebLinks(SITE_URL, secret, name).vote(key, True)
        assert vote.startswith(config.site_url or "")
        vote = base + vote[len(SITE_URL):]
        plain = {"Accept-Encoding": "identity"}
        with httpx.Client(timeout=10) as client:
            first = client.get(feed, headers=plain)
            tag = first.headers["ETag"]
            rows = [
                measure(client, "feed GET 200", feed, plain, 200, seconds),
                measure(client, "feed GET 304 (If-None-Match)", feed,
                        {**plain, "If-None-Match": tag}, 304, seconds),
                measure(client, "feed GET 200 gzip", feed, {"Accept-Encoding": "gzip"}, 200,
                        seconds, lambda r: r.headers.get("Content-Encoding") == "gzip"),
                measure(client, "vote page GET 200", vote, plain, 200, seconds,
                        lambda r: r.headers.get("Content-Type", "").startswith("text/html")),
            ]
        no_keepalive = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(timeout=10, limits=no_keepalive) as client:
            naive = measure(client, "feed GET 200, new connection each (naive)", feed, plain,
                            200, seconds)
            naive.connection = naive.connection or "(closed by the client)"
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        reader.join(10)
    stopped = []
    while not lines.empty():
        line = lines.get()
        if line is not None and line.startswith("digest: stopped"):
            stopped.append(line)
    base_rate = rows[0].rate
    print(f"\n{'request':<44}{'n':>7}{'req/s':>9}{'ms each':>9}{'bytes':>9}{'vs 200':>9}"
          f"  Connection")
    for m in [*rows, naive]:
        print(f"{m.label:<44}{m.requests:>7,}{m.rate:>9,.0f}{1000 / m.rate:>9.2f}"
              f"{m.size:>9,}{m.rate / base_rate:>8.2f}x  {m.connection or '(keep-alive)'}")
    print(f"304 vs 200: {rows[1].rate / base_rate:.2f}x the requests/s; keep-alive vs a new "
          f"connection per request: {base_rate / naive.rate:.2f}x; gzip body "
          f"{rows[2].size / rows[0].size:.0%} of the plain one")
    print(f"server: {count[0]:,} stderr lines (one access-log line per request); SIGTERM -> "
          f"exit {process.returncode}{', ' + stopped[0] if stopped else ''}")


# -- main -------------------------------------------------------------------------------------
def main() -> None:
    """Print the timings."""
    os.environ.setdefault("DIGEST_ENRICH", "0")  # no link lookups: not measured here
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subscribers", type=int, default=20)
    parser.add_argument("--issues", default="10,50,200",
                        help="history sizes, issues per subscriber, ascending")
    parser.add_argument("--items", type=int, default=10, help="papers per issue")
    parser.add_argument("--seconds", type=float, default=2.0, help="per server measurement")
    parser.add_argument("--repeat", type=int, default=5, help="incremental timings (best of)")
    args = parser.parse_args()
    sizes = sorted({int(s) for s in args.issues.split(",")})
    rng = random.Random(SEED)
    vocab = vocabulary(rng, 3000)
    work = Path(tempfile.mkdtemp(prefix="digest-web-bench-"))
    names = [f"s{n:02d}" for n in range(args.subscribers)]
    keywords = {n: rng.sample(vocab[50:1500], KEYWORDS) for n in names}
    config = write_config(work, names, keywords)
    secret = load_secret(config.data_dir)
    assert secret is not None
    renderer = Renderer(config.templates)
    store = Store.open(config.store_path)
    store.conn.execute("PRAGMA synchronous=OFF")  # setup speed only; the builds only read it
    history = History(store, keywords, args.items, rng, vocab)
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, load average "
          f"{os.getloadavg()[0]:.2f} at the start")
    print(f"setup: {args.subscribers} subscribers, {args.items} papers per issue, "
          f"{PAPERS_PER_RUN} papers per run, history sizes {sizes} issues each (in {work})")

    total = time.perf_counter()
    rows = [site_size(config, store, renderer, secret, history, n, args.repeat)
            for n in sizes]
    print(f"\nsite build for one new issue per subscriber ({args.subscribers} subscribers): "
          f"incremental (best of {args.repeat}) vs full=True (the naive baseline, once), from "
          "the same files; quiet = a run with no new issue")
    print(f"{'issues':>7}{'pages':>8}{'written':>8}{'incr ms':>9}{'full ms':>10}"
          f"{'full/incr':>10}{'quiet ms':>9}{'quiet wr':>9}{'writes ms':>10}")
    for r in rows:
        print(f"{r.issues:>7,}{r.pages:>8,}{r.written:>8}{r.incremental * 1000:>9.1f}"
              f"{r.full * 1000:>10.0f}{r.full / r.incremental:>9.1f}x{r.quiet * 1000:>9.1f}"
              f"{r.quiet_written:>9}{r.writes * 1000:>10.1f}")
    print("(writes = atomic_write of as many files of the same sizes elsewhere on the disk: "
          "the fsync floor of the incremental build, not a competitor)")
    first, last = rows[0], rows[-1]
    print(f"\nhistory x{last.issues / first.issues:.0f} ({first.issues} -> {last.issues} issues "
          f"each): incremental x{last.incremental / first.incremental:.2f}, full "
          f"x{last.full / first.full:.1f}, quiet x{last.quiet / first.quiet:.2f}")
    print("where the growth is (store reads and the archive pages, which list every issue; "
          "all subscribers):")
    print(f"{'issues':>7}{'latest_issues':>15}{'issue_terms':>13}{'from items':>12}"
          f"{'naive/kept':>11}{'archives':>10}{'archives/incr':>15}{'page_dates':>12}")
    print(f"{'':>7}{'ms':>15}{'ms':>13}{'ms':>12}{'':>11}{'ms':>10}{'':>15}{'us/call':>12}")
    for r in rows:
        print(f"{r.issues:>7,}{r.latest * 1000:>15.2f}{r.terms * 1000:>13.1f}"
              f"{r.terms_naive * 1000:>12.1f}{r.terms_naive / r.terms:>10.1f}x"
              f"{r.archive * 1000:>10.1f}{r.archive / r.incremental:>15.0%}"
              f"{r.dates * 1e6:>12.0f}")
    print("(issue_terms reads the terms kept with each issue, one row per issue; from items ="
          " the naive baseline, every matched paper's explanation parsed, as before)")
    print("(archives = store.issues + store.issue_terms + rendering site_archive.html.j2 for "
          "each subscriber, no writing; latest_issues runs on every build, quiet ones too)")

    name = names[0]
    latest = store.latest_issues()[name]
    key = store.issue_items(latest.id)[0].paper.key
    assert links_for(config.site_url, secret, name) is not None
    write_feeds(store, config, renderer, lambda: history.when(history.runs), RunReport())
    store.close()
    bench_server(config, secret, name, key, args.seconds)
    print(f"\nwhole bench: {time.perf_counter() - total:.0f} s after setup")


if __name__ == "__main__":
    main()
