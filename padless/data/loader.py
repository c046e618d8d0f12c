"""The batches a training run reads: :class:`TrainingBatches` (endless, shuffled by epoch,
resumable, sharded over processes) and :class:`ValidationBatches` (fixed), both length-
bucketed by :class:`padless.data.sampler.BucketBatchSampler`; :func:`within_length`, the
length cap on what a run trains on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np

from padless.data.batch import Batch, IdPair
from padless.data.sampler import BucketBatchSampler
from padless.data.store import TokenSplit
from padless.data.vocabulary import Specials
from padless.runtime.errors import UserError

__all__ = ["TrainingBatches", "ValidationBatches", "as_split", "make_batches", "run_batches",
           "within_length"]


def as_split(pairs: Sequence[IdPair]) -> TokenSplit:
    """``pairs`` as a :class:`~padless.data.store.TokenSplit` (a list of pairs is copied
    into arrays; a split is itself): the one place that tells the two apart."""
    return pairs if isinstance(pairs, TokenSplit) else TokenSplit.from_pairs(pairs)


def make_batches(pairs: Sequence[IdPair], index_lists: Iterable[Sequence[int]], *,
                 specials: Specials = Specials(),  # noqa: B008 (frozen)
                 batch_first: bool = False) -> Iterator[Batch]:
    """The ``Batch`` of each list of indices into ``pairs`` (e.g. what a sampler yields),
    gathered from the arrays in a few operations; ``specials``: the vocabulary's."""
    split = as_split(pairs)
    for indices in index_lists:
        yield split.batch(indices, specials=specials, batch_first=batch_first)


def within_length(pairs: Sequence[IdPair], max_length: int | None) -> TokenSplit:
    """The pairs with at most ``max_length`` tokens on either side (None: all of them)."""
    split = as_split(pairs)
    if max_length is None:
        return split
    source, target = split.lengths()
    short = (source <= max_length) & (target <= max_length)
    return split if short.all() else split.subset(np.flatnonzero(short))


def _sampler(pairs: TokenSplit, **options: object) -> BucketBatchSampler:
    return BucketBatchSampler(*pairs.lengths(), **options)  # type: ignore[arg-type]


class TrainingBatches:
    """Training batches of ``pairs`` without end: one shuffled, length-bucketed epoch after
    another (see :class:`~padless.data.sampler.BucketBatchSampler`).

    ``batch_size`` / ``max_tokens`` are global: under ``torchrun`` process ``shard_index`` of
    ``num_shards`` gets its share of every global batch. :meth:`state_dict` taken after a
    batch resumes at the next one.
    """

    def __init__(
        self,
        pairs: Sequence[IdPair],
        *,
        batch_size: int | None,
        max_tokens: int | None,
        seed: int,
        num_shards: int = 1,
        shard_index: int = 0,
        specials: Specials = Specials(),  # noqa: B008 (frozen)
    ) -> None:
        self.pairs = pairs = as_split(pairs)
        self.sampler = _sampler(pairs, batch_size=batch_size, max_tokens=max_tokens,
                                shuffle=True, seed=seed, num_shards=num_shards,
                                shard_index=shard_index)
        self._batches = make_batches(pairs, self._endless(), specials=specials)

    def _endless(self) -> Iterator[list[int]]:
        while True:  # the sampler advances its epoch at each end
            yield from self.sampler

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        return next(self._batches)

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    @property
    def batches_per_epoch(self) -> int:
        return len(self.sampler)

    def state_dict(self) -> dict:
        """Where the next batch comes from (plain ints), and the checksum of the pairs that
        position points into."""
        return {**self.sampler.state_dict(), "data": self.pairs.checksum}

    def load_state_dict(self, state: dict) -> str | None:
        """Go on from :meth:`state_dict`; a notice if not exactly (see the sampler's), as when
        the data were prepared again since: the position would point at other pairs, so the
        epoch starts again from its first batch.

        Raises:
            ValueError: if the state belongs to another split, seed or batch size, where
                resuming would repeat or skip pairs.
        """
        notice = self.sampler.load_state_dict(state)
        recorded = state.get("data")  # None: saved before 2026-12-06
        if notice is None and recorded is not None and recorded != self.pairs.checksum:
            position = self.sampler.state_dict()["position"]
            self.sampler.set_epoch(self.sampler.epoch)
            notice = (f"the training pairs differ from those the checkpoint was saved on (the "
                      f"dataset was prepared again): epoch {self.sampler.epoch} starts again "
                      f"from its first batch (the pairs of its {position} batches already "
                      "trained are seen again)")
        return notice


class ValidationBatches:
    """This process's share of the validation batches of ``pairs``, in one fixed, sorted
    order, built anew from the arrays at each pass (``len``: how many; empty when there
    are fewer pairs than processes). A list of them would hold the whole split as
    tensors for the whole run: 0.3 GB at 10M pairs."""

    def __init__(self, pairs: Sequence[IdPair], *, batch_size: int | None,
                 max_tokens: int | None, num_shards: int = 1, shard_index: int = 0,
                 specials: Specials = Specials()) -> None:  # noqa: B008 (frozen)
        self.pairs, self.specials = as_split(pairs), specials
        self.sampler = None
        if len(self.pairs) >= num_shards:
            self.sampler = _sampler(self.pairs, batch_size=batch_size, max_tokens=max_tokens,
                                    shuffle=False, num_shards=num_shards,
                                    shard_index=shard_index)
        self._len = 0 if self.sampler is None else len(self.sampler)

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[Batch]:
        if self.sampler is None:
            return iter(())
        self.sampler.set_epoch(0)  # the same batches at every pass
        return make_batches(self.pairs, self.sampler, specials=self.specials)


def run_batches(
    splits: dict[str, Sequence[IdPair]],
    *,
    max_length: int | None,
    batch_size: int | None,
    max_tokens: int | None,
    seed: int,
    num_shards: int = 1,
    shard_index: int = 0,
    specials: Specials = Specials(),  # noqa: B008 (frozen)
    say: Callable[[str], object] = print,
    where: str | os.PathLike | None = None,
) -> tuple[TrainingBatches, ValidationBatches]:
    """A training run's batches: :class:`TrainingBatches` of ``splits["train"]`` and this
    process's :class:`ValidationBatches` of ``splits["valid"]``, both within ``max_length``
    tokens a side (``say`` tells how many pairs that leaves out: one runaway pair can take
    minutes per step and all the memory, and a step cannot be interrupted).

    Raises:
        UserError: if fewer training pairs are left than there are processes (``where``,
            the data's directory, is named).
    """
    usable = {}
    for name in ("train", "valid"):
        pairs = splits.get(name, [])
        usable[name] = within_length(pairs, max_length)
        if len(usable[name]) < len(pairs):
            say(f"left out {len(pairs) - len(usable[name])} {name} pairs longer than "
                f"{max_length} tokens (train.max_length)")
    if len(usable["train"]) < num_shards:
        of = f" of {where}" if where is not None else ""
        if not splits.get("train"):
            raise UserError(f"the training split{of} is empty: nothing to train on; prepare "
                            "the data again")
        raise UserError(
            f"the training split{of} has {len(usable['train'])} usable pairs "
            f"({len(splits['train'])} in all, train.max_length={max_length}) for {num_shards} "
            "process(es): raise train.max_length, or prepare more data")
    limits = {"batch_size": batch_size, "max_tokens": max_tokens, "num_shards": num_shards,
              "shard_index": shard_index, "specials": specials}
    return (TrainingBatches(usable["train"], seed=seed, **limits),
            ValidationBatches(usable["valid"], **limits))
