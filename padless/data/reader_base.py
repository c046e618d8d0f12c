"""What every corpus reader shares: errors, drop counts, decoding line by line.

Decoding each line on its own is what lets a bad byte be reported with its line number;
``ReadStats.bad`` is the one place that decides between stopping with a message naming the
file and line and, with ``--skip-bad-lines``, counting the line and going on.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import re
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import BinaryIO

from padless.data.text import without_surrogates
from padless.runtime.errors import UserError

__all__ = [
    "COMPRESSED_SUFFIXES",
    "CorpusError",
    "MAX_LINE_BYTES",
    "TextPair",
    "ReadStats",
    "compression_of",
    "consecutive_pairs",
    "count_pair",
    "decoded_lines",
    "format_suffix",
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


# Compressed corpora are read as they are, told by their first bytes (a name can lie):
# gzip's deflate header, bz2's stream and first block headers (plain text may start with
# "BZh"), xz's six bytes, zstd's frame magic number.
_MAGIC = {"gzip": re.compile(b"\x1f\x8b\x08"),
          "bz2": re.compile(b"BZh[1-9](1AY&SY|\x17rE8P\x90)"),
          "xz": re.compile(b"\xfd7zXZ\x00"),
          "zstd": re.compile(re.escape(b"\x28\xb5\x2f\xfd"))}
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz", ".zst")
# A longer line is no sentence (a file without line ends, a pasted dump): it is skipped,
# counted and never held in memory.
MAX_LINE_BYTES = 1 << 20


def format_suffix(path: str | os.PathLike) -> str:
    """The suffix that names a corpus file's format, lower-case, behind any compression's:
    ``pairs.tsv.gz`` -> ``.tsv``."""
    path = Path(path)
    if path.suffix.lower() in COMPRESSED_SUFFIXES:
        path = path.with_suffix("")
    return path.suffix.lower()


def open_binary(path: Path) -> BinaryIO:
    """Open for reading (gzip, bz2, xz and zstd decompressed on the fly), turning a missing
    file into a ``CorpusError`` naming it. The file is opened once and read once: a pipe or
    a FIFO (``/dev/stdin``) works as a file does; its first bytes, which tell a compressed
    stream, are peeked at, not consumed."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise CorpusError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CorpusError(f"{path}: is a directory, expected a file") from None
    kind = compression_of(f.peek(10))
    if kind is None:
        return f
    if kind == "zstd":
        return _open_zstd(path, f)
    if kind == "gzip":
        stream = gzip.GzipFile(fileobj=f, mode="rb")
    else:
        stream = {"bz2": bz2.BZ2File, "xz": lzma.LZMAFile}[kind](f, "rb")
    return io.BufferedReader(_Decompressed(stream, f))


class _Decompressed(io.RawIOBase):
    """A decompressing reader of an open file, which closes the file with itself (the
    standard library's readers leave a file object they were given open)."""

    def __init__(self, stream: BinaryIO, file: BinaryIO) -> None:
        self._stream, self._file = stream, file

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        return self._stream.readinto(buffer)

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            self._file.close()
            super().close()


def compression_of(head: bytes) -> str | None:
    """``gzip``, ``bz2``, ``xz`` or ``zstd`` if a file starting with ``head`` (its first 10
    bytes or more) is read as that compressed stream, else None."""
    return next((kind for kind, magic in _MAGIC.items() if magic.match(head[:10])), None)


def _open_zstd(path: Path, file: BinaryIO) -> BinaryIO:
    try:
        import zstandard
    except ImportError:  # the app extra has it; the library does not need it
        file.close()
        raise CorpusError(f"{path}: zstd-compressed, and the zstandard package is not "
                          "installed (pip install zstandard, or decompress the file)") from None
    return io.BufferedReader(_ZstdFrames(file, zstandard))


class _ZstdFrames(io.RawIOBase):
    """A zstd file's frames decompressed in turn. zstandard's own stream reader ends
    quietly where a truncated file ends; this one raises ``EOFError`` in the middle of a
    frame, and an ``OSError`` for corrupt data, as gzip does. Compressed data goes in 8 KB
    at a time, which bounds what one call can expand to (a zstd block expands at most
    ~40,000x)."""

    def __init__(self, file: BinaryIO, zstandard: ModuleType) -> None:
        self._file = file
        self._decompressor, self._error = zstandard.ZstdDecompressor(), zstandard.ZstdError
        self._frame = None
        self._out, self._at = b"", 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while self._at == len(self._out):
            frame = self._frame
            rest = frame.unused_data if frame is not None and frame.eof else b""
            data = rest or self._file.read(8192)
            if not data:
                if frame is not None and not frame.eof:
                    raise EOFError("the stream ends in the middle of a zstd frame")
                return 0
            if frame is None or frame.eof:
                self._frame = frame = self._decompressor.decompressobj()
            try:
                self._out, self._at = frame.decompress(data), 0
            except self._error as e:
                raise OSError(f"zstd: {e}") from None
        n = min(len(buffer), len(self._out) - self._at)
        buffer[:n] = self._out[self._at : self._at + n]
        self._at += n
        return n

    def close(self) -> None:
        self._file.close()
        super().close()


# what a damaged compressed stream raises, by module (_ZstdFrames turns zstd's into these)
_DAMAGED = (EOFError, OSError, zlib.error, lzma.LZMAError)


def read_text(path: Path, stats: ReadStats) -> str | None:
    """A whole UTF-8 file (for JSON and YAML documents); None if undecodable (reported)."""
    with open_binary(path) as f:
        try:
            raw = f.read()
        except _DAMAGED as e:
            raise CorpusError(f"{path}: the compressed data is damaged ({e})") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        lineno = raw.count(b"\n", 0, e.start) + 1
        stats.bad(path, lineno, f"not valid utf-8 ({e.reason})")
        return None


def _raw_lines(path: Path, stats: ReadStats) -> Iterator[bytes | None]:
    """The file's lines as bytes, one at a time; None for a line over ``MAX_LINE_BYTES``
    (skipped without reading it into memory, and counted)."""
    with open_binary(path) as f:
        lineno = 0
        try:
            while raw := f.readline(MAX_LINE_BYTES + 1):
                lineno += 1
                if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                    while raw and not raw.endswith(b"\n"):
                        raw = f.readline(MAX_LINE_BYTES)
                    stats.pairs_read += 1  # the pair (or turn) it would have been
                    stats.drop(f"line over {MAX_LINE_BYTES >> 20} MB")
                    stats.note(f"{path}:{lineno}: a line over {MAX_LINE_BYTES >> 20} MB, skipped")
                    yield None
                    continue
                yield raw
        except _DAMAGED as e:
            raise CorpusError(f"{path}: the compressed data is damaged after line {lineno} "
                              f"({e}); nothing was written") from None


def decoded_lines(
    path: Path, stats: ReadStats, encoding: str = "utf-8"
) -> Iterator[tuple[int, str | None]]:
    """``(line number, text without the newline)``; the text is None for an undecodable line
    (reported) or one too long to be a sentence (counted).

    Decoding line by line is what lets a bad byte be reported with its line number.
    """
    for lineno, raw in enumerate(_raw_lines(path, stats), 1):
        if raw is None:
            yield lineno, None
            continue
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
