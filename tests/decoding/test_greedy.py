"""The row decoder behind greedy search, sampling and continuous batching: rows that join a
running batch at any step, or leave it, do not change the answers of the others."""

from __future__ import annotations

import math

import pytest
import torch

from padless.data.vocabulary import EOS_ID, PAD_ID
from padless.decoding.batched import decode_ids, make_generator
from padless.decoding.greedy import RowDecoder, _greedy
from padless.decoding.options import SearchOptions
from padless.masking import pad_batch
from padless.models import build_model
from padless.models.config import ModelConfig
from padless.models.seq2seq import Seq2Seq
from padless.models.transformer import Transformer
from tests.helpers import reversal_gru


def model_with_short_answers() -> Seq2Seq:
    """A seeded float64 model whose greedy answers have many lengths, some cut at max_length
    (sharp, input-dependent output logits and a likelier EOS)."""
    torch.manual_seed(4)  # a seed whose answers have 3+ lengths under every option below
    config = ModelConfig(embedding_size=16, hidden_size=16, num_layers=1, attention="general",
                         dropout=0.0)
    model = Seq2Seq(config, 20).double().eval()
    with torch.no_grad():
        model.decoder.out.weight.mul_(4.0)
        model.decoder.out.bias[EOS_ID] += 0.5
    return model


def transformer_with_short_answers() -> Transformer:
    """The same for the Transformer, whose rows then sit at different positions of its cache."""
    torch.manual_seed(0)
    config = ModelConfig(
        arch="transformer",
        embedding_size=16,
        hidden_size=16,
        num_heads=2,
        ffn_size=32,
        num_layers=2,
        dropout=0.0,
        tie_output=False,
    )
    model = Transformer(config, 20).double().eval()
    with torch.no_grad():
        model.output.weight.mul_(2.0)
        model.output.bias[EOS_ID] += 1.0
    return model


MODELS = {"gru": model_with_short_answers, "transformer": transformer_with_short_answers}


def add(decoder: RowDecoder, sources: list[list[int]], tags: list) -> None:
    src, lengths = pad_batch(sources, PAD_ID)
    decoder.add(src, lengths, tags)


def sources(n: int, seed: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 8, (n,), generator=generator)
    return [torch.randint(4, 16, (int(k),), generator=generator).tolist() for k in lengths]


@pytest.mark.parametrize(
    "options",
    [
        SearchOptions(max_length=7),
        SearchOptions(max_length=7, min_length=3),
        SearchOptions(
            max_length=6, min_length=0, allow_unk=True, no_repeat_ngram=0, repetition_penalty=1.0
        ),
        SearchOptions(max_length=7, no_repeat_ngram=2, repetition_penalty=2.0),
        SearchOptions(max_length=7, no_repeat_ngram=1, repetition_penalty=1.0),
    ],
    ids=["default", "min-length-3", "unrestricted", "no-repeat-2-penalty-2", "no-repeat-1"],
)
@pytest.mark.parametrize("arch", MODELS)
def test_sentences_joining_at_any_step_get_the_answer_greedy_gives_alone(options, arch) -> None:
    model = MODELS[arch]()
    engine = RowDecoder(model, options, return_attention=True)
    arrivals = [sources(5, 0), [], sources(3, 1), sources(1, 2), [], [], sources(6, 3)]
    answers, tag, running = {}, 0, []
    for wave in arrivals + [[]] * 20:
        if wave:
            add(engine, wave, list(range(tag, tag + len(wave))))
            running += wave
            tag += len(wave)
        answers.update(engine.step())
    assert len(engine) == 0 and sorted(answers) == list(range(tag))
    alone = decode_ids(model, running, options, batch_size=1, return_attention=True)
    lengths = {len(answers[i].tokens) for i in answers}
    assert len(lengths) > 2 and options.max_length in lengths  # the test covers both ends
    for i, (expected,) in enumerate(alone):
        got = answers[i]
        assert got.tokens == expected.tokens and got.finished == expected.finished
        assert got.score == pytest.approx(expected.score, abs=1e-9)
        assert got.log_prob == pytest.approx(expected.log_prob, abs=1e-9)
        torch.testing.assert_close(got.attention, expected.attention)


@pytest.mark.parametrize("arch", MODELS)
def test_rows_that_leave_do_not_change_the_others(arch: str) -> None:
    """A request given up in the middle: its rows leave at once, the others go on as alone."""
    model, options = MODELS[arch](), SearchOptions(max_length=7, min_length=5)
    engine = RowDecoder(model, options)
    wave = sources(6, 4)
    add(engine, wave, list(range(6)))
    answers = dict(engine.step())
    engine.drop([1, 4, 99])  # 99: not running, nothing happens
    assert engine.tags == [0, 2, 3, 5] and len(engine) == 4
    while len(engine):
        answers.update(engine.step())
    assert sorted(answers) == [0, 2, 3, 5]
    alone = decode_ids(model, wave, options, batch_size=1)
    assert all(answers[i].tokens == alone[i][0].tokens for i in answers)


def test_seeded_sampling_of_a_batch_is_reproducible() -> None:
    model, options = model_with_short_answers(), SearchOptions("sample", 7, temperature=1.5)
    wave = sources(5, 5)
    runs = []
    for _ in range(2):
        engine = RowDecoder(model, options, generator=make_generator(3, model.device))
        add(engine, wave, list(range(5)))
        answers = {}
        while len(engine):
            answers.update(engine.step())
        runs.append([answers[i].tokens for i in range(5)])
    assert runs[0] == runs[1]


def test_beam_search_is_not_a_row_decoder_and_an_empty_decoder_steps_to_nothing() -> None:
    with pytest.raises(ValueError, match="greedy search or sampling"):
        RowDecoder(reversal_gru(), SearchOptions(method="beam"))
    assert RowDecoder(reversal_gru(), SearchOptions()).step() == []


@pytest.mark.parametrize("arch", ["gru", "transformer"])
def test_a_model_that_says_its_rows_can_join_has_a_state_that_joins(arch: str) -> None:
    config = ModelConfig(arch=arch, embedding_size=8, hidden_size=8, num_layers=1,
                         num_heads=2)
    model = build_model(config, 20).eval()
    state = model.start_decoding(torch.tensor([[4], [5]]), torch.tensor([2]))
    assert model.rows_can_join and callable(state.concat)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_the_greedy_pick_is_torch_argmax_with_ties_nan_and_nothing_allowed(dtype) -> None:
    scores = torch.randn(6, 1000, generator=torch.Generator().manual_seed(0)).to(dtype)
    scores[0, [7, 3, 900]] = 50.0  # equal best: the first
    scores[1, 5] = float("nan")  # NaN wins, as in torch.argmax
    scores[2] = -math.inf  # nothing allowed: id 0
    scores[3, -1] = math.inf
    picked = _greedy(scores)
    assert picked.dtype == torch.long and picked.tolist()[:4] == [3, 5, 0, 999]
    assert torch.equal(picked, scores.argmax(dim=1))
    assert torch.equal(_greedy(scores[:, ::2]), scores[:, ::2].argmax(dim=1))  # strided rows
