"""What ``padless prepare --workers N`` runs in parallel, a chunk of pairs at a time:
normalising (and digesting) raw pairs, and tokenising normalised ones.

:class:`ChunkPool` maps a function over chunks in order, in ``N`` worker processes (or in
this process for ``N = 1``), so the output is the same for every ``N``. The workers are
started with ``spawn`` and import this module and :mod:`padless.data.text` only (no torch).
The pool starts on the second chunk (a small corpus never pays for the processes), with at
most one process per core (more only add memory: the work is CPU-bound). Ctrl-C and
SIGTERM (which ``padless.cli`` turns into an exception) end the workers with the pool: none
is left behind or prints a traceback.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from padless.data.dedupe import pair_digest
from padless.data.text import NORMALIZERS, SentencePieceTokenizer, WordTokenizer

__all__ = ["CHUNK_PAIRS", "MAX_WORKERS", "ChunkPool", "chunked", "default_workers", "normalised",
           "tokenised"]

CHUNK_PAIRS = 4096  # pairs handed to a worker at a time
MAX_WORKERS = 1024  # the most --workers accepts (a typo's 10**11 is an error, not a fork bomb)
T = TypeVar("T")

_tokenizer: Any = None  # the worker's tokenizer (built once by _start_worker)


def default_workers() -> int:
    """Processes prepare uses by default, and at most: one per core this process may run
    on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        return os.cpu_count() or 1


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


def _start_worker(model_proto: bytes | None) -> None:
    # Ctrl-C reaches the whole process group: the parent stops the pool, the workers do
    # not each print a KeyboardInterrupt traceback
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _set_tokenizer(model_proto)


@contextmanager
def _signals_held() -> Iterator[None]:
    """SIGTERM and Ctrl-C wait until the block has run, then act as they would have.

    A signal while the pool spawns its workers would unwind this process between starting a
    worker and sending it its start-up data: that worker then died of an ``EOFError``
    traceback of its own. Held, the signal unwinds once the pool exists, and closing the pool
    ends every worker quietly.
    """
    if threading.current_thread() is not threading.main_thread():  # no handlers there
        yield
        return
    held: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: held.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(held):
            signal.raise_signal(sig)


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
        workers: processes asked for (1: this one); at most :func:`default_workers` run.
        model_proto: the tokenizer :func:`tokenised` uses: a sentencepiece model's bytes,
            or None for words.
    """

    def __init__(self, workers: int, model_proto: bytes | None = None) -> None:
        self.workers, self.model_proto = min(workers, default_workers()), model_proto
        self._pool: Any = None
        _set_tokenizer(model_proto)

    def map(self, function: Callable[[Any], T], chunks: Iterable[Any]) -> Iterator[T]:
        chunks = iter(chunks)
        first = next(chunks, None)
        if first is None:
            return
        yield function(first)
        second = next(chunks, None)
        if second is None:  # one chunk: no processes to start
            return
        chunks = itertools.chain([second], chunks)
        if self.workers <= 1:
            yield from map(function, chunks)
            return
        if self._pool is None:
            self._start()
        # two chunks in flight per worker keep them busy; more would read the corpus into
        # the queue (Pool.imap reads its input as fast as it can: unbounded memory)
        pending: deque = deque()
        for chunk in chunks:
            pending.append(self._pool.apply_async(function, (chunk,)))
            if len(pending) >= 2 * self.workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()

    def _start(self) -> None:
        context = multiprocessing.get_context("spawn")
        with _signals_held():
            self._pool = context.Pool(self.workers, initializer=_start_worker,
                                      initargs=(self.model_proto,))

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
