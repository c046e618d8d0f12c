"""Timing ways of doing the same work against each other, here: :func:`alternating_times`
and :func:`speedup`.

What is fastest depends on the CPU (its vector units, its BLAS's kernels for a shape), so
padless measures instead of assuming: the precision (:mod:`padless.runtime.precision`), the
output layer's weight layout (:mod:`padless.models.layout`) and the layers int8 quantizes
(:mod:`padless.models.quantize`) are chosen this way, and the benchmarks time their
candidates so. The candidates run in alternating turns, so that a slow moment of the machine
falls on all of them alike; compare medians.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Hashable, Mapping
from typing import TypeVar

__all__ = ["alternating_times", "speedup"]

Key = TypeVar("Key", bound=Hashable)


def alternating_times(candidates: Mapping[Key, Callable[[], object]], *, rounds: int,
                      warmup: int = 1, budget: float | None = None,
                      rotate: bool = False) -> dict[Key, list[float]]:
    """Seconds per call of each candidate: ``rounds`` rounds in which every candidate runs
    once, in turn, after ``warmup`` untimed rounds (first calls pick kernels and allocate);
    fewer rounds once ``budget`` seconds are spent. With ``rotate`` the first to run moves
    one place each round (for work whose cost depends on what ran just before it)."""
    names = list(candidates)
    times: dict[Key, list[float]] = {name: [] for name in names}
    started = time.perf_counter()
    for round_ in range(warmup + rounds):
        order = names[round_ % len(names):] + names[: round_ % len(names)] if rotate else names
        for name in order:
            tick = time.perf_counter()
            candidates[name]()
            if round_ >= warmup:
                times[name].append(time.perf_counter() - tick)
        if budget is not None and round_ >= warmup and time.perf_counter() - started > budget:
            break
    return times


def speedup(baseline: Callable[[], object], candidate: Callable[[], object], *, budget: float,
            rounds: int) -> float:
    """How many times faster ``candidate`` runs than ``baseline``: the ratio of their median
    times, over at most ``rounds`` alternating calls of each (fewer once ``budget`` seconds
    are spent), after one warm-up call each."""
    times = alternating_times({"baseline": baseline, "candidate": candidate}, rounds=rounds,
                              budget=budget)
    return statistics.median(times["baseline"]) / max(statistics.median(times["candidate"]),
                                                      1e-9)
