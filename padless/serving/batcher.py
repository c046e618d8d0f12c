"""Dynamic batching: requests that arrive together are decoded together.

A :class:`DynamicBatcher` owns one worker thread, the only thread that runs the model. The
server submits requests from its event loop (:meth:`DynamicBatcher.submit` returns a
:class:`concurrent.futures.Future` at once) and awaits them, so the event loop keeps answering
(``/healthz``, new requests) while the model works.

The worker takes the oldest waiting request and the waiting requests that may share its batch
(at most ``max_batch_size`` sentences), and decodes them with one model call per decoding
step for all of them. Two ways:

- Greedy requests (the default search), when the model's decoding state can ``concat``:
  continuous batching (:class:`padless.decoding.continuous.ContinuousGreedy`). After every
  step, sentences that ended leave with their answer (a request is answered when its last
  sentence ends) and waiting requests with the same options join, while there is room and no
  older request of other options waits. A short answer never waits for a long one, and a new
  request never waits for a batch to end.
- Other requests (beam search, sampling, or ``continuous=False``): a static batch, decoded by
  :func:`padless.decoding.batched.decode_ids` until its longest answer ends. The worker waits
  up to ``max_wait_ms`` (from the oldest request's arrival) for more requests to fill it, but
  only while requests come together (the last batch held several, or several are waiting): a
  lone client's request is decoded at once.

Which requests may share a batch: those with equal :class:`SearchOptions` (a beam-5 request
never waits for, or slows down, a greedy one's batch). A sampling request with a ``seed`` is
decoded alone, with its own generator seeded from it: its answer then depends on the seed and
the request only, never on the requests it happened to arrive with. Sampling requests without
a seed share a batch and one freshly seeded generator.

Greedy and beam search answers are the same whether a request was decoded alone or in a
batch (same tokens; scores equal up to float rounding, as batched matrix products round
differently): sentences of a batch never see each other (packed encoder, masked attention).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch

from padless.decoding.batched import decode_ids, make_generator
from padless.decoding.continuous import ContinuousGreedy, can_concat
from padless.decoding.search import Hypothesis, SearchOptions
from padless.models import EncoderDecoder

__all__ = ["BatcherStats", "DynamicBatcher", "QueueFull", "ShuttingDown"]

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The batcher already holds ``max_queue`` waiting requests."""


class ShuttingDown(Exception):
    """The batcher takes no new requests: it is finishing the ones it has, then stopping."""


@dataclass(eq=False)
class _Job:
    """One request: its sentences (token id lists) and how to decode them."""

    sources: list[list[int]]
    options: SearchOptions
    seed: int | None
    attention: bool
    arrived: float  # time.monotonic()
    future: Future = field(default_factory=Future)
    # continuous batching: each source's answer as it comes, and how many are still missing
    results: list[Hypothesis | None] = field(default_factory=list)
    missing: int = 0

    def batch_key(self) -> object:
        """Jobs with equal keys may share a batch; a seeded sampling job only its own."""
        if self.options.method == "sample" and self.seed is not None:
            return self
        return self.options


@dataclass
class BatcherStats:
    """What the worker has done so far (read by ``/healthz`` and the tests)."""

    requests: int = 0  # requests answered
    batches: int = 0  # groups of requests started together (one encoder call each)
    sentences: int = 0  # sentences decoded
    largest_batch: int = 0  # the most sentences decoded together
    largest_batch_requests: int = 0  # the most requests decoded together


