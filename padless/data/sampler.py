"""A length-bucketed, seeded, resumable and shardable batch sampler, on length arrays.

Random batching pads every sequence to the longest one drawn next to it, so most of a
chat batch is padding. Here each epoch:

1. orders all pairs by (target, source) length, pairs of equal lengths in a random order
   (seeded by ``seed`` and the epoch);
2. cuts that order into *global* batches of ``batch_size`` pairs and/or at most
   ``max_tokens`` padded cells;
3. shuffles the batches.

Equal lengths are common in chat (thousands of pairs share each short length), so batches
differ from epoch to epoch even with one global sort.

Everything is array work (numpy), none of it per pair in Python: a batch is a range of the
ordered indices, and the cut walks the runs of equal lengths (a few thousand, whatever the
corpus size) rather than the pairs, so a 10M-pair split is ordered in about a second and
holds 4 bytes per pair. (Before, Python's ``random`` shuffled a list of ints: 8 s and 0.4 GB
at 10M pairs. A run whose checkpoint holds such a sampler state resumes at the start of its
epoch, with a notice: the new order does not know where the old one was.)

Sharding: every shard computes the same global batches and shard ``k`` of ``N`` takes
``global_batch[k::N]``; ``batch_size`` and ``max_tokens`` are therefore global (per
optimiser step). A global batch smaller than ``min_global_batch`` (default ``num_shards``)
is merged into its neighbour so that no shard ever gets an empty batch; a single process
that must see exactly the union of ``N`` shards passes ``min_global_batch=N``.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

__all__ = ["BucketBatchSampler", "padding_fraction", "random_batches"]

ORDER_VERSION = 2  # of the epoch order; a state without it is from the list-based sampler
RUN_BLOCK = 1 << 20  # pairs whose lengths the cut compares at a time


def padding_fraction(
    batches: Iterable[Sequence[int]], lengths: Sequence[int], *, extra: int = 0
) -> float:
    """Fraction of the padded cells that are padding, over ``batches``.

    Args:
        batches: lists of indices into ``lengths``.
        lengths: sequence lengths.
        extra: added to every length (1 for targets: a ``Batch`` appends EOS / prepends BOS).
    """
    real = cells = 0
    for batch in batches:
        lens = [int(lengths[i]) + extra for i in batch]
        if lens:
            real += sum(lens)
            cells += max(lens) * len(lens)
    return 1.0 - real / cells if cells else 0.0


def random_batches(n: int, batch_size: int, seed: int = 0) -> list[list[int]]:
    """Plain random batching (shuffle, then cut): the baseline the sampler is measured against."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


