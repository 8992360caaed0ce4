"""One digest at a time per data folder: an OS file lock, released by the kernel on any exit.

Two overlapping runs could otherwise interleave their runs' papers and cursors. The lock
file itself never changes (a run with nothing new leaves the data folder as it was); who
holds it is written beside it, in ``digest.lock.holder``, for as long as they hold it.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from .errors import LockedError, StoreError


@contextmanager
def exclusive(data_dir: Path, what: str, *, wait: bool = False, name: str = "digest",
              on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold ``data_dir/<name>.lock`` for the duration, or raise LockedError at once
    (with ``wait``, queue until the holder lets go)."""
    lock = data_dir / f"{name}.lock"
    holder = data_dir / f"{name}.lock.holder"
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StoreError(f"{data_dir}: cannot create the lock file: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                who = holder.read_text(encoding="utf-8").strip()
            except OSError:
                who = ""
            who = who or "another digest process"
            if not wait:
                raise LockedError(f"{lock}: held by {who}; wait for it to finish (or stop it) "
                                  "and try again, or pass --wait") from None
            if on_wait:
                on_wait(f"waiting for {lock}, held by {who}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        holder.write_text(f"digest {what} (pid {os.getpid()} on {socket.gethostname()}, "
                          f"since {stamp})\n", encoding="utf-8")
        try:
            yield
        finally:
            holder.unlink(missing_ok=True)
    finally:
        os.close(fd)  # closing releases the lock; the empty file stays for the next holder
