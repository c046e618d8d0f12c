"""Teacher-forced scoring, the path behind validation, evaluation and the benchmarks."""

from __future__ import annotations

import math

import pytest
import torch

from padless.models.scoring import Scores, teacher_forced_scores
from tests.helpers import make_batch, reversal_gru, reversal_id_pairs


def test_scores_match_the_model_loss_and_a_full_projection() -> None:
    model = reversal_gru().float().eval()
    pairs = {s: reversal_id_pairs(5, seed=s) for s in (1, 2)}
    batches = [make_batch(pairs[s]) for s in (1, 2)]
    scores = teacher_forced_scores(model, batches)
    tokens = sum(len(target) + 1 for p in pairs.values() for _, target in p)  # EOS included
    with torch.no_grad():
        loss_sum = sum(model.loss(b, reduction="sum").loss.item() for b in batches)
        correct = 0
        for b in batches:  # brute force: project every position, count the real ones
            enc = model.encode(b.src, b.src_lengths)
            states, _, _ = model.decoder(b.tgt_in, enc.hidden, enc.memory, enc.src_mask)
            hits = model.decoder.out(states).argmax(-1) == b.tgt_out
            correct += (hits & b.tgt_mask).sum().item()
    assert scores.n_tokens == tokens
    assert scores.loss == pytest.approx(loss_sum / tokens, rel=1e-5)
    assert scores.accuracy == correct / tokens
    assert scores.perplexity == pytest.approx(math.exp(scores.loss))


def test_scores_add_up_and_restore_the_training_mode() -> None:
    model = reversal_gru().float()  # in training mode
    batches = [make_batch(reversal_id_pairs(4, seed=s)) for s in (3, 4)]
    parts = [teacher_forced_scores(model, [b]) for b in batches]
    whole = teacher_forced_scores(model, batches)
    assert model.training
    assert whole.n_tokens == parts[0].n_tokens + parts[1].n_tokens
    assert (parts[0] + parts[1]).loss == pytest.approx(whole.loss, rel=1e-6)
    assert math.isnan(Scores().loss)  # no tokens: no mean
