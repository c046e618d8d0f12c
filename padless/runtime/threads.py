"""CPU threads that hold up when another program is using a core: :func:`configure_threads`.

torch runs its CPU ops on an OpenMP team (GNU libgomp in the CPU wheels), one thread per
core. By default a thread that reaches the end of a parallel op *spins* while it waits for
the others. When another program holds one of the cores, the thread that shares that core
gets a time slice only now and then, and every op waits for it while its partner spins on
the other core: measured with one competing CPU-bound process on 2 cores, training fell to
a tenth of its speed (issue 11; ``benchmarks/bench_threads.py``). With
``OMP_WAIT_POLICY=PASSIVE`` waiting threads sleep instead, so the late thread can run on the
core its partner leaves, and an idle machine loses next to nothing.

libgomp reads its environment once, when it is loaded, i.e. at ``import torch``; so
:func:`configure_threads` must run before anything imports torch. ``padless.cli.main`` calls
it first thing (the ``padless`` package's ``__init__`` is lazy, so importing ``padless.cli``
does not load torch). The library itself never changes process-wide settings.
"""

from __future__ import annotations

import os
import sys

__all__ = ["WAIT_POLICY", "configure_threads"]

WAIT_POLICY = "PASSIVE"  # what OMP_WAIT_POLICY becomes unless the user set it


def configure_threads() -> bool:
    """Make OpenMP's waiting threads sleep rather than spin (``OMP_WAIT_POLICY``).

    A value the user set in the environment is kept. Returns True if the setting is in
    force, False if torch was already imported (libgomp has read its environment by then;
    the process keeps what it started with).
    """
    os.environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)
    return "torch" not in sys.modules
