"""Evaluation: BLEU/chrF as sacrebleu computes them, the loss as a true per-token mean."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import sacrebleu
import torch

from padless.data.batch import Batch
from padless.data.dataset import PreparedData
from padless.decoding.batched import decode_ids
from padless.decoding.evaluation import corpus_scores, evaluate
from padless.decoding.search import SearchOptions
from padless.training.checkpoint import load_model


def test_evaluate_bleu_matches_sacrebleu_and_loss_is_per_token(qa_data_dir: Path,
                                                               qa_run_dir: Path) -> None:
    model, text, _ = load_model(qa_run_dir, device="cpu")
    pairs = PreparedData.load(qa_data_dir).splits["test"]
    result = evaluate(model, text, pairs, SearchOptions(), batch_size=4, n_samples=3)

    outputs = [text.decode(nb[0].tokens) for nb in decode_ids(model, [s for s, _ in pairs],
                                                               SearchOptions())]
    references = [text.decode(t) for _, t in pairs]
    assert result.bleu == pytest.approx(sacrebleu.corpus_bleu(outputs, [references]).score)
    assert result.chrf == pytest.approx(sacrebleu.corpus_chrf(outputs, [references]).score)
    assert [s[1] for s in result.samples] == outputs[:3]
    assert [s[2] for s in result.samples] == references[:3]

    # the loss is the per-token mean over all pairs, whatever the batching
    total, n_tokens = 0.0, 0
    for pair in pairs:
        batch = Batch.from_pairs([pair])
        with torch.no_grad():
            out = model.loss(batch, reduction="sum")
        total, n_tokens = total + float(out.loss), n_tokens + out.n_tokens
    assert result.n_tokens == n_tokens
    assert result.loss == pytest.approx(total / n_tokens, rel=1e-5)
    assert result.perplexity == pytest.approx(math.exp(result.loss))
    assert corpus_scores(model, pairs, batch_size=1).loss == pytest.approx(result.loss, rel=1e-5)
