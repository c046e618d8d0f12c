"""The batches a run reads: the length cap, training and validation batches."""

from __future__ import annotations

import pytest

from padless.data.loader import run_batches


def test_pairs_over_the_length_cap_are_left_out_with_a_notice() -> None:
    notices: list[str] = []
    runaway = ([5] * 3000, [6] * 5)  # what one line without line ends becomes
    splits = {"train": [runaway, ([7], [7]), ([8], [8])], "valid": [([5] * 30, [5])]}
    train, valid = run_batches(splits, max_length=20, batch_size=2, max_tokens=None, seed=0,
                               say=notices.append)
    assert list(train.pairs) == [([7], [7]), ([8], [8])] and valid == []
    assert notices == ["left out 1 train pairs longer than 20 tokens (train.max_length)",
                       "left out 1 valid pairs longer than 20 tokens (train.max_length)"]
    every = run_batches(splits, max_length=None, batch_size=2, max_tokens=None, seed=0,
                        say=notices.append)[0]
    assert list(every.pairs) == splits["train"]
    with pytest.raises(ValueError, match="2 usable pairs .* for 3 process"):
        run_batches(splits, max_length=20, batch_size=2, max_tokens=None, seed=0,
                    num_shards=3, say=notices.append)
