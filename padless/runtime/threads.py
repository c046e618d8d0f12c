"""CPU threads that hold up when another program is using a core: :func:`configure_threads`.

torch runs its CPU ops on an OpenMP team (GNU libgomp in the CPU wheels), one thread per
core. By default a thread that reaches the end of a parallel op *spins* while it waits for
the others. When another program holds one of the cores, the thread that shares that core
gets a time slice only now and then, every op waits for it while its partner spins on the
other core, and training fell to 29 % of its idle speed (``benchmarks/bench_threads.py``, 2
cores, one competing busy loop). Measured there, per situation when the command starts
(free cores counted from ``/proc/stat`` over a fraction of a second):

- idle (every core free): torch's own settings are the fastest; ``OMP_WAIT_POLICY=PASSIVE``
  (waiting threads sleep) cost 30 % (1,668 against 2,366 target tokens/s), so nothing is
  changed;
- some cores busy, some free: one thread per free core, waiting passively: one thread on
  the free core of two kept 1,411 tokens/s, as fast as alone, where the default fell to 696
  and two passive threads reached 1,300;
- no core free (a machine shared by many jobs): every core, waiting passively: each thread
  gets its fair share and none spins it away (1,078 against 747 for one thread and 170 for
  the default, in a run on a 2-core machine under a load average of 7).

A program that starts competing after the command started is not seen; set
``OMP_WAIT_POLICY=PASSIVE`` yourself on a machine whose load comes and goes.

libgomp and torch read these settings once, when torch is imported; so
:func:`configure_threads` must run before anything imports torch. ``padless.cli.main`` calls
it first thing (the ``padless`` package's ``__init__`` is lazy, so importing ``padless.cli``
does not load torch). The library itself never changes process-wide settings.
"""

from __future__ import annotations

import os
import sys
import time

__all__ = ["WAIT_POLICY", "configure_threads", "free_cores", "threads_for"]

WAIT_POLICY = "PASSIVE"  # what OMP_WAIT_POLICY becomes when cores are busy (unless set)
SAMPLE_SECONDS = 0.2  # how long free_cores watches the machine


def free_cores(seconds: float = SAMPLE_SECONDS, stat: str = "/proc/stat") -> float | None:
    """Cores left idle by the other programs over ``seconds`` (Linux ``/proc/stat``), or
    None where that cannot be read."""
    def times() -> tuple[int, int]:
        with open(stat, encoding="ascii") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        return fields[3] + fields[4], sum(fields[:8])  # idle + iowait, all but guests

    try:
        idle_before, total_before = times()
        time.sleep(seconds)
        idle_after, total_after = times()
    except (OSError, ValueError, IndexError):
        return None
    total = total_after - total_before
    if total <= 0:
        return None
    return (os.cpu_count() or 1) * (idle_after - idle_before) / total


def threads_for(free: float | None, cores: int) -> tuple[int, bool]:
    """``(threads, passive)`` for a machine of ``cores`` cores of which ``free`` are idle
    (None: unknown): see the module docstring."""
    if free is None or free >= cores - 0.5:  # idle, or unknown: torch's own settings
        return cores, False
    if free >= 0.5:  # some free: one thread each, none spinning if a core gets taken
        return max(1, min(cores, round(free))), True
    return cores, True  # none free: a fair share on every core, nothing spun away


def configure_threads(reserve: int = 0) -> str:
    """Choose OpenMP's wait policy and thread count for the torch this process is about to
    import (``OMP_WAIT_POLICY``, ``OMP_NUM_THREADS``), from the cores free right now.

    ``reserve``: cores the process keeps for other work of its own, counted as busy
    (``padless serve`` keeps one for its event loop: HTTP, JSON, the tokenizer). Values the
    user set in the environment are kept. Returns what was decided, in words; if torch is
    already imported it is too late to change anything, and it says so.
    """
    if "torch" in sys.modules:
        return "torch already imported: threads left as they are"
    cores = os.cpu_count() or 1
    if cores == 1:
        return "one core: nothing to choose"
    free = free_cores()
    if reserve:
        free = max(0.0, (cores if free is None else free) - reserve)
    threads, passive = threads_for(free, cores)
    if passive:
        os.environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)
    if threads < cores:
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    return (f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
            f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')} ({cores} cores)")
