"""Batch: the target shift and masks, and word dropout."""

import pytest
import torch

from padless.data.batch import Batch
from padless.data.vocabulary import BOS_ID, PAD_ID, UNK_ID

PAIRS = [([5, 6, 7], [8, 9]), ([10], [11, 12, 13, 14]), ([15, 16], [17])]


@pytest.mark.parametrize("batch_first", [False, True])
def test_word_dropout_changes_only_real_inputs(batch_first):
    batch = Batch.from_pairs(PAIRS, batch_first=batch_first)
    torch.manual_seed(0)
    dropped = batch.with_word_dropout(0.5, UNK_ID)
    changed_src = dropped.src != batch.src
    changed_in = dropped.tgt_in != batch.tgt_in
    assert changed_src.any() and changed_in.any()  # rate 0.5 on 6 + 7 tokens, seeded
    assert (dropped.src[changed_src] == UNK_ID).all()
    assert (dropped.tgt_in[changed_in] == UNK_ID).all()
    assert not (changed_src & ~batch.src_mask).any()  # pads stay pads
    assert (dropped.src[~batch.src_mask] == PAD_ID).all()
    first = dropped.tgt_in[:, 0] if batch_first else dropped.tgt_in[0]
    assert (first == BOS_ID).all()  # the decoder always starts from BOS
    assert not (changed_in & ~batch.tgt_mask).any()
    for name in ("tgt_out", "tgt_mask", "src_mask", "src_lengths"):
        assert torch.equal(getattr(dropped, name), getattr(batch, name))
    assert dropped.n_tokens == batch.n_tokens


def test_word_dropout_rate_is_the_share_of_dropped_inputs():
    pairs = [(list(range(4, 24)), list(range(30, 49)))] * 500  # 20 sources, 19 inputs after BOS
    batch = Batch.from_pairs(pairs)
    torch.manual_seed(1)
    dropped = batch.with_word_dropout(0.2, UNK_ID)
    share_src = (dropped.src == UNK_ID).float().mean().item()
    share_in = (dropped.tgt_in[1:] == UNK_ID).float().mean().item()
    # 10,000 and 9,500 Bernoulli(0.2) draws: 5 standard deviations is about 0.02
    assert share_src == pytest.approx(0.2, abs=0.02)
    assert share_in == pytest.approx(0.2, abs=0.02)


def test_no_word_dropout_returns_the_batch():
    batch = Batch.from_pairs(PAIRS)
    assert batch.with_word_dropout(0.0, UNK_ID) is batch
