"""Decoding many sentences: batched equals one at a time, replies, default restrictions."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from padless.data.vocabulary import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from padless.decoding.batched import (
    InputsTruncated,
    cap_sources,
    decode_ids,
    decode_texts,
    reply,
)
from padless.decoding.options import SearchOptions
from padless.models.config import ModelConfig
from padless.models.seq2seq import Seq2Seq
from padless.runs.loading import load_model
from tests.helpers import QUESTIONS


def test_decode_ids_batches_equal_one_at_a_time(qa_run_dir: Path) -> None:
    model, text, _ = load_model(qa_run_dir, device="cpu")
    sources = [text.encode(q) for q in QUESTIONS]
    batched = decode_ids(model, sources, SearchOptions(), batch_size=5)
    for source, nbest in zip(sources, batched, strict=True):
        ((single,),) = decode_ids(model, [source], SearchOptions())
        assert nbest[0].tokens == single.tokens
        assert nbest[0].score == pytest.approx(single.score, abs=1e-5)


def test_reply_truncates_long_input_with_a_notice(qa_run_dir: Path) -> None:
    model, text, _ = load_model(qa_run_dir, device="cpu")
    answer = reply(model, text, "hello " * 80, SearchOptions(), max_input_length=10)
    assert answer.text is not None and len(answer.source_ids) == 10
    assert "truncated to its first 10 of 80 tokens" in answer.notice
    empty = reply(model, text, "", SearchOptions())
    assert empty.text is None and "nothing to answer" in empty.notice


def test_commands_never_answer_empty_or_with_unk_unless_asked() -> None:
    torch.manual_seed(0)
    model = Seq2Seq(ModelConfig(embedding_size=8, hidden_size=8, dropout=0.0), 10).eval()
    with torch.no_grad():  # a model that would rather say <unk>, or nothing at all
        model.decoder.out.bias[UNK_ID] += 20.0
        model.decoder.out.bias[EOS_ID] += 10.0
    sources = [[4, 5, 6], [7, 8]]
    for method in ("greedy", "beam"):
        default = decode_ids(model, sources, SearchOptions(method=method, max_length=5))
        assert all(nbest[0].tokens and UNK_ID not in nbest[0].tokens for nbest in default)
        free = decode_ids(model, sources, SearchOptions(
            method=method, max_length=5, min_length=0, allow_unk=True, no_repeat_ngram=0,
            repetition_penalty=1.0))
        assert all(nbest[0].tokens == [UNK_ID] * 5 for nbest in free)


@pytest.mark.parametrize("method", ["greedy", "beam", "sample"])
def test_answers_never_hold_pad_or_bos(method: str) -> None:
    """PAD and BOS are not outputs, even for a model that prefers them (untrained ones do)."""
    torch.manual_seed(0)
    model = Seq2Seq(ModelConfig(embedding_size=8, hidden_size=8, dropout=0.0), 10).eval()
    with torch.no_grad():
        model.decoder.out.bias[PAD_ID] += 20.0
        model.decoder.out.bias[BOS_ID] += 19.0
    options = SearchOptions(method=method, max_length=5, allow_unk=True, no_repeat_ngram=0,
                            repetition_penalty=1.0)
    generator = torch.Generator().manual_seed(0)
    for (hyp,) in decode_ids(model, [[4, 5, 6], [7, 8]], options, generator=generator):
        assert hyp.tokens and not {PAD_ID, BOS_ID} & set(hyp.tokens), hyp.tokens


def test_cap_sources_cuts_and_counts() -> None:
    sources = [[1, 2, 3, 4], [5], [], [6, 7, 8]]
    assert cap_sources(sources, 3) == ([[1, 2, 3], [5], [], [6, 7, 8]], 1)
    assert cap_sources(sources, None) == (sources, 0)
    with pytest.raises(ValueError, match="max_input_length"):
        cap_sources(sources, 0)


def test_decode_texts_cuts_long_lines_with_a_warning(qa_run_dir: Path) -> None:
    model, text, _ = load_model(qa_run_dir, device="cpu")
    lines = ["hello there " * 100, "good morning"]
    with pytest.warns(InputsTruncated, match="1 of 2 inputs were longer than 4 tokens"):
        capped = decode_texts(model, text, lines, SearchOptions(), max_input_length=4)
    assert capped == decode_texts(model, text, ["hello there hello there", "good morning"],
                                  SearchOptions())
