"""The token store: a split's token ids in two flat files, memory-mapped by training.

Per split ``NAME`` a prepared dataset holds (``padless prepare`` writes them)::

    NAME.tokens   every pair's source ids then target ids, back to back, no BOS/EOS:
                  little-endian uint16 when the vocabulary has at most 65,536 entries,
                  else int32
    NAME.offsets  int64, ``2 * pairs + 1`` boundaries: pair ``i``'s source is
                  ``tokens[offsets[2i]:offsets[2i+1]]``, its target
                  ``tokens[offsets[2i+1]:offsets[2i+2]]``

and ``metadata.json`` records, per split, the pairs, the tokens, the dtype and a CRC-32 of
each file. :class:`TokenSplit` opens them with ``numpy.memmap``: no Python object per pair,
and the pages are the operating system's, shared by every process that maps them (the
``torchrun`` processes of one machine). Opening checks sizes, boundaries, ids and checksums,
so a damaged store is refused by name rather than trained on. The ``.tsv`` files beside
them hold the same pairs as text, for people to read (words outside the vocabulary as
written).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import overload

import numpy as np
import torch

from padless.data.batch import Batch, IdPair
from padless.data.vocabulary import Specials
from padless.runtime.errors import UserError
from padless.runtime.files import atomic_write

__all__ = ["TokenSplit", "token_dtype", "write_token_split"]

_CHUNK = 1 << 22  # elements per pass when checking or writing: bounded memory at any size


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (at most 65,536 entries), else int32."""
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<i4")


def _paths(directory: Path, name: str) -> tuple[Path, Path]:
    return directory / f"{name}.tokens", directory / f"{name}.offsets"


def write_token_split(directory: str | os.PathLike, name: str, pairs: Iterable[IdPair],
                      vocab_size: int) -> dict:
    """Write ``pairs`` as the store of split ``name`` in ``directory``, streaming (memory
    bounded whatever their number; each file atomically); returns what ``metadata.json``
    records of it."""
    directory = Path(directory)
    dtype = token_dtype(vocab_size)
    tokens_path, offsets_path = _paths(directory, name)
    done: dict = {}

    def write_both(offsets_file) -> None:
        def write_tokens(tokens_file) -> None:
            tokens, bounds = _Chunks(tokens_file, dtype), _Chunks(offsets_file, np.dtype("<i8"))
            bounds.add([0])
            total = 0
            for source, target in pairs:
                if not source or not target:
                    raise ValueError(f"{name}: a pair with an empty side")
                tokens.add(source)
                tokens.add(target)
                bounds.add([total + len(source), total + len(source) + len(target)])
                total += len(source) + len(target)
            tokens.flush()
            bounds.flush()
            done.update(pairs=(bounds.count - 1) // 2, tokens=total,
                        crc32={"tokens": tokens.crc, "offsets": bounds.crc})

        atomic_write(tokens_path, write_tokens)

    atomic_write(offsets_path, write_both)
    return {"pairs": done["pairs"], "tokens": done["tokens"], "dtype": dtype.str,
            "crc32": done["crc32"]}


class _Chunks:
    """Numbers appended to a binary file as ``dtype``, a chunk at a time, with their CRC-32."""

    def __init__(self, file, dtype: np.dtype) -> None:
        self.file, self.dtype = file, dtype
        self.buffer: list[int] = []
        self.count = self.crc = 0

    def add(self, values: Sequence[int]) -> None:
        self.buffer.extend(values)
        if len(self.buffer) >= _CHUNK:
            self.flush()

    def flush(self) -> None:
        data = np.asarray(self.buffer, dtype=self.dtype).tobytes()
        self.file.write(data)
        self.crc = zlib.crc32(data, self.crc)
        self.count += len(self.buffer)
        self.buffer.clear()