class DynamicBatcher:
    """Collects decoding requests and decodes them in batches on one worker thread.

    Args:
        model: the model, in eval mode; only the worker thread calls it.
        max_batch_size: at most this many sentences per batch (a request with more sentences
            is decoded alone, in batches of this size).
        max_wait_ms: how long the oldest waiting request may wait for others to join it.
        max_queue: :meth:`submit` raises :class:`QueueFull` when this many requests wait.
        threads: torch intra-op threads for decoding, set in the worker (None: leave torch's).
        continuous: let greedy requests join and leave a running batch at every step, when
            the model's decoding state allows it (see the module docstring).

    Requests submitted before :meth:`start` wait in the queue until it is called.
    """

    def __init__(
        self,
        model: EncoderDecoder,
        *,
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        max_queue: int = 256,
        threads: int | None = None,
        continuous: bool = True,
    ) -> None:
        for name, value in (("max_batch_size", max_batch_size), ("max_queue", max_queue),
                            ("threads", 1 if threads is None else threads)):
            if value < 1:
                raise ValueError(f"DynamicBatcher: {name} must be at least 1, got {value}")
        if not 0.0 <= max_wait_ms < float("inf"):
            raise ValueError(f"DynamicBatcher: max_wait_ms must be >= 0, got {max_wait_ms}")
        self.model = model
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.threads = threads
        self.continuous = continuous and can_concat(model)
        self.stats = BatcherStats()
        self._pending: deque[_Job] = deque()
        self._in_flight = 0
        self._last_batch_requests = 0
        self._cond = threading.Condition()
        self._closed = False
        # set without the lock, so a signal handler may set it: submit() then refuses
        self.draining = False
        self._worker: threading.Thread | None = None

    # -- the event loop's side ----------------------------------------------------------

    def submit(
        self,
        sources: Sequence[Sequence[int]],
        options: SearchOptions,
        *,
        seed: int | None = None,
        attention: bool = False,
    ) -> Future[list[Hypothesis]]:
        """Queue ``sources`` for decoding; the future's result is each one's best hypothesis.

        An empty source gets an empty hypothesis. ``seed`` seeds a sampling request's own
        generator (see the module docstring); ``attention`` keeps each hypothesis' ``[T, S]``
        attention. Cancelling the future before the worker takes the request drops it.

        Raises:
            QueueFull: ``max_queue`` requests are waiting already.
            ShuttingDown: :meth:`close` was called, or :attr:`draining` set.
        """
        job = _Job([list(s) for s in sources], options, seed, attention, time.monotonic())
        with self._cond:
            if self._closed or self.draining:
                raise ShuttingDown("the server is shutting down")
            if len(self._pending) >= self.max_queue:  # requests given up on leave first
                self._pending = deque(j for j in self._pending if not j.future.cancelled())
            if len(self._pending) >= self.max_queue:
                raise QueueFull(f"{len(self._pending)} requests are waiting already")
            self._pending.append(job)
            self._cond.notify()
        return job.future

    @property
    def queued(self) -> int:
        """Requests waiting for the worker."""
        return len(self._pending)

    @property
    def in_flight(self) -> int:
        """Requests being decoded now."""
        return self._in_flight

    def start(self) -> None:
        """Start the worker thread."""
        if self._worker is None:
            self._worker = threading.Thread(target=self._run, name="padless-decode", daemon=True)
            self._worker.start()

    def close(self, timeout: float | None = None) -> None:
        """Take no more requests, decode the waiting ones, then stop the worker (waits for it
        up to ``timeout`` seconds)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._worker is not None:
            self._worker.join(timeout)

    # -- the worker's side --------------------------------------------------------------

    def _run(self) -> None:
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        while (batch := self._next_batch()) is not None:
            if self._steps_continuously(batch[0]):
                self._decode_continuously(batch)
            else:
                self._decode(batch)

    def _steps_continuously(self, job: _Job) -> bool:
        return self.continuous and ContinuousGreedy.supports(job.options)

    def _next_batch(self) -> list[_Job] | None:
        """Wait for the next batch (None once closed and drained); claims its jobs."""
        with self._cond:
            while True:
                while not self._pending:
                    if self._closed:
                        return None
                    self._cond.wait()
                first = self._pending[0]
                # wait for company only when requests come together: a lone client's request
                # is decoded at once
                busy = self._last_batch_requests > 1 or len(self._pending) > 1
                if self._steps_continuously(first):  # latecomers join at the next step
                    busy = False
                deadline = first.arrived + (self.max_wait if busy else 0.0)
                batch = self._compatible(first)
                while (sum(len(job.sources) for job in batch) < self.max_batch_size
                       and first.batch_key() is not first and not self._closed
                       and (left := deadline - time.monotonic()) > 0):
                    self._cond.wait(left)
                    batch = self._compatible(first)
                for job in batch:
                    self._pending.remove(job)
                # a request whose client gave up (timeout) before now is dropped here
                batch = [job for job in batch if job.future.set_running_or_notify_cancel()]
                if batch:
                    self._in_flight = self._last_batch_requests = len(batch)
                    return batch

    def _compatible(self, first: _Job) -> list[_Job]:
        """``first`` and the waiting jobs, oldest first, that fit in its batch."""
        key, size, batch = first.batch_key(), len(first.sources), [first]
        for job in self._pending:
            if job is not first and job.batch_key() == key:
                if size + len(job.sources) <= self.max_batch_size:
                    batch.append(job)
                    size += len(job.sources)
        return batch

    def _decode(self, batch: list[_Job]) -> None:
        """Decode every sentence of ``batch`` together and hand each job its hypotheses."""
        first = batch[0]
        sources = [source for job in batch for source in job.sources]
        try:
            generator = None
            if first.options.method == "sample":
                generator = make_generator(first.seed, self.model.device)
            nbests = decode_ids(
                self.model, sources, first.options, batch_size=self.max_batch_size,
                generator=generator, return_attention=any(job.attention for job in batch),
            )
        except Exception as e:  # a bug must reach the waiting requests, not end the worker
            log.exception("decoding a batch of %d sentences failed", len(sources))
            self._in_flight = 0
            for job in batch:
                job.future.set_exception(e)
            return
        # counted before any answer leaves, so that a client sees counters that include it
        self._in_flight = 0
        stats = self.stats
        stats.requests += len(batch)
        stats.batches += 1
        stats.sentences += len(sources)
        stats.largest_batch = max(stats.largest_batch, len(sources))
        stats.largest_batch_requests = max(stats.largest_batch_requests, len(batch))
        start = 0
        for job in batch:
            end = start + len(job.sources)
            job.future.set_result([nbest[0] for nbest in nbests[start:end]])
            start = end

    # -- continuous batching (greedy) ---------------------------------------------------

    def _decode_continuously(self, batch: list[_Job]) -> None:
        """Decode step by step; after every step, waiting jobs with the same options join
        (while there is room and no older job of other options waits) and finished jobs
        get their answers."""
        engine = ContinuousGreedy(self.model, batch[0].options)
        running: set[_Job] = set()
        try:
            self._admit(engine, batch, running)
            while len(engine):
                for (job, index), hyp in engine.step():
                    job.results[index] = hyp
                    job.missing -= 1
                    if job.missing == 0:
                        running.discard(job)
                        self._finish(job, len(running))
                joiners = self._joiners(batch[0].batch_key(), self.max_batch_size - len(engine))
                if joiners:
                    self._admit(engine, joiners, running)
        except Exception as e:  # a bug must reach the waiting requests, not end the worker
            log.exception("continuous decoding of %d requests failed", len(running))
            self._in_flight = 0
            for job in running:
                job.future.set_exception(e)

    def _joiners(self, key: object, room: int) -> list[_Job]:
        """Claim the waiting jobs of ``key`` that fit in ``room`` sentences, oldest first;
        none while the oldest waiting job has other options (it goes next)."""
        with self._cond:
            while self._pending and self._pending[0].future.cancelled():
                self._pending.popleft()
            if not self._pending or self._pending[0].batch_key() != key:
                return []
            joiners = []
            for job in list(self._pending):
                if job.batch_key() == key and len(job.sources) <= room:
                    self._pending.remove(job)
                    if job.future.set_running_or_notify_cancel():
                        joiners.append(job)
                        room -= len(job.sources)
            return joiners

    def _admit(self, engine: ContinuousGreedy, jobs: list[_Job], running: set[_Job]) -> None:
        """Add the jobs' sentences to ``engine`` (one encoder call); a job whose sentences
        cannot be encoded fails alone."""
        rows, tags = [], []
        for job in jobs:
            job.results = [Hypothesis([], 0.0, 0.0, False) if not s else None
                           for s in job.sources]  # an empty source: nothing to decode
            job.missing = sum(1 for s in job.sources if s)
            rows += [s for s in job.sources if s]
            tags += [(job, i) for i, s in enumerate(job.sources) if s]
        try:
            if rows:
                engine.add(rows, tags)
        except Exception as e:
            if len(jobs) > 1:  # find the culprit: each job on its own
                for job in jobs:
                    self._admit(engine, [job], running)
                return
            log.exception("encoding a request failed")
            self._in_flight = len(running)
            jobs[0].future.set_exception(e)
            return
        running.update(job for job in jobs if job.missing)
        stats = self.stats
        stats.batches += 1
        stats.sentences += len(rows)
        stats.largest_batch = max(stats.largest_batch, len(engine))
        stats.largest_batch_requests = max(stats.largest_batch_requests, len(running))
        self._in_flight = self._last_batch_requests = len(running)
        for job in jobs:
            if not job.missing:
                self._finish(job, len(running))

    def _finish(self, job: _Job, in_flight: int) -> None:
        """Hand ``job`` its answers (counters first, so a client sees them include it)."""
        self._in_flight = in_flight
        self.stats.requests += 1
        job.future.set_result(job.results)
