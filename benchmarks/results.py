"""``benchmarks/RESULTS.md``: each benchmark rewrites only its own marked section."""

from __future__ import annotations

import datetime
import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from padless.runtime.files import write_text_atomic

if TYPE_CHECKING:
    import torch

RESULTS = Path(__file__).with_name("RESULTS.md")
BUSY_LOAD = 0.5  # a 1-minute load average above this: others were running


def _load_average() -> tuple[float, float, float] | None:
    """The 1/5/15-minute load average, or None where the system keeps none."""
    try:
        return os.getloadavg()
    except (AttributeError, OSError):
        return None


def _shown(load: tuple[float, float, float] | None) -> str:
    return "n/a" if load is None else "/".join(f"{x:.2f}" for x in load)


# Sampled when a benchmark imports this module, before its own work: a load average taken
# later, after its warm-up or answer checks, counts the benchmark itself as someone else.
LOAD_AT_START = _load_average()


def write_section(path: Path, name: str, text: str) -> None:
    """Replace (or append) the section between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``.

    The file is read just before writing and everything outside the section is kept as read
    (other benchmarks write their own sections to the same file); the write is atomic.
    """
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    current = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    block = f"{begin}\n{text.rstrip()}\n{end}\n"
    if begin in current and end in current:
        head, rest = current.split(begin, 1)
        tail = rest.split(end, 1)[1].lstrip("\n")
        updated = head + block + ("\n" + tail if tail else "")
    else:
        updated = current.rstrip("\n") + "\n\n" + block
    write_text_atomic(path, updated)


def publish(name: str, title: str, script: str, argv: list[str] | None, what: str,
            body: list[str], *, write: bool, device: torch.device | None = None,
            load_before: tuple[float, float, float] | None = None,
            results: Path = RESULTS) -> str:
    """A benchmark's section: ``## title``, the date, the machine (and ``device``'s GPU), the
    load average (``load_before``, by default :data:`LOAD_AT_START`, and now), the command
    (``python -m benchmarks.SCRIPT ARGV``, then ``what`` it measured), a warning when the
    machine was busy before, then ``body`` (lines). Printed, and written as section ``name``
    of ``results`` when ``write``. Every benchmark's header is written here, so that all of
    RESULTS.md says the same things of its figures in the same words."""
    from benchmarks.machine import machine  # machine measures bf16: only when asked

    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    args = shlex.join(sys.argv[1:] if argv is None else argv)
    load_before = LOAD_AT_START if load_before is None else load_before
    load = f"before: {_shown(load_before)}, after: {_shown(_load_average())}"
    lines = [
        f"## {title}", "",
        f"- Date: {now}. Machine: {machine(device)}. Load average (1/5/15 min) {load}.",
        f"- Command: `{f'python -m benchmarks.{Path(script).stem} {args}'.strip()}`{what}",
    ]
    # Only the load before says whether others were running: the figure after includes the
    # benchmark's own threads.
    if load_before is not None and load_before[0] > BUSY_LOAD:
        lines.append("- **Not an idle machine** at the start (see the load average): absolute "
                     "figures are low and noisy; the candidates ran in alternating turns, "
                     "which keeps their ratios comparable. Rerun alone for absolute numbers.")
    text = "\n".join([*lines, "", *body])
    print(text)
    if write:
        write_section(results, name, text)
        print(f"wrote section {name} of {results}")
    return text
