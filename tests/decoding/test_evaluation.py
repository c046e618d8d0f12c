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
from padless.decoding.evaluation import evaluate
from padless.decoding.search import SearchOptions
from padless.models.scoring import corpus_scores
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


def test_evaluate_reports_dialogue_metrics_of_the_answers_within_its_time(
    qa_data_dir: Path, qa_run_dir: Path
) -> None:
    from padless.decoding.metrics import dialogue_scores

    model, text, _ = load_model(qa_run_dir, device="cpu")
    pairs = PreparedData.load(qa_data_dir).splits["test"]
    options = SearchOptions(no_repeat_ngram=0, repetition_penalty=1.0)
    result = evaluate(model, text, pairs, options, batch_size=2)
    answers = [nb[0].tokens for nb in decode_ids(model, [s for s, _ in pairs], options)]
    assert result.dialogue == dialogue_scores(answers, [t for _, t in pairs])
    assert "distinct-2" in result.report() and "repeated 3-gram" in result.report()

    # out of time at once: one batch (2 pairs) is decoded, and said so
    hurried = evaluate(model, text, pairs, options, batch_size=2, max_seconds=0.0)
    assert len(pairs) > 2 and hurried.n_decoded == 2 and hurried.n_pairs == len(pairs)
    assert hurried.dialogue == dialogue_scores(answers[:2], [t for _, t in pairs[:2]])
    assert "2 decoded answers" in hurried.report()
