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
from padless.decoding.evaluation import evaluate, image_format_of
from padless.decoding.options import SearchOptions
from padless.models.scoring import corpus_scores
from padless.runs.loading import load_model


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


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"limit": 0}, "limit"), ({"limit": -5}, "limit"), ({"n_samples": -2}, "n_samples"),
    ({"batch_size": 0}, "batch_size"), ({"max_input_length": 0}, "max_input_length"),
])
def test_bad_arguments_are_refused_before_the_loss_pass(qa_data_dir: Path, qa_run_dir: Path,
                                                        monkeypatch, kwargs, name) -> None:
    """--limit 0 used to fail after the whole loss pass; -5 silently dropped the last pairs."""
    model, text, _ = load_model(qa_run_dir, device="cpu")
    pairs = PreparedData.load(qa_data_dir).splits["test"]
    monkeypatch.setattr("padless.decoding.evaluation.corpus_scores", None)  # must not be reached
    with pytest.raises(ValueError, match=f"bad {name}="):
        evaluate(model, text, pairs, SearchOptions(), **kwargs)


def test_plot_paths_are_checked_before_any_work(tmp_path: Path) -> None:
    assert image_format_of(tmp_path / "a.PNG") == "png"
    with pytest.raises(ValueError, match="does not exist"):
        image_format_of(tmp_path / "missing" / "a.png")
    with pytest.raises(ValueError, match="not an image file name"):
        image_format_of(tmp_path / "a.txt")


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
