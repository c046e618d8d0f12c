"""``benchmarks/RESULTS.md``: each benchmark rewrites only its own marked section."""

from __future__ import annotations

import datetime
import sys
from pathlib import Path

from padless.runtime.files import write_text_atomic

RESULTS = Path(__file__).with_name("RESULTS.md")


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
            body: list[str], *, write: bool) -> str:
    """A benchmark's section: ``## title``, the date, the machine and the load average, the
    command (``python benchmarks/SCRIPT ARGV``, then ``what`` it measured), then ``body``
    (lines). Printed, and written as section ``name`` of RESULTS.md when ``write``."""
    from machine import load_average, machine  # machine measures bf16: only when asked

    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    args = " ".join(sys.argv[1:] if argv is None else argv)
    text = "\n".join([
        f"## {title}", "",
        f"- Date: {now}. Machine: {machine()}. Load average after: {load_average()}.",
        f"- Command: `{f'python benchmarks/{script} {args}'.strip()}`{what}", "", *body,
    ])
    print(text)
    if write:
        write_section(RESULTS, name, text)
    return text
