"""What every corpus reader shares: errors, drop counts, decoding line by line.

Decoding each line on its own is what lets a bad byte be reported with its line number;
``ReadStats.bad`` is the one place that decides between stopping with a message naming the
file and line and, with ``--skip-bad-lines``, counting the line and going on.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from padless.data.text import without_surrogates
from padless.runtime.errors import UserError

__all__ = [
    "CorpusError",
    "TextPair",
    "ReadStats",
    "consecutive_pairs",
    "count_pair",
    "decoded_lines",
    "open_binary",
    "read_text",
    "text_lines",
]

EXAMPLES = 5  # problems quoted in the summary; the rest are only counted

TextPair = tuple[str, str]  # (source text, target text), as read from a corpus


class CorpusError(UserError):
    """Malformed or missing input; the message names the file (and line)."""


@dataclass
class ReadStats:
    """What the readers saw: pairs read, drops by reason, bad lines and examples of them."""

    skip_bad_lines: bool = False
    pairs_read: int = 0
    dropped: Counter = field(default_factory=Counter)
    bad_lines: int = 0
    missing_ids: int = 0
    surrogates: int = 0  # pairs with a lone surrogate, replaced
    problems: list[str] = field(default_factory=list)

    def bad(self, path: str | os.PathLike, lineno: int | None, message: str) -> None:
        """Report a malformed line: raise, or count and remember it when skipping."""
        where = f"{path}:{lineno}" if lineno is not None else f"{path}"
        text = f"{where}: {message}"
        if not self.skip_bad_lines:
            raise CorpusError(text + " (use --skip-bad-lines to skip such lines)")
        self.bad_lines += 1
        self.note(text)

    def note(self, text: str) -> None:
        """Keep the first few problems as examples for the summary."""
        if len(self.problems) < EXAMPLES:
            self.problems.append(text)

    def drop(self, reason: str, n: int = 1) -> None:
        """Count ``n`` pairs dropped for ``reason`` (a reason that dropped none is not listed)."""
        if n:
            self.dropped[reason] += n


def open_binary(path: Path) -> BinaryIO:
    """Open for reading, turning a missing file into a ``CorpusError`` naming it."""
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise CorpusError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CorpusError(f"{path}: is a directory, expected a file") from None


def read_text(path: Path, stats: ReadStats) -> str | None:
    """A whole UTF-8 file (for JSON and YAML documents); None if undecodable (reported)."""
    with open_binary(path) as f:
        raw = f.read()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        lineno = raw.count(b"\n", 0, e.start) + 1
        stats.bad(path, lineno, f"not valid utf-8 ({e.reason})")
        return None


def decoded_lines(
    path: Path, stats: ReadStats, encoding: str = "utf-8"
) -> Iterator[tuple[int, str | None]]:
    """``(line number, text without the newline)``; the text is None for an undecodable line.

    Decoding line by line is what lets a bad byte be reported with its line number.
    """
    with open_binary(path) as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode(encoding)
            except UnicodeDecodeError as e:
                stats.bad(path, lineno, f"not valid {encoding} (byte {e.start + 1}: {e.reason})")
                yield lineno, None
                continue
            if lineno == 1:
                line = line.removeprefix("\ufeff")  # a BOM written by some editors
            yield lineno, line.rstrip("\r\n")


def text_lines(path: Path, stats: ReadStats, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """Like :func:`decoded_lines` without the undecodable lines (already reported)."""
    for lineno, line in decoded_lines(path, stats, encoding):
        if line is not None:
            yield lineno, line


def count_pair(stats: ReadStats, source: str, target: str) -> TextPair | None:
    """Count a pair as read; ``None`` (and a drop) when a side is empty.

    Lone surrogates (``"\\ud800"`` in JSON or YAML: no character, and not writable as
    UTF-8) become U+FFFD, noted once: every format's reader gives only writable text.
    """
    stats.pairs_read += 1
    if not source.strip() or not target.strip():
        stats.drop("empty utterance")
        return None
    clean = without_surrogates(source), without_surrogates(target)
    if clean != (source, target) and not stats.surrogates:
        stats.note("lone surrogates (escapes like \\ud800, not text) replaced by U+FFFD")
    stats.surrogates += clean != (source, target)
    return clean


def consecutive_pairs(stats: ReadStats, texts: list[str | None]) -> Iterator[TextPair]:
    """Pairs of consecutive turns; ``None`` marks a turn that is missing from the corpus."""
    for source, target in zip(texts, texts[1:], strict=False):
        if source is None or target is None:
            stats.pairs_read += 1
            stats.drop("missing utterance")
            continue
        pair = count_pair(stats, source, target)
        if pair:
            yield pair
