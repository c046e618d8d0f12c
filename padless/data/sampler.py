"""A length-bucketed, seeded, resumable and shardable batch sampler.

Random batching pads every sequence to the longest one drawn next to it, so most of a
chat batch is padding. Here each epoch:

1. shuffles all indices (seeded by ``seed`` and the epoch);
2. sorts them by (target, source) length -- a stable sort, so pairs of equal length stay
   in random order (with ``pool_size``, each pool of that many pairs is sorted on its own);
3. cuts the sorted pools into *global* batches of ``batch_size`` pairs and/or at most
   ``max_tokens`` padded cells;
4. shuffles the batches.

Equal lengths are common in chat (thousands of pairs share each short length), so batches
differ from epoch to epoch even with one global sort. Smaller pools mix more but pad more:
chat lengths are heavy-tailed, and the sparse tail of each pool pads a lot.

Sharding: every shard computes the same global batches and shard ``k`` of ``N`` takes
``global_batch[k::N]``; ``batch_size`` and ``max_tokens`` are therefore global (per
optimiser step). A global batch smaller than ``min_global_batch`` (default ``num_shards``)
is merged into its neighbour so that no shard ever gets an empty batch; a single process
that must see exactly the union of ``N`` shards passes ``min_global_batch=N``.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sequence

__all__ = ["BucketBatchSampler", "padding_fraction", "random_batches"]


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
        lens = [lengths[i] + extra for i in batch]
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
        src_lengths: Sequence[int],
        tgt_lengths: Sequence[int],
        *,
        batch_size: int | None = None,
        max_tokens: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        num_shards: int = 1,
        shard_index: int = 0,
        pool_size: int | None = None,
        min_global_batch: int | None = None,
    ) -> None:
        """
        Args:
            src_lengths, tgt_lengths: per-pair lengths (without BOS/EOS).
            batch_size: at most this many pairs per global batch.
            max_tokens: at most this many padded cells per global batch, counted as
                ``pairs * max(longest source, longest target + 1)``; a pair above the budget
                alone still forms a batch (nothing is dropped). At least one of the two
                limits is required; with both, both hold.
            shuffle: False gives one fixed, fully sorted order (for evaluation).
            seed: the order depends only on ``seed`` and the epoch.
            num_shards, shard_index: this process's share (see the module docstring).
            pool_size: pairs sorted together (default: the whole split).
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
        self.src_lengths = [int(n) for n in src_lengths]
        self.tgt_lengths = [int(n) for n in tgt_lengths]
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.shuffle = shuffle
        self.seed = seed
        self.num_shards = num_shards
        self.shard_index = shard_index
        self.pool_size = None if pool_size is None else max(1, pool_size)
        self.epoch = 0
        self._position = 0  # global batches already handed out in this epoch
        self._cache: tuple[int, list[list[int]]] | None = None

    # -- the global batches of an epoch ------------------------------------------------

    def _key(self, i: int) -> tuple[int, int]:
        return self.tgt_lengths[i], self.src_lengths[i]

    def global_batches(self, epoch: int | None = None) -> list[list[int]]:
        """All global batches of ``epoch`` (default: the current one), in yield order."""
        epoch = self.epoch if epoch is None else epoch
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        n = len(self.src_lengths)
        if self.shuffle:
            # A string seed is hashed with SHA-512: stable across runs and platforms.
            rng = random.Random(f"padless-sampler:{self.seed}:{epoch}")
            order = list(range(n))
            rng.shuffle(order)
            size = self.pool_size or max(n, 1)
            pools = [order[i : i + size] for i in range(0, n, size)]
            ordered = [i for pool in pools for i in sorted(pool, key=self._key)]
        else:
            ordered = sorted(range(n), key=self._key)
        batches = self._cut(ordered)
        if self.shuffle:
            rng.shuffle(batches)
        self._cache = (epoch, batches)
        return batches

    def _cut(self, ordered: list[int]) -> list[list[int]]:
        """Cut length-sorted indices into batches under the size and token limits."""
        batches: list[list[int]] = []
        batch: list[int] = []
        longest = 0
        for i in ordered:
            width = max(self.src_lengths[i], self.tgt_lengths[i] + 1)
            new_longest = max(longest, width)
            full = (self.batch_size is not None and len(batch) >= self.batch_size) or (
                self.max_tokens is not None and new_longest * (len(batch) + 1) > self.max_tokens
            )
            if batch and full:
                batches.append(batch)
                batch, new_longest = [], width
            batch.append(i)
            longest = new_longest
        if batch:
            batches.append(batch)
        # Merge batches too small to give every shard a pair into their sorted neighbour.
        merged: list[list[int]] = []
        for batch in batches:
            if merged and (len(batch) < self.min_global_batch
                           or len(merged[-1]) < self.min_global_batch):
                merged[-1].extend(batch)
            else:
                merged.append(batch)
        return merged

    # -- the sampler protocol ----------------------------------------------------------

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.global_batches()
        while self._position < len(batches):
            batch = batches[self._position]
            # Counted before the yield: a checkpoint taken after training on this batch
            # must resume at the next one.
            self._position += 1
            yield batch[self.shard_index :: self.num_shards]
        self._position = 0
        self.epoch += 1

    def __len__(self) -> int:
        """Batches in the current epoch (the same for every shard)."""
        return len(self.global_batches())

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
        }

    def load_state_dict(self, state: dict) -> None:
        """Resume where :meth:`state_dict` was taken.

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
        self._position = int(state["position"])

    def padding_fraction(self, side: str = "target", epoch: int | None = None) -> float:
        """Padding fraction of ``side`` ("source" or "target") over an epoch's global batches.

        Targets count the EOS (or BOS) a ``Batch`` adds, as the decoder sees them.
        """
        if side not in ("source", "target"):
            raise ValueError(f"padding_fraction: side must be 'source' or 'target', not {side!r}")
        lengths = self.tgt_lengths if side == "target" else self.src_lengths
        extra = 1 if side == "target" else 0
        return padding_fraction(self.global_batches(epoch), lengths, extra=extra)
