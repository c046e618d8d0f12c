"""The batches a run reads: the length cap, training and validation batches."""

from __future__ import annotations

import pytest
import torch

from padless.data.batch import Batch
from padless.data.loader import ValidationBatches, run_batches
from tests.helpers import random_pairs


def test_pairs_over_the_length_cap_are_left_out_with_a_notice() -> None:
    notices: list[str] = []
    runaway = ([5] * 3000, [6] * 5)  # what one line without line ends becomes
    splits = {"train": [runaway, ([7], [7]), ([8], [8])], "valid": [([5] * 30, [5])]}
    train, valid = run_batches(splits, max_length=20, batch_size=2, max_tokens=None, seed=0,
                               say=notices.append)
    assert list(train.pairs) == [([7], [7]), ([8], [8])] and len(valid) == 0 and not list(valid)
    assert notices == ["left out 1 train pairs longer than 20 tokens (train.max_length)",
                       "left out 1 valid pairs longer than 20 tokens (train.max_length)"]
    every = run_batches(splits, max_length=None, batch_size=2, max_tokens=None, seed=0,
                        say=notices.append)[0]
    assert list(every.pairs) == splits["train"]
    with pytest.raises(ValueError, match="2 usable pairs .* for 3 process"):
        run_batches(splits, max_length=20, batch_size=2, max_tokens=None, seed=0,
                    num_shards=3, say=notices.append)


def same_batches(a: list[Batch], b: list[Batch]) -> bool:
    return len(a) == len(b) and all(
        torch.equal(getattr(x, f), getattr(y, f)) for x, y in zip(a, b, strict=True)
        for f in ("src", "src_lengths", "tgt_in", "tgt_out", "tgt_mask"))


def batch_pairs(batch: Batch) -> list[tuple[list[int], list[int]]]:
    """The (source, target) ids of a time-major batch's rows."""
    lengths = batch.tgt_lengths.tolist()
    return [(batch.src[: batch.src_lengths[b], b].tolist(),
             batch.tgt_out[: lengths[b] - 1, b].tolist()) for b in range(len(batch))]


def test_validation_batches_are_the_same_at_every_pass_and_shared_out() -> None:
    pairs = random_pairs(300, 40)
    valid = ValidationBatches(pairs, batch_size=None, max_tokens=64)
    first = list(valid)
    assert len(first) == len(valid) > 1 and same_batches(first, list(valid))
    assert sorted(p for b in first for p in batch_pairs(b)) == sorted(pairs)
    shards = [list(ValidationBatches(pairs, batch_size=None, max_tokens=64, num_shards=2,
                                     shard_index=k)) for k in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == len(first)
    assert sorted(p for shard in shards for b in shard for p in batch_pairs(b)) == sorted(pairs)
    assert len(ValidationBatches(pairs[:1], batch_size=2, max_tokens=None, num_shards=2)) == 0