class TokenSplit(Sequence[IdPair]):
    """The pairs of one split: a sequence of ``(source ids, target ids)``, built from flat
    arrays (a memory-mapped store, or :meth:`from_pairs` in memory).

    ``len`` and ``split[i]`` as for a list; ``split[a:b]`` and :meth:`subset` are views that
    copy no tokens; :meth:`lengths` gives the side lengths as arrays, without touching the
    tokens. :attr:`checksum` names the store's content (its files' CRC-32s), so that a
    resumed run can tell whether the pairs behind its data position are still the same.
    """

    def __init__(self, tokens: np.ndarray, offsets: np.ndarray,
                 rows: np.ndarray | None = None, checksum: str | None = None) -> None:
        self.tokens = tokens
        self.offsets = offsets
        self.rows = rows  # the pairs of this view, by number in the store (None: all)
        self._checksum = checksum

    @property
    def checksum(self) -> str:
        """The store's tokens and boundaries as two CRC-32s in hex (those ``metadata.json``
        records, for a store; computed once, for pairs in memory). The same for every view
        of one store."""
        if self._checksum is None:
            tokens = zlib.crc32(np.ascontiguousarray(self.tokens))
            self._checksum = f"{tokens:08x}{zlib.crc32(np.ascontiguousarray(self.offsets)):08x}"
        return self._checksum

    @classmethod
    def from_pairs(cls, pairs: Iterable[IdPair]) -> TokenSplit:
        """The split of ``pairs`` in memory (a dataset prepared before the store, tests)."""
        pairs = list(pairs)
        lengths = [len(side) for pair in pairs for side in pair]
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        tokens = np.fromiter((t for pair in pairs for side in pair for t in side),
                             dtype=np.int64, count=int(offsets[-1]))
        return cls(tokens, offsets)

    @classmethod
    def open(cls, directory: str | os.PathLike, name: str, info: dict,
             vocab_size: int) -> TokenSplit:
        """Map split ``name``'s store in ``directory``, checked against ``info`` (what
        :func:`write_token_split` returned) and the vocabulary size.

        Raises:
            UserError: naming the file, if it is missing, of the wrong size, damaged
                (checksum), or holds boundaries or ids out of range.
        """
        tokens_path, offsets_path = _paths(Path(directory), name)
        try:
            pairs, count, dtype = int(info["pairs"]), int(info["tokens"]), np.dtype(info["dtype"])
            crc = {key: int(info["crc32"][key]) for key in ("tokens", "offsets")}
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{Path(directory) / 'metadata.json'}: the store of {name} is not "
                            "described; prepare the dataset again") from None
        tokens = _mapped(tokens_path, dtype, count, crc["tokens"])
        offsets = _mapped(offsets_path, np.dtype("<i8"), 2 * pairs + 1, crc["offsets"])
        _check_boundaries(offsets, count, offsets_path)
        _check_ids(tokens, vocab_size, tokens_path)
        return cls(tokens, offsets, checksum=f"{crc['tokens']:08x}{crc['offsets']:08x}")

    def __len__(self) -> int:
        return (len(self.offsets) - 1) // 2 if self.rows is None else len(self.rows)

    @overload
    def __getitem__(self, index: int) -> IdPair: ...

    @overload
    def __getitem__(self, index: slice) -> TokenSplit: ...

    def __getitem__(self, index: int | slice) -> IdPair | TokenSplit:
        if isinstance(index, slice):
            return self.subset(np.arange(len(self))[index])
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"pair {index} of {n}")
        row = int(index % n if self.rows is None else self.rows[index])
        start, middle, end = self.offsets[2 * row : 2 * row + 3]
        return (self.tokens[start:middle].tolist(), self.tokens[middle:end].tolist())

    def __iter__(self) -> Iterator[IdPair]:
        return (self[i] for i in range(len(self)))

    def subset(self, indices: np.ndarray) -> TokenSplit:
        """The view of the pairs at ``indices`` (positions in this split)."""
        indices = np.asarray(indices, dtype=np.int64)
        rows = indices if self.rows is None else self.rows[indices]
        # int32 while the store's pair numbers fit: half the memory of a view of 10M pairs
        # (what train.max_length leaves of a split), in every training process
        fits = (len(self.offsets) - 1) // 2 <= np.iinfo(np.int32).max
        return TokenSplit(self.tokens, self.offsets, rows.astype(np.int32) if fits else rows,
                          self._checksum)

    def batch(self, indices: Sequence[int] | np.ndarray, *,
              specials: Specials = Specials(),  # noqa: B008 (frozen)
              batch_first: bool = False) -> Batch:
        """The :class:`~padless.data.batch.Batch` of the pairs at ``indices`` (``B`` of
        them), gathered from the arrays in one indexing operation a side."""
        indices = np.asarray(indices, dtype=np.int64)
        if not len(indices):
            raise ValueError("TokenSplit.batch: the batch is empty")
        if indices.min() < -len(self) or indices.max() >= len(self):
            raise IndexError(f"TokenSplit.batch: an index outside the {len(self)} pairs")
        rows = indices % len(self) if self.rows is None else self.rows[indices].astype(np.int64)
        bounds = self.offsets[2 * rows[:, None] + np.arange(3)]  # [B, 3]: start, middle, end
        src, src_lengths = self._padded(bounds[:, 0], bounds[:, 1], specials.pad)
        tgt, tgt_lengths = self._padded(bounds[:, 1], bounds[:, 2], specials.pad)
        return Batch.from_padded(src, src_lengths, tgt, tgt_lengths, specials=specials,
                                 batch_first=batch_first)

    def _padded(self, starts: np.ndarray, ends: np.ndarray, pad_id: int,
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, L]`` rows ``tokens[starts[b]:ends[b]]``, ``pad_id`` beyond each length, and
        the ``[B]`` lengths."""
        lengths = ends - starts
        positions = np.arange(int(lengths.max()))
        valid = positions < lengths[:, None]  # [B, L]
        rows = np.full(valid.shape, pad_id, dtype=np.int64)
        rows[valid] = self.tokens[(starts[:, None] + positions)[valid]]
        return torch.from_numpy(rows), torch.from_numpy(lengths)

    def lengths(self) -> tuple[np.ndarray, np.ndarray]:
        """``(source lengths, target lengths)``, ``[len(self)]`` each (without BOS/EOS):
        uint16 where every length fits (a 10M-pair split: 40 MB), computed in chunks."""
        n_all = (len(self.offsets) - 1) // 2
        blocks = [(start, min(n_all, start + _CHUNK)) for start in range(0, n_all, _CHUNK)]
        longest = max((int(np.diff(self.offsets[2 * a : 2 * b + 1]).max()) for a, b in blocks),
                      default=0)
        dtype = np.uint16 if longest < 1 << 16 else np.int64
        source, target = np.empty(n_all, dtype=dtype), np.empty(n_all, dtype=dtype)
        for a, b in blocks:
            sides = np.diff(self.offsets[2 * a : 2 * b + 1])
            source[a:b], target[a:b] = sides[0::2], sides[1::2]
        if self.rows is not None:
            return source[self.rows], target[self.rows]
        return source, target


def _mapped(path: Path, dtype: np.dtype, count: int, crc: int) -> np.ndarray:
    """``path`` as a read-only array of ``count`` ``dtype`` items, its CRC-32 checked."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise UserError(f"{path}: missing; the prepared dataset is incomplete, prepare it "
                        "again") from None
    if size != count * dtype.itemsize:
        raise UserError(f"{path}: {size} bytes, expected {count * dtype.itemsize} ({count} "
                        f"{dtype.name}); the file is damaged, prepare the dataset again")
    if count == 0:
        return np.zeros(0, dtype=dtype)
    array = np.memmap(path, dtype=dtype, mode="r", shape=(count,))
    found = 0
    for start in range(0, count, _CHUNK):
        found = zlib.crc32(array[start : start + _CHUNK], found)
    if found != crc:
        raise UserError(f"{path}: checksum mismatch (the file is damaged); prepare the dataset "
                        "again")
    return array


def _check_boundaries(offsets: np.ndarray, count: int, path: Path) -> None:
    """Boundaries start at 0, end at the token count, and every side holds a token."""
    if len(offsets) == 0 or offsets[0] != 0 or offsets[-1] != count:
        raise UserError(f"{path}: the boundaries do not span the tokens; prepare the dataset "
                        "again")
    for start in range(0, len(offsets) - 1, _CHUNK):
        if (np.diff(offsets[start : start + _CHUNK + 1]) < 1).any():
            raise UserError(f"{path}: a boundary out of order (an empty side); prepare the "
                            "dataset again")


def _check_ids(tokens: np.ndarray, vocab_size: int, path: Path) -> None:
    for start in range(0, len(tokens), _CHUNK):
        block = tokens[start : start + _CHUNK]
        if len(block) and (int(block.max()) >= vocab_size or int(block.min()) < 0):
            raise UserError(f"{path}: an id outside the vocabulary of {vocab_size}; prepare "
                            "the dataset again")
