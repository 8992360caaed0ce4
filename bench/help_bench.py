"""How long `digest --help` takes against `python -c "import click"` (the floor any click
command line pays): each run N times in a fresh process, the median compared.

    .venv/bin/python bench/help_bench.py [N]

The target is a ratio of at most 2: `--help` must not import the pipeline's libraries
(numpy, Jinja2, justhtml, ...); digest/__init__.py is lazy and cli.py imports per command.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def timed(argv: list[str], n: int) -> float:
    """The median wall-clock seconds of ``n`` runs of ``argv`` (after one warm-up run)."""
    subprocess.run(argv, check=True, capture_output=True)
    times = []
    for _ in range(n):
        start = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    script = shutil.which("digest", path=str(Path(sys.executable).parent)) or "digest"
    click_s = timed([sys.executable, "-c", "import click"], n)
    help_s = timed([script, "--help"], n)
    print(f"python -c 'import click': {click_s * 1000:7.1f} ms (median of {n})")
    print(f"digest --help:            {help_s * 1000:7.1f} ms (median of {n})")
    print(f"ratio:                    {help_s / click_s:7.2f} (target: at most 2)")


if __name__ == "__main__":
    main()
