"""The requests waiting for the decoding worker, and the rules for which of them go together:
:class:`RequestQueue` (thread-safe; the event loop submits and cancels, the worker takes).

- The worker takes the oldest waiting request and the waiting requests that may share its
  batch (equal :class:`~padless.decoding.options.SearchOptions`; a seeded sampling request
  only its own), at most ``max_batch_size`` sentences. For a static batch it first waits up
  to ``max_wait_ms`` (from the oldest request's arrival) for company, but only while
  requests come together (the last batch held several, or several are waiting): a lone
  client's request is decoded at once.
- A running continuous batch takes in later requests of its options (:meth:`joiners`), but
  never ahead of an older request of other options: that one goes next.
- A cancelled request (its client went away, or timed out) leaves the queue and is never
  taken; one already taken is marked, and the worker drops its rows.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from padless.decoding.options import SearchOptions
from padless.decoding.search import Hypothesis

__all__ = ["Job", "QueueFull", "RequestQueue", "ShuttingDown"]

WAIT_SLICE = 1.0  # seconds: never block longer at once (a huge max_wait_ms is many slices)


class QueueFull(Exception):
    """The queue already holds ``max_queue`` waiting requests."""


class ShuttingDown(Exception):
    """No new requests: the server is stopping, or its decoding worker failed."""


@dataclass(eq=False)
class Job:
    """One request: its sentences (token id lists) and how to decode them; or, with
    ``targets``, the sentences' targets to score (``POST /v1/score``)."""

    sources: list[list[int]]
    options: SearchOptions
    seed: int | None
    attention: bool
    arrived: float  # time.monotonic()
    future: Future = field(default_factory=Future)
    cancelled: bool = False  # its client went away: decode no more of it
    # continuous batching: each source's answer as it comes, and how many are still missing
    results: list[list[Hypothesis] | None] = field(default_factory=list)
    missing: int = 0
    targets: list[list[int]] | None = None
    prefixes: list[list[int]] | None = None  # each source's answer starts with its prefix
    # streaming: called from the worker with (source index, tokens so far) after each step
    stream: Callable[[int, list[int]], None] | None = None

    def batch_key(self) -> object:
        """Jobs with equal keys may share a batch; a seeded sampling job only its own;
        scoring jobs each other's."""
        if self.targets is not None:
            return "score"
        if self.options.method == "sample" and self.seed is not None:
            return self
        return self.options

    @property
    def gone(self) -> bool:
        return self.cancelled or self.future.cancelled()


