"""Dynamic batching: requests that arrive together are decoded together.

A :class:`DynamicBatcher` owns one worker thread, the only thread that runs the model. The
server submits requests from its event loop (:meth:`DynamicBatcher.submit` returns a
:class:`concurrent.futures.Future` at once) and awaits them, so the event loop keeps answering
(``/healthz``, new requests) while the model works.

The worker takes the oldest waiting request and the waiting requests that may share its batch
(at most ``max_batch_size`` sentences), and decodes them with one model call per decoding
step for all of them. Two ways:

- Greedy and sampling requests, when the model's decoding state can take rows of another
  (``concat``: both architectures): continuous batching
  (:class:`padless.decoding.greedy.RowDecoder`). After every step, sentences that ended leave
  with their answer (a request is answered when its last sentence ends) and waiting requests
  with the same options join, while there is room and no older request of other options
  waits. A short answer never waits for a long one, and a new request never waits for a
  batch to end.
- Beam search requests (and all requests with ``continuous=False``): a static batch, decoded
  by :func:`padless.decoding.batched.decode_ids` until its longest answer ends. The worker
  waits up to ``max_wait_ms`` (from the oldest request's arrival) for more requests to fill
  it, but only while requests come together (the last batch held several, or several are
  waiting): a lone client's request is decoded at once.

Which requests may share a batch (:mod:`padless.serving.queue`): those with equal
:class:`SearchOptions`. A sampling request with a ``seed`` is decoded alone, with its own
generator seeded from it: its answer depends on the seed and the request only. Sampling
requests without a seed share a batch and one freshly seeded generator.

A request whose client went away (:meth:`DynamicBatcher.cancel`) leaves the queue, and its
rows leave a running batch at the next step; a static batch stops when all its requests
are cancelled. A failure of the worker itself fails every waiting request, is reported by
:attr:`DynamicBatcher.failure` (``/healthz`` answers 503), and refuses new requests.

Greedy and beam search answers are the same whether a request was decoded alone or in a
batch (same tokens; scores equal up to float rounding): sentences of a batch never see each
other (packed encoder, masked attention).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass

import torch

from padless.data.batch import IdPair
from padless.decoding.batched import decode_ids, make_generator
from padless.decoding.greedy import RowDecoder
from padless.decoding.options import SearchOptions
from padless.decoding.search import Hypothesis, Stopped
from padless.masking import pad_batch
from padless.models import EncoderDecoder
from padless.models.scoring import PairScore, pair_scores
from padless.serving.queue import Job, QueueFull, RequestQueue, ShuttingDown

__all__ = ["BatcherStats", "DynamicBatcher", "QueueFull", "ShuttingDown"]

log = logging.getLogger(__name__)

CONTINUOUS = {"greedy", "sample"}  # the searches a running batch takes rows into
_STOPPED = "the server stopped before the answer"


@dataclass
class BatcherStats:
    """What the worker has done so far (read by ``/healthz`` and the tests)."""

    requests: int = 0  # requests answered
    batches: int = 0  # groups of requests started together (one encoder call each)
    sentences: int = 0  # sentences decoded
    largest_batch: int = 0  # the most sentences decoded together
    largest_batch_requests: int = 0  # the most requests decoded together
    cancelled: int = 0  # requests whose client went away before their answer


class DynamicBatcher:
    """Collects decoding requests and decodes them in batches on one worker thread.

    Args:
        model: the model, in eval mode; only the worker thread calls it.
        max_batch_size: at most this many sentences per batch (a request with more sentences
            is decoded alone, in batches of this size).
        max_wait_ms: how long the oldest waiting request may wait for others to join it.
        max_queue: :meth:`submit` raises :class:`QueueFull` when this many requests wait.
        threads: torch intra-op threads for decoding, set in the worker (None: leave torch's).
        continuous: let greedy and sampling requests join and leave a running batch at
            every step, when the model's decoding state allows it.

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
        self.threads = threads
        self.continuous = CONTINUOUS if continuous and model.rows_can_join else set()
        self.stats = BatcherStats()
        self.queue = RequestQueue(max_batch_size=max_batch_size, max_wait_ms=max_wait_ms,
                                  max_queue=max_queue)
        self._in_flight = 0
        self._abandon = False  # stop decoding at the next step (a forced stop)
        # set without a lock, so a signal handler may set it: submit() then refuses
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
        prefixes: Sequence[Sequence[int]] | None = None,
        stream: Callable[[int, list[int]], None] | None = None,
    ) -> Future[list[list[Hypothesis]]]:
        """Queue ``sources`` for decoding; the future's result is each one's hypotheses, best
        first (``options.n_best`` of them: beam search; one for the other searches).

        An empty source gets an empty hypothesis. ``seed`` seeds a sampling request's own
        generator (see the module docstring); ``attention`` keeps each hypothesis' ``[T, S]``
        attention; ``prefixes`` (ids) start each source's answers; ``stream`` is called (in
        the worker thread) with a source's index and its tokens so far after every decoding
        step of a continuous batch. :meth:`cancel` gives it up.

        Raises:
            QueueFull: ``max_queue`` requests are waiting already.
            ShuttingDown: :meth:`close` was called, :attr:`draining` set, or the worker failed.
        """
        refusing = "the server is shutting down" if self.draining else None
        return self.queue.submit(sources, options, seed, attention, refusing=refusing,
                                 prefixes=prefixes, stream=stream).future

    def submit_scores(self, pairs: Sequence[IdPair]) -> Future[list[PairScore]]:
        """Queue ``(source, target)`` id pairs to score (every source non-empty); the future's
        result is each pair's :class:`~padless.models.scoring.PairScore`. Scoring requests
        share batches with each other, teacher-forced, between decoding batches.

        Raises:
            QueueFull, ShuttingDown: as :meth:`submit`.
        """
        refusing = "the server is shutting down" if self.draining else None
        return self.queue.submit([s for s, _ in pairs], SearchOptions(), None, False,
                                 refusing=refusing, targets=[t for _, t in pairs]).future

    def cancel(self, future: Future) -> None:
        """Give up the request of ``future`` (its client went away or timed out): it leaves
        the queue, or its rows leave the running batch at the next step."""
        self.queue.cancel(future)

    @property
    def queued(self) -> int:
        """Requests waiting for the worker."""
        return len(self.queue)

    @property
    def in_flight(self) -> int:
        """Requests being decoded now."""
        return self._in_flight

    @property
    def failure(self) -> str | None:
        """Why the worker died, or None."""
        return self.queue.failure

    @property
    def alive(self) -> bool:
        """Whether the worker can decode (started and not failed)."""
        return self.failure is None and self._worker is not None and self._worker.is_alive()

    def start(self) -> None:
        """Start the worker thread."""
        if self._worker is None:
            self._worker = threading.Thread(target=self._run, name="padless-decode", daemon=True)
            self._worker.start()

    def abandon(self) -> None:
        """Stop decoding at the next step and answer every request taken with
        :class:`ShuttingDown`; :meth:`close` then stops the worker. Plain assignments only,
        so a signal handler may call it."""
        self.draining = True
        self._abandon = True

    def close(self, timeout: float | None = None, *, abandon: bool = False) -> None:
        """Take no more requests, decode the waiting ones (``abandon``: stop at the next step
        and fail them with :class:`ShuttingDown`), then stop the worker (waits for it up to
        ``timeout`` seconds)."""
        self._abandon = self._abandon or abandon
        self.queue.close()
        if self._worker is not None:
            self._worker.join(timeout)

    # -- the worker's side --------------------------------------------------------------

    def _run(self) -> None:
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        try:
            while (batch := self.queue.next_batch(self.continuous)) is not None:
                self._in_flight = len(batch)
                if self._abandon:
                    self._fail(batch, ShuttingDown(_STOPPED))
                elif batch[0].targets is not None:
                    self._score(batch)
                elif batch[0].options.method in self.continuous:
                    self._decode_continuously(batch)
                else:
                    self._decode(batch)
                self._in_flight = 0
        except BaseException as e:  # the worker must never die silently: say so everywhere
            log.exception("the decoding worker failed")
            reason = f"{type(e).__name__}: {e}"
            self._fail(self.queue.fail(reason), ShuttingDown(f"the decoding worker failed "
                                                             f"({reason})"))

    def _fail(self, jobs: list[Job], error: BaseException) -> None:
        for job in jobs:
            if not job.future.done():
                job.future.set_exception(error)
            self.queue.done(job)

    def _score(self, batch: list[Job]) -> None:
        """Score every pair of ``batch`` together and hand each job its scores."""
        pairs = [pair for job in batch for pair in zip(job.sources, job.targets, strict=True)]
        try:
            scores = pair_scores(self.model, pairs, batch_size=self.max_batch_size)
        except Exception as e:  # a bug must reach the waiting requests, not end the worker
            log.exception("scoring %d pairs failed", len(pairs))
            self._fail(batch, e)
            return
        self._count(len(pairs), len(pairs), len(batch))
        start = 0
        for job in batch:
            self._answer(job, scores[start : start + len(job.sources)])
            start += len(job.sources)

    def _answer(self, job: Job, answers: list) -> None:
        """Hand ``job`` its answers (counters first, so a client sees them include it)."""
        self.queue.done(job)
        if job.cancelled:  # nobody waits for it any more; a late reader learns why
            self.stats.cancelled += 1
            if not job.future.done():
                job.future.set_exception(CancelledError())
            return
        self.stats.requests += 1
        job.future.set_result(answers)

    def _count(self, sentences: int, largest: int, requests: int) -> None:
        stats = self.stats
        stats.batches += 1
        stats.sentences += sentences
        stats.largest_batch = max(stats.largest_batch, largest)
        stats.largest_batch_requests = max(stats.largest_batch_requests, requests)
        self.queue.last_batch_requests = requests

    def _decode(self, batch: list[Job]) -> None:
        """Decode every sentence of ``batch`` together and hand each job its hypotheses."""
        first = batch[0]
        sources = [source for job in batch for source in job.sources]
        try:
            generator = None
            if first.options.method == "sample":
                generator = make_generator(first.seed, self.model.device)
            prefixes = [prefix for job in batch for prefix in (
                job.prefixes or [[] for _ in job.sources])]
            nbests = decode_ids(
                self.model, sources, first.options, batch_size=self.max_batch_size,
                generator=generator, return_attention=any(job.attention for job in batch),
                stop=lambda: self._abandon or all(job.cancelled for job in batch),
                prefixes=prefixes)
        except Stopped:
            for job in batch:
                if job.cancelled:
                    self._answer(job, [])
            self._fail([job for job in batch if not job.cancelled], ShuttingDown(_STOPPED))
            return
        except Exception as e:  # a bug must reach the waiting requests, not end the worker
            log.exception("decoding a batch of %d sentences failed", len(sources))
            self._fail(batch, e)
            return
        self._in_flight = 0
        self._count(len(sources), len(sources), len(batch))
        start = 0
        for job in batch:
            end = start + len(job.sources)
            self._answer(job, nbests[start:end])
            start = end

    # -- continuous batching (greedy and sampling) --------------------------------------

    def _decode_continuously(self, batch: list[Job]) -> None:
        """Decode step by step; after every step, cancelled jobs' rows leave, finished jobs
        get their answers, and waiting jobs with the same options join."""
        first = batch[0]
        generator = None
        if first.options.method == "sample":
            generator = make_generator(first.seed, self.model.device)
        decoder = RowDecoder(self.model, first.options, generator=generator,
                             return_attention=any(job.attention for job in batch))
        running: set[Job] = set()
        try:
            self._admit(decoder, batch, running)
            while len(decoder):
                if self._abandon:
                    raise Stopped
                self._leave(decoder, running)
                finished = decoder.step()
                for (job, index), tokens in decoder.partial():
                    if job.stream is not None:
                        job.stream(index, tokens)
                for (job, index), hyp in finished:
                    if job.stream is not None:  # a row cut at max_length has one more token
                        job.stream(index, hyp.tokens)
                    job.results[index] = [hyp]
                    job.missing -= 1
                    if job.missing == 0:
                        running.discard(job)
                        self._in_flight = len(running)
                        self._answer(job, job.results)
                room = self.max_batch_size - len(decoder)
                if joiners := self.queue.joiners(first.batch_key(), room):
                    self._admit(decoder, joiners, running)
        except Stopped:
            self._fail(list(running), ShuttingDown(_STOPPED))
        except Exception as e:  # a bug must reach the waiting requests, not end the worker
            log.exception("continuous decoding of %d requests failed", len(running))
            self._fail(list(running), e)

    def _leave(self, decoder: RowDecoder, running: set[Job]) -> None:
        """The rows of cancelled jobs leave the running batch."""
        gone = [job for job in running if job.cancelled]
        if gone:
            decoder.drop(tag for tag in decoder.tags if tag[0] in gone)
            for job in gone:
                running.discard(job)
                self._answer(job, [])
            self._in_flight = len(running)

    def _admit(self, decoder: RowDecoder, jobs: list[Job], running: set[Job]) -> None:
        """Add the jobs' sentences to the running batch (one encoder call); a job whose
        sentences cannot be encoded fails alone."""
        rows, tags, prefixes = [], [], []
        for job in jobs:
            job.results = [[Hypothesis([], 0.0, 0.0, False)] if not s else None
                           for s in job.sources]  # an empty source: nothing to decode
            job.missing = sum(1 for s in job.sources if s)
            rows += [s for s in job.sources if s]
            tags += [(job, i) for i, s in enumerate(job.sources) if s]
            prefixes += [[] if job.prefixes is None else job.prefixes[i]
                         for i, s in enumerate(job.sources) if s]
        try:
            if rows:
                src, lengths = pad_batch(rows, self.model.specials.pad)
                decoder.add(src.to(self.model.device), lengths, tags, prefixes)
        except Exception as e:
            if len(jobs) > 1:  # find the culprit: each job on its own
                for job in jobs:
                    self._admit(decoder, [job], running)
                return
            log.exception("encoding a request failed")
            self._fail(jobs, e)
            return
        running.update(job for job in jobs if job.missing)
        self._count(len(rows), len(decoder), len(running))
        self._in_flight = len(running)
        for job in jobs:
            if not job.missing:
                self._answer(job, job.results)
