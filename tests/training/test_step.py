"""One optimiser step: exact per-token normalisation over micro-batches; the lr schedule."""

from __future__ import annotations

import pytest
import torch

from padless.data.vocabulary import UNK_ID
from padless.training.config import load_config
from padless.training.step import StepLoss, accumulate_gradients, lr_factor
from tests.helpers import CPU, FP32, TINY_TRAIN, grads, make_batch, reversal_gru, reversal_id_pairs


def test_accumulated_micro_batches_give_the_gradient_of_one_big_batch() -> None:
    tc = load_config(None, TINY_TRAIN).train
    pairs = reversal_id_pairs(12, seed=3)
    # Very different token counts per micro-batch: a mean of per-batch means would be off.
    pairs.sort(key=lambda p: len(p[1]))
    micro = [make_batch(pairs[:2]), make_batch(pairs[2:9]), make_batch(pairs[9:])]
    big = make_batch(pairs)
    assert len({b.n_tokens for b in micro}) == 3

    model = reversal_gru()
    loss_sum, tokens = accumulate_gradients(StepLoss(model, tc), micro, CPU, FP32)
    accumulated = grads(model)
    assert tokens == big.n_tokens

    reference_model = reversal_gru()
    loss = reference_model.loss(big, reduction="mean").loss  # per-token mean, one batch
    loss.backward()
    reference = grads(reference_model)
    assert loss_sum.item() / tokens == pytest.approx(loss.item(), rel=1e-6)
    for got, want in zip(accumulated, reference, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)

    # The test can tell: the tutorial-style average of micro-batch means differs.
    naive_model = reversal_gru()
    for b in micro:
        (naive_model.loss(b, reduction="mean").loss / len(micro)).backward()
    differences = [(a - b).abs().max().item()
                   for a, b in zip(grads(naive_model), reference, strict=True)]
    assert max(differences) > 1e-3


def test_lr_schedule_warms_up_then_decays() -> None:
    tc = load_config(None, ["train.warmup_steps=4", "train.decay=linear", "train.max_steps=12",
                            "train.min_lr_ratio=0.5"]).train
    factors = [lr_factor(s, tc) for s in range(13)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[12] == pytest.approx(0.5)
    assert all(a >= b for a, b in zip(factors[3:], factors[4:], strict=False))
    tc.decay = "cosine"
    assert lr_factor(8, tc) == pytest.approx(0.75)  # half-way: half of the way down
    tc.decay = "inverse_sqrt"
    assert lr_factor(15, tc) == pytest.approx(0.5)  # sqrt(4 / 16)
    tc.decay = "constant"
    assert lr_factor(100, tc) == 1.0


def test_word_dropout_feeds_unk_in_training_only() -> None:
    """``train.word_dropout`` 1.0: the training loss is that of all-UNK inputs; validation
    (``model.loss`` outside StepLoss) still reads the real inputs."""
    tc = load_config(None, [*TINY_TRAIN, "train.word_dropout=1.0"]).train
    batch = make_batch(reversal_id_pairs(6, seed=4))
    model = reversal_gru().eval()  # no activation dropout: only word dropout can differ
    unk = batch.with_word_dropout(1.0, UNK_ID)
    assert (unk.src[batch.src_mask] == UNK_ID).all()
    with torch.no_grad():
        trained_on = StepLoss(model, tc)(batch)
        want = model.loss(unk, reduction="sum").loss
        real = model.loss(batch, reduction="sum").loss
    assert trained_on.item() == pytest.approx(want.item(), rel=1e-9)
    assert abs(trained_on.item() - real.item()) > 1e-3
