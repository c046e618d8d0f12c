"""``benchmarks/RESULTS.md``: each benchmark rewrites only its own marked section."""

from __future__ import annotations

from pathlib import Path

from padless.runtime.files import write_text_atomic


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
