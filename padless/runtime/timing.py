"""Choosing between two ways of doing the same work by timing them here: :func:`speedup`.

What is fastest depends on the CPU (its vector units, its BLAS's kernels for a shape), so
padless measures instead of assuming: the precision (:mod:`padless.runtime.precision`) and
the output layer's weight layout (:mod:`padless.models.layout`) are chosen this way.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

__all__ = ["speedup"]


def speedup(baseline: Callable[[], object], candidate: Callable[[], object], *, budget: float,
            rounds: int) -> float:
    """How many times faster ``candidate`` runs than ``baseline``: the ratio of their median
    times, over at most ``rounds`` alternating calls of each (fewer once ``budget`` seconds
    are spent), after one warm-up call each (first calls pick kernels and allocate)."""
    baseline(), candidate()
    times: tuple[list[float], list[float]] = ([], [])
    started = time.perf_counter()
    for _ in range(rounds):
        for run, spent in ((baseline, times[0]), (candidate, times[1])):
            tick = time.perf_counter()
            run()
            spent.append(time.perf_counter() - tick)
        if time.perf_counter() - started > budget:
            break
    return statistics.median(times[0]) / max(statistics.median(times[1]), 1e-9)
