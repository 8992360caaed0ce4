"""Named crash points, so tests can prove a crash at any step loses nothing.

Set ``DIGEST_FAULT=<name>`` (several separated by commas) and the process raises
``InjectedFault`` (or, with ``<name>:kill``, dies with SIGKILL) when it reaches
``checkpoint(<name>)``. Unset, a checkpoint costs one dict lookup.
"""

from __future__ import annotations

import os
import signal


class InjectedFault(RuntimeError):
    """Raised at a checkpoint named in DIGEST_FAULT (a deliberate, test-only crash)."""


def checkpoint(name: str) -> None:
    """Crash here if the environment asks for it."""
    wanted = os.environ.get("DIGEST_FAULT")
    if not wanted:
        return
    for item in wanted.split(","):
        point = item.strip()
        kill = point.endswith(":kill")
        if kill:
            point = point[: -len(":kill")]
        if point == name:
            if kill:
                os.kill(os.getpid(), signal.SIGKILL)
            raise InjectedFault(f"injected fault at {name}")
