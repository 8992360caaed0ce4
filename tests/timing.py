"""A guard against quadratic time: the same work at two sizes must scale about linearly.

Not a speed test (those live in bench/): it compares a function with itself at two sizes,
so a slow or busy machine changes both timings alike. Linear work grows by ``factor``,
quadratic work by ``factor`` squared; the bound sits far from both.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def best_time(fn: Callable[[], object], repeat: int = 3) -> float:
    """The fastest of ``repeat`` calls, in seconds (the least disturbed by other work)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def growth(work: Callable[[int], Callable[[], object]], size: int, factor: int = 8) -> float:
    """How many times longer ``work(size * factor)`` takes than ``work(size)``."""
    small, large = work(size), work(size * factor)
    small()  # warm caches and imports before timing
    return best_time(large) / max(best_time(small), 1e-6)


def assert_linear(work: Callable[[int], Callable[[], object]], size: int,
                  factor: int = 8) -> None:
    """Fail when the work grows clearly faster than the input (bound: 3 x ``factor``)."""
    ratio = growth(work, size, factor)
    assert ratio < 3 * factor, f"{factor}x the input took {ratio:.1f}x the time: not linear"
