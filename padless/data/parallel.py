"""What ``padless prepare --workers N`` runs in parallel, a chunk of pairs at a time:
normalising (and digesting) raw pairs, and tokenising normalised ones.

:class:`ChunkPool` maps a function over chunks in order, in ``N`` worker processes (or in
this process for ``N = 1``), so the output is the same for every ``N``. The workers are
started with ``spawn`` and import this module and :mod:`padless.data.text` only (no torch).
The pool starts on the second chunk: a small corpus never pays for the processes.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from padless.data.dedupe import pair_digest
from padless.data.text import NORMALIZERS, SentencePieceTokenizer, WordTokenizer

__all__ = ["CHUNK_PAIRS", "ChunkPool", "chunked", "normalised", "tokenised"]

CHUNK_PAIRS = 4096  # pairs handed to a worker at a time
T = TypeVar("T")

_tokenizer: Any = None  # the worker's tokenizer (built once by _set_tokenizer)


def normalised(task: tuple[str, int, list[tuple[str, str]]]
               ) -> list[tuple[str, str, int] | None]:
    """``(normaliser name, seed, raw pairs)`` -> per pair ``(source, target, digest)``, or
    None where a side is empty once normalised."""
    name, seed, pairs = task
    normalize = NORMALIZERS[name]
    out: list[tuple[str, str, int] | None] = []
    for source, target in pairs:
        source, target = normalize(source), normalize(target)
        out.append((source, target, pair_digest(source, target, seed))
                   if source and target else None)
    return out


def _set_tokenizer(model_proto: bytes | None) -> None:
    global _tokenizer
    _tokenizer = WordTokenizer() if model_proto is None else SentencePieceTokenizer(model_proto)


def tokenised(lines: list[str]) -> list[tuple[list[str], list[str]]]:
    """``source<TAB>target`` lines of normalised text -> their tokens (the pool's
    tokenizer)."""
    tokenize = _tokenizer.tokenize
    out = []
    for line in lines:
        source, target = line.split("\t")
        out.append((tokenize(source), tokenize(target)))
    return out


class ChunkPool:
    """``map`` in order over chunks, in ``workers`` processes.

    Args:
        workers: processes (1: this one).
        model_proto: the tokenizer :func:`tokenised` uses: a sentencepiece model's bytes,
            or None for words.
    """

    def __init__(self, workers: int, model_proto: bytes | None = None) -> None:
        self.workers, self.model_proto = workers, model_proto
        self._pool: Any = None
        _set_tokenizer(model_proto)

    def map(self, function: Callable[[Any], T], chunks: Iterable[Any]) -> Iterator[T]:
        chunks = iter(chunks)
        first = next(chunks, None)
        if first is None:
            return
        yield function(first)
        if self.workers <= 1:
            yield from map(function, chunks)
            return
        if self._pool is None:
            context = multiprocessing.get_context("spawn")
            self._pool = context.Pool(self.workers, initializer=_set_tokenizer,
                                      initargs=(self.model_proto,))
        # two chunks in flight per worker keep them busy; more would read the corpus into
        # the queue (Pool.imap reads its input as fast as it can: unbounded memory)
        pending: deque = deque()
        for chunk in chunks:
            pending.append(self._pool.apply_async(function, (chunk,)))
            if len(pending) >= 2 * self.workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool = None

    def __enter__(self) -> ChunkPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def chunked(items: Iterable[T], size: int = CHUNK_PAIRS) -> Iterator[list[T]]:
    """``items`` in lists of ``size`` (the last may be shorter)."""
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