class RequestQueue:
    """Waiting requests, in arrival order (see the module docstring).

    Args:
        max_batch_size, max_wait_ms, max_queue: as
            :class:`padless.serving.batcher.DynamicBatcher`.

    Attributes:
        last_batch_requests: requests the worker decoded together last (set by it): more
            than one means requests come together, so a static batch waits for company.
    """

    def __init__(self, *, max_batch_size: int, max_wait_ms: float, max_queue: int) -> None:
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.holding = 0  # requests held back waiting for company right now
        self.failure: str | None = None  # the worker's failure: refuse everything
        self.closed = False
        self._pending: deque[Job] = deque()
        self._taken: dict[Future, Job] = {}  # the worker's jobs, until answered
        self.last_batch_requests = 0
        self._cond = threading.Condition()

    def __len__(self) -> int:
        """Requests waiting (not cancelled)."""
        return sum(1 for job in list(self._pending) if not job.gone)

    def submit(self, sources: Sequence[Sequence[int]], options: SearchOptions,
               seed: int | None, attention: bool, *, refusing: str | None = None,
               targets: Sequence[Sequence[int]] | None = None,
               prefixes: Sequence[Sequence[int]] | None = None,
               stream: Callable[[int, list[int]], None] | None = None) -> Job:
        """Queue a request (with ``targets``: to score); ``refusing``: why no request is taken
        now (draining).

        Raises:
            QueueFull, ShuttingDown.
        """
        job = Job([list(s) for s in sources], options, seed, attention, time.monotonic(),
                  targets=None if targets is None else [list(t) for t in targets],
                  prefixes=None if prefixes is None else [list(p) for p in prefixes],
                  stream=stream)
        with self._cond:
            if self.failure is not None:
                raise ShuttingDown(f"the decoding worker failed ({self.failure})")
            if self.closed or refusing is not None:
                raise ShuttingDown(refusing or "the server is shutting down")
            self._prune()
            if len(self._pending) >= self.max_queue:
                raise QueueFull(f"{len(self._pending)} requests are waiting already")
            self._pending.append(job)
            self._cond.notify()
        return job

    def cancel(self, future: Future) -> None:
        """Give up the request of ``future``: it leaves the queue, or is marked for the
        worker to drop."""
        with self._cond:
            job = self._taken.get(future) or next(
                (j for j in self._pending if j.future is future), None)
            if job is not None and not job.cancelled:
                job.cancelled = True
                future.cancel()  # a queued one is never started
                self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def fail(self, reason: str) -> list[Job]:
        """The worker died: refuse from now on; returns the jobs that were waiting."""
        with self._cond:
            self.failure = reason
            pending, self._pending = list(self._pending), deque()
            return pending

    def done(self, job: Job) -> None:
        """``job`` is answered (or failed): the queue forgets it."""
        with self._cond:
            self._taken.pop(job.future, None)

    # -- the worker's side ----------------------------------------------------------------

    def _prune(self) -> None:
        self._pending = deque(job for job in self._pending if not job.gone)

    def _claim(self, jobs: list[Job]) -> list[Job]:
        for job in jobs:
            self._pending.remove(job)
        claimed = [job for job in jobs if not job.cancelled
                   and job.future.set_running_or_notify_cancel()]
        for job in claimed:
            self._taken[job.future] = job
        return claimed

    def next_batch(self, continuous: set[str]) -> list[Job] | None:
        """Wait for the next batch and claim its jobs (None once closed and drained).
        ``continuous``: the methods the worker decodes continuously (never waited for)."""
        with self._cond:
            while True:
                self._prune()
                while not self._pending:
                    if self.closed:
                        return None
                    self._cond.wait(WAIT_SLICE)
                    self._prune()
                batch = self._claim(self._gather(self._pending[0], continuous))
                if batch:
                    self.last_batch_requests = len(batch)
                    return batch

    def _gather(self, first: Job, continuous: set[str]) -> list[Job]:
        """``first`` and the jobs that may share its batch, after waiting for company where
        requests come together."""
        waits = (first.options.method not in continuous
                 and (self.last_batch_requests > 1 or len(self._pending) > 1))
        deadline = first.arrived + (self.max_wait if waits else 0.0)
        batch = self._compatible(first)
        self.holding = len(batch)
        try:
            while (sum(len(job.sources) for job in batch) < self.max_batch_size
                   and first.batch_key() is not first and not self.closed and not first.gone
                   and (left := deadline - time.monotonic()) > 0):
                self._cond.wait(min(left, WAIT_SLICE))
                batch = self._compatible(first)
                self.holding = len(batch)
        finally:
            self.holding = 0
        return batch

    def _compatible(self, first: Job) -> list[Job]:
        """``first`` and the waiting jobs, oldest first, that fit in its batch."""
        key, size, batch = first.batch_key(), len(first.sources), [first]
        for job in self._pending:
            if job is not first and not job.gone and job.batch_key() == key:
                if size + len(job.sources) <= self.max_batch_size:
                    batch.append(job)
                    size += len(job.sources)
        return batch

    def joiners(self, key: object, room: int) -> list[Job]:
        """Claim the waiting jobs of ``key`` that fit in ``room`` sentences, oldest first;
        none while the oldest waiting job has other options (it goes next)."""
        with self._cond:
            self._prune()
            if not self._pending or self._pending[0].batch_key() != key:
                return []
            fitting = []
            for job in self._pending:
                if job.batch_key() == key and len(job.sources) <= room:
                    fitting.append(job)
                    room -= len(job.sources)
            return self._claim(fitting)