class BucketBatchSampler:
    """Yields lists of indices into one split; one epoch per iteration.

    Iterating to the end advances the epoch by one, so a plain ``for`` loop per epoch gets
    a new order each time; ``set_epoch`` sets it explicitly (as ``DistributedSampler`` does).
    ``state_dict`` taken mid-epoch resumes at the next batch.
    """

    def __init__(
        self,
        src_lengths: Sequence[int] | np.ndarray,
        tgt_lengths: Sequence[int] | np.ndarray,
        *,
        batch_size: int | None = None,
        max_tokens: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        num_shards: int = 1,
        shard_index: int = 0,
        min_global_batch: int | None = None,
    ) -> None:
        """
        Args:
            src_lengths, tgt_lengths: per-pair lengths (without BOS/EOS), lists or arrays.
            batch_size: at most this many pairs per global batch.
            max_tokens: at most this many padded cells per global batch, counted as
                ``pairs * max(longest source, longest target + 1)``; a pair above the budget
                alone still forms a batch (nothing is dropped). At least one of the two
                limits is required; with both, both hold.
            shuffle: False gives one fixed, fully sorted order (for evaluation).
            seed: the order depends only on ``seed`` and the epoch.
            num_shards, shard_index: this process's share (see the module docstring).
            min_global_batch: smallest global batch (default ``num_shards``).
        """
        if len(src_lengths) != len(tgt_lengths):
            raise ValueError(
                f"BucketBatchSampler: {len(src_lengths)} source lengths but "
                f"{len(tgt_lengths)} target lengths"
            )
        if batch_size is None and max_tokens is None:
            raise ValueError("BucketBatchSampler: give batch_size, max_tokens or both")
        for name, value in (("batch_size", batch_size), ("max_tokens", max_tokens)):
            if value is not None and value < 1:
                raise ValueError(f"BucketBatchSampler: {name} must be >= 1, got {value}")
        if num_shards < 1 or not 0 <= shard_index < num_shards:
            raise ValueError(
                f"BucketBatchSampler: shard_index={shard_index} must be in [0, {num_shards})"
            )
        self.min_global_batch = num_shards if min_global_batch is None else min_global_batch
        if len(src_lengths) < max(1, self.min_global_batch):
            raise ValueError(
                f"BucketBatchSampler: {len(src_lengths)} pairs cannot fill one batch for each "
                f"of {max(1, self.min_global_batch)} shards"
            )
        self.src_lengths = np.asarray(src_lengths)
        self.tgt_lengths = np.asarray(tgt_lengths)
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.shuffle = shuffle
        self.seed = seed
        self.num_shards = num_shards
        self.shard_index = shard_index
        self.epoch = 0
        self._position = 0  # global batches already handed out in this epoch
        self._cache: tuple[int, np.ndarray, np.ndarray, np.ndarray] | None = None

    # -- the global batches of an epoch ------------------------------------------------

    def _epoch_order(self, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(ordered indices [N] int32, batch starts [B + 1], sequence [B])`` of ``epoch``:
        batch ``b`` is ``ordered[starts[b]:starts[b + 1]]`` (a range of the length-sorted
        order), and the ``k``-th batch yielded is batch ``sequence[k]``."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1:]
        n = len(self.src_lengths)
        ordered = np.arange(n, dtype=np.int32)  # 4 bytes a pair, shuffled in place
        if self.shuffle:
            rng = np.random.default_rng([self.seed, epoch])
            rng.shuffle(ordered)
        # two stable passes (radix sorts for lengths below 2**16): by target, then source
        for key in (self.src_lengths, self.tgt_lengths):
            ordered = ordered[np.argsort(key[ordered], kind="stable")]
        starts = self._cut(ordered)
        batches = len(starts) - 1
        sequence = rng.permutation(batches) if self.shuffle else np.arange(batches)
        self._cache = (epoch, ordered, starts, sequence)
        return ordered, starts, sequence

    def _cut(self, ordered: np.ndarray) -> np.ndarray:
        """Batch boundaries over length-sorted ``ordered``, under the size and token limits
        (the greedy cut, pair by pair, done run by run of equal lengths)."""
        run_starts, widths = self._runs(ordered)
        run_counts = np.diff(np.concatenate([run_starts, [len(ordered)]]))
        bounds = [0]
        size, longest, position = 0, 0, 0
        for width, count in zip(widths.tolist(), run_counts.tolist(), strict=True):
            while count:
                widest = max(longest, width)
                fits = self._fits(widest)
                if size and size >= fits:  # this batch is full: the next one starts here
                    bounds.append(position)
                    size, longest = 0, 0
                    continue
                take = min(count, max(1, fits) - size)
                size, longest = size + take, widest
                position += take
                count -= take
        bounds.append(position)
        return self._merge_small(np.asarray(bounds, dtype=np.int64))

    def _runs(self, ordered: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(starts, widths)`` of the runs of equal lengths along length-sorted ``ordered``:
        where each run starts, and its padded width (``max(source, target + 1)``). Found
        block by block: ``[N]``-sized temporaries (lengths in order, their comparisons: 60 MB
        at 10M pairs) would stay in the allocator's heap of every training process."""
        starts, widths = [], []
        for at in range(0, len(ordered), RUN_BLOCK):
            first = max(at - 1, 0)  # one pair of overlap: a run may start at the block's edge
            block = ordered[first : at + RUN_BLOCK]
            src, tgt = self.src_lengths[block], self.tgt_lengths[block]
            change = np.flatnonzero((src[1:] != src[:-1]) | (tgt[1:] != tgt[:-1])) + 1
            if at == 0:
                change = np.concatenate([[0], change])
            starts.append(change + first)
            widths.append(np.maximum(src[change].astype(np.int64),
                                     tgt[change].astype(np.int64) + 1))
        return np.concatenate(starts), np.concatenate(widths)

    def _fits(self, widest: int) -> int:
        """The most pairs of padded width ``widest`` one batch holds."""
        limit = self.batch_size if self.batch_size is not None else 1 << 62
        if self.max_tokens is not None:
            limit = min(limit, self.max_tokens // widest)
        return limit

    def _merge_small(self, bounds: np.ndarray) -> np.ndarray:
        """Merge batches too small to give every shard a pair into their sorted neighbour."""
        if self.min_global_batch <= 1:
            return bounds
        kept = [0]
        for end, size in zip(bounds[1:].tolist(), np.diff(bounds).tolist(), strict=True):
            previous = kept[-1] - (kept[-2] if len(kept) > 1 else 0)
            if len(kept) > 1 and (size < self.min_global_batch
                                  or previous < self.min_global_batch):
                kept[-1] = end
            else:
                kept.append(end)
        return np.asarray(kept, dtype=np.int64)

    def global_batches(self, epoch: int | None = None) -> list[list[int]]:
        """All global batches of ``epoch`` (default: the current one), in yield order, as
        lists (for inspection and tests: iterating does not build them all)."""
        ordered, starts, sequence = self._epoch_order(self.epoch if epoch is None else epoch)
        return [ordered[starts[b] : starts[b + 1]].tolist() for b in sequence.tolist()]

    # -- the sampler protocol ----------------------------------------------------------

    def __iter__(self) -> Iterator[list[int]]:
        ordered, starts, sequence = self._epoch_order(self.epoch)
        while self._position < len(sequence):
            b = int(sequence[self._position])
            # Counted before the yield: a checkpoint taken after training on this batch
            # must resume at the next one.
            self._position += 1
            yield ordered[starts[b] + self.shard_index : starts[b + 1] : self.num_shards].tolist()
        self._position = 0
        self.epoch += 1

    def __len__(self) -> int:
        """Batches in the current epoch (the same for every shard)."""
        return len(self._epoch_order(self.epoch)[2])

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its first batch."""
        self.epoch = int(epoch)
        self._position = 0

    def state_dict(self) -> dict:
        """Plain ints: where to resume (epoch and batch) plus what to check it against."""
        return {
            "epoch": self.epoch,
            "position": self._position,
            "seed": self.seed,
            "num_samples": len(self.src_lengths),
            "batch_size": self.batch_size,
            "max_tokens": self.max_tokens,
            "order": ORDER_VERSION,
        }

    def load_state_dict(self, state: dict) -> str | None:
        """Resume where :meth:`state_dict` was taken; returns a notice when it cannot be to
        the batch (a state of the list-based sampler: its epoch starts again).

        Raises:
            ValueError: if the state belongs to a split of another size, another seed or
                other batch limits, where resuming would silently repeat or skip pairs.
        """
        if int(state["num_samples"]) != len(self.src_lengths):
            raise ValueError(
                f"BucketBatchSampler: the state is for {state['num_samples']} pairs, "
                f"this split has {len(self.src_lengths)}"
            )
        if int(state["seed"]) != self.seed:
            raise ValueError(
                f"BucketBatchSampler: the state has seed {state['seed']}, this sampler {self.seed}"
            )
        for name in ("batch_size", "max_tokens"):  # they cut the epoch into its batches
            if name in state and state[name] != getattr(self, name):
                raise ValueError(f"BucketBatchSampler: the state has {name} {state[name]}, "
                                 f"this sampler {getattr(self, name)}")
        self.epoch = int(state["epoch"])
        if state.get("order") == ORDER_VERSION:
            self._position = int(state["position"])
            return None
        self._position = 0
        return (f"the run was saved by an older padless, whose batch order this one does not "
                f"know: epoch {self.epoch} starts again from its first batch (its "
                f"{int(state['position'])} batches already trained are seen twice)")

    def padding_fraction(self, side: str = "target", epoch: int | None = None) -> float:
        """Padding fraction of ``side`` ("source" or "target") over an epoch's global batches.

        Targets count the EOS (or BOS) a ``Batch`` adds, as the decoder sees them.
        """
        if side not in ("source", "target"):
            raise ValueError(f"padding_fraction: side must be 'source' or 'target', not {side!r}")
        lengths = self.tgt_lengths if side == "target" else self.src_lengths
        extra = 1 if side == "target" else 0
        return padding_fraction(self.global_batches(epoch), lengths, extra=extra)
