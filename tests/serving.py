"""`digest serve` as a real subprocess for tests: started on a free port, stopped by SIGTERM.

    with serving(project.config_path) as served:
        httpx.get(served.base + "feeds/ana.atom")
        served.log          # the stderr lines so far (served.log() joins them)

The address is read from the server's own ``digest: serving ... at http://HOST:PORT/PATH``
line (the port is 0, so the system picks it); stderr is read by a thread into a queue, so
waiting for that line has a time-out and no fixed sleeps.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

START_TIMEOUT = 30.0  # seconds for the server to say where it listens
STOP_TIMEOUT = 10.0  # seconds for it to exit after SIGTERM
SERVING = re.compile(r"^digest: serving .* at (http://\S+?:(\d+))(/\S*)$")


class Lines(list[str]):
    """The server's stderr lines, collected as they come; calling it joins them."""

    def __call__(self) -> str:
        return "\n".join(self)


@dataclass
class Served:
    """A running server: its base URL (the mount, ending in "/"), process and log lines."""

    base: str
    process: subprocess.Popen[str]
    log: Lines = field(default_factory=Lines)
    origin: str = ""  # scheme://host:port, without the mount path
    port: int = 0

    def wait_for(self, pattern: str, timeout: float = 10.0) -> str:
        """The first log line matching ``pattern`` (access lines arrive after the response)."""
        deadline = time.monotonic() + timeout
        found = re.compile(pattern)
        while time.monotonic() < deadline:
            for line in list(self.log):
                if found.search(line):
                    return line
            time.sleep(0.02)
        raise AssertionError(f"no log line matches {pattern!r}; the log:\n{self.log()}")


def _command() -> list[str]:
    script = Path(sys.executable).with_name("digest")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from digest.cli import main; sys.exit(main())"]


def _pump(stream: IO[str], lines: Lines, seen: queue.Queue[str | None]) -> None:
    """Read stderr to its end: every line into ``lines`` and the queue (None at EOF)."""
    for raw in stream:
        line = raw.rstrip("\n")
        lines.append(line)
        seen.put(line)
    seen.put(None)


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def serving(config_path: Path, *args: str, env: dict[str, str] | None = None,
            timeout: float = START_TIMEOUT) -> Iterator[Served]:
    """Run ``digest serve --config PATH --port 0 *args`` until the block ends.

    ``env`` adds to, or overrides, variables of the current environment.
    """
    environment = {**os.environ, **(env or {})}
    process = subprocess.Popen(
        [*_command(), "serve", "--config", str(config_path), "--port", "0", *args],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, encoding="utf-8", errors="replace", env=environment)
    assert process.stderr is not None
    lines = Lines()
    seen: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=_pump, args=(process.stderr, lines, seen), daemon=True)
    reader.start()
    try:
        served = _wait_until_serving(process, lines, seen, timeout)
        yield served
    finally:
        _stop(process)
        reader.join(STOP_TIMEOUT)


def _wait_until_serving(process: subprocess.Popen[str], lines: Lines,
                        seen: queue.Queue[str | None], timeout: float) -> Served:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"digest serve said nothing of serving in {timeout} s:\n"
                                 f"{lines()}")
        try:
            line = seen.get(timeout=left)
        except queue.Empty:
            continue
        if line is None:
            process.wait(STOP_TIMEOUT)
            raise AssertionError(f"digest serve exited ({process.returncode}) before "
                                 f"serving:\n{lines()}")
        found = SERVING.match(line)
        if found:
            origin, port, path = found.groups()
            return Served(origin + path, process, lines, origin, int(port))
