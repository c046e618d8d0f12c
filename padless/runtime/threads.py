"""CPU threads that hold up when another program is using a core: :func:`configure_threads`.

torch runs its CPU ops on an OpenMP team (GNU libgomp in the CPU wheels), one thread per
core. By default a thread that reaches the end of a parallel op *spins* while it waits for
the others. When another program holds one of the cores, the thread that shares that core
gets a time slice only now and then, every op waits for it while its partner spins on the
other core, and training fell to a tenth of its speed (issue 11). Two remedies, measured by
``benchmarks/bench_threads.py``:

- ``OMP_WAIT_POLICY=PASSIVE``: waiting threads sleep at once, so a late thread can run on
  the core its partner leaves; an idle machine loses next to nothing;
- beside programs that leave some cores free, one thread per free core (counted from
  ``/proc/stat`` over a fraction of a second when the command starts): one thread on the
  free core of two waits for nobody (the issue measured 580 target tokens/s against 464 for
  two passive threads). When no core is free, every core is used: each thread then gets
  its fair share of the machine, and two passive threads beat one (1,078 against 747
  tokens/s on a 2-core machine shared by several jobs, ``bench_threads.py``).

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

WAIT_POLICY = "PASSIVE"  # what OMP_WAIT_POLICY becomes unless the user set it
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


def threads_for(free: float | None, cores: int) -> int:
    """Threads for a machine of ``cores`` cores of which ``free`` are idle (None: unknown):
    one per free core when some are free and others busy, else every core."""
    if free is None or free < 0.5:  # nothing free: more threads, more fair shares
        return cores
    return max(1, min(cores, round(free)))


def configure_threads() -> str:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` and, if some cores are busy and others free,
    ``OMP_NUM_THREADS`` to the free ones, for the torch this process is about to import.

    Values the user set in the environment are kept. Returns what was decided, in words;
    if torch is already imported it is too late to change anything, and it says so.
    """
    if "torch" in sys.modules:
        return "torch already imported: threads left as they are"
    os.environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)
    cores = os.cpu_count() or 1
    if "OMP_NUM_THREADS" in os.environ or cores == 1:
        return f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}"
    threads = threads_for(free_cores(), cores)
    if threads < cores:
        os.environ["OMP_NUM_THREADS"] = str(threads)
    return f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, {threads} of {cores} threads"
