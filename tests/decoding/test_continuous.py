"""Continuous batching: sentences that join a running greedy batch get their answer alone."""

from __future__ import annotations

import pytest
import torch

from padless.data.vocabulary import EOS_ID
from padless.decoding.batched import decode_ids
from padless.decoding.continuous import ContinuousGreedy, can_concat
from padless.decoding.search import SearchOptions
from padless.models.config import ModelConfig
from padless.models.seq2seq import Seq2Seq
from tests.helpers import tiny_model


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


def sources(n: int, seed: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 8, (n,), generator=generator)
    return [torch.randint(4, 16, (int(k),), generator=generator).tolist() for k in lengths]


@pytest.mark.parametrize("options", [
    SearchOptions(max_length=7),
    SearchOptions(max_length=7, min_length=3),
    SearchOptions(max_length=6, min_length=0, allow_unk=True, no_repeat_ngram=0,
                  repetition_penalty=1.0),
    SearchOptions(max_length=7, no_repeat_ngram=2, repetition_penalty=2.0),
    SearchOptions(max_length=7, no_repeat_ngram=1, repetition_penalty=1.0),
], ids=["default", "min-length-3", "unrestricted", "no-repeat-2-penalty-2", "no-repeat-1"])
def test_sentences_joining_at_any_step_get_the_answer_greedy_gives_alone(options) -> None:
    model = model_with_short_answers()
    engine = ContinuousGreedy(model, options)
    arrivals = [sources(5, 0), [], sources(3, 1), sources(1, 2), [], [], sources(6, 3)]
    answers, tag, running = {}, 0, []
    for wave in arrivals + [[]] * 20:
        if wave:
            engine.add(wave, list(range(tag, tag + len(wave))))
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


def test_only_plain_greedy_search_is_supported() -> None:
    assert ContinuousGreedy.supports(SearchOptions(max_length=5, min_length=2, allow_unk=True))
    assert ContinuousGreedy.supports(SearchOptions(beam_size=3, temperature=2.0))  # unused
    assert not ContinuousGreedy.supports(SearchOptions(method="beam"))
    assert not ContinuousGreedy.supports(SearchOptions(method="sample"))
    with pytest.raises(ValueError, match="plain greedy"):
        ContinuousGreedy(tiny_model(), SearchOptions(method="beam"))


def test_the_gru_state_can_concat_and_empty_sources_are_refused() -> None:
    model = tiny_model()
    assert can_concat(model)
    with pytest.raises(ValueError, match="empty source"):
        ContinuousGreedy(model, SearchOptions()).add([[4], []], ["a", "b"])
    assert ContinuousGreedy(model, SearchOptions()).step() == []
