"""Run by ``bench_data``: a command's wall time and its peak memory, with its worker
processes, read from ``/proc`` every 0.1 s (Linux).

    python -m benchmarks.peak_memory FIELD SKIP COMMAND...   # prints: seconds peak_kB rc

FIELD is a line of ``/proc/PID/status`` (``VmRSS``) or ``Pss`` (from ``smaps_rollup``: a
page shared by N processes counts 1/N in each); SKIP leaves out the first processes of the
tree (the launcher itself, e.g. torchrun's agent).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants, parents first."""
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        for child in (task / "children").read_text().split():
            pids += tree(int(child))
    return pids


def kilobytes(pid: int, field: str) -> int:
    source = "smaps_rollup" if field == "Pss" else "status"
    for line in Path(f"/proc/{pid}/{source}").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def main(argv: list[str]) -> None:
    field, skip, command = argv[0], int(argv[1]), argv[2:]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    while process.poll() is None:
        try:  # the process and its workers together
            peak = max(peak, sum(kilobytes(pid, field) for pid in tree(process.pid)[skip:]))
        except (FileNotFoundError, ProcessLookupError):
            pass
        time.sleep(0.1)
    print(time.perf_counter() - started, peak, process.returncode)


if __name__ == "__main__":
    main(sys.argv[1:])
