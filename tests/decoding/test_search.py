"""Decoding: greedy, beam search and sampling on a tiny seeded Seq2Seq (random weights),
against one-sentence and brute-force references. PAD and BOS are never outputs: the
references leave them out too."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import pytest
import torch

from padless.data.vocabulary import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from padless.decoding.beam import beam_search
from padless.decoding.greedy import greedy_search, sample_search
from padless.decoding.options import SearchOptions
from padless.decoding.search import filter_logits, length_penalty
from padless.masking import pad_batch
from padless.models.seq2seq import Seq2Seq
from tests.helpers import random_gru

SOURCES = [[4, 5, 6, 7, 4], [7, 4], [5, 5, 6], [7], [6, 5, 4, 7]]
NEVER = (PAD_ID, BOS_ID)  # no search ever chooses them
plain = SearchOptions.plain  # the model's own search: no repetition control, UNK allowed


def batch(sources: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """``src [S, B]``, ``lengths [B]``."""
    return pad_batch(sources)


@torch.no_grad()
def sequence_log_prob(model: Seq2Seq, source: list[int], tokens: list[int], eos: bool) -> float:
    """Teacher-forced ``sum log p(y_t | y_<t, x)`` for one unpadded sentence, in float64."""
    src, lengths = batch([source])
    state, total = model.start_decoding(src, lengths), 0.0
    targets = tokens + ([EOS_ID] if eos else [])
    for prev, target in zip([BOS_ID, *tokens], targets, strict=False):
        log_probs, state, _ = model.decode_step(torch.tensor([prev]), state)
        total += float(log_probs[0, target].double())
    return total


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_size_one_equals_greedy(seed: int) -> None:
    model = random_gru(seed=seed, eos_bias=1.0)
    src, lengths = batch(SOURCES)
    greedy = greedy_search(model, src, lengths, plain(max_length=10))
    beam = beam_search(model, src, lengths, plain("beam", beam_size=1, alpha=0.0, max_length=10))
    assert beam.tokens == greedy.tokens
    assert beam.scores == pytest.approx(greedy.scores, abs=1e-4)


@pytest.mark.parametrize("seed", [0, 1])
def test_greedy_matches_one_sentence_reference_and_nothing_after_eos(seed: int) -> None:
    model = random_gru(seed=seed, eos_bias=1.5)
    src, lengths = batch(SOURCES)
    result = greedy_search(model, src, lengths, plain(max_length=12))
    for source, (hyp,) in zip(SOURCES, result.hypotheses, strict=True):
        # reference: argmax one step at a time, one unpadded sentence, stop at the first EOS
        state, prev, expected = model.start_decoding(*batch([source])), BOS_ID, []
        for _ in range(12):
            log_probs, state, _ = model.decode_step(torch.tensor([prev]), state)
            log_probs[0, list(NEVER)] = -math.inf
            prev = int(log_probs.argmax())
            if prev == EOS_ID:
                break
            expected.append(prev)
        assert hyp.tokens == expected
        assert EOS_ID not in hyp.tokens and BOS_ID not in hyp.tokens
        assert hyp.finished == (len(expected) < 12 or prev == EOS_ID)
        assert hyp.score == pytest.approx(
            sequence_log_prob(model, source, hyp.tokens, hyp.finished), abs=1e-4
        )
    assert any(h[0].finished for h in result.hypotheses)


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0])
def test_beam_scores_are_the_models_length_penalised_log_probs(alpha: float) -> None:
    model = random_gru(seed=3, eos_bias=1.0)
    src, lengths = batch(SOURCES)
    result = beam_search(model, src, lengths,
                         plain("beam", beam_size=4, alpha=alpha, n_best=4, max_length=8))
    for source, nbest in zip(SOURCES, result.hypotheses, strict=True):
        assert len(nbest) == 4
        assert [h.score for h in nbest] == sorted((h.score for h in nbest), reverse=True)
        assert len({tuple(h.tokens) for h in nbest}) == 4  # no duplicates
        for hyp in nbest:
            assert EOS_ID not in hyp.tokens
            log_prob = sequence_log_prob(model, source, hyp.tokens, hyp.finished)
            length = len(hyp.tokens) + hyp.finished
            assert hyp.log_prob == pytest.approx(log_prob, abs=1e-4)
            assert hyp.score == pytest.approx(log_prob / length_penalty(length, alpha), abs=1e-4)


@pytest.mark.parametrize("alpha", [0.0, 2.0])
def test_wide_beam_finds_the_exact_best_sequence(alpha: float) -> None:
    """Against brute force over every sequence of up to ``max_length`` tokens (V=5, L=3):
    a beam wide enough to hold them all must return the best, so it cannot stop early."""
    vocab, max_length = 5, 3
    model = random_gru(vocab_size=vocab, seed=4, eos_bias=0.5)
    source = [4, 3, 4]
    non_eos = [t for t in range(vocab) if t not in (EOS_ID, *NEVER)]
    finished = [
        (list(body), True)
        for n in range(max_length)
        for body in itertools.product(non_eos, repeat=n)
    ]
    cut = [(list(body), False) for body in itertools.product(non_eos, repeat=max_length)]
    candidates = finished + cut
    scored = [
        (sequence_log_prob(model, source, body, eos) / length_penalty(len(body) + eos, alpha), body)
        for body, eos in candidates
    ]
    best_score, best_tokens = max(scored)
    result = beam_search(model, *batch([source]), plain(
        "beam", beam_size=len(non_eos) ** max_length, alpha=alpha, max_length=max_length))
    assert result.tokens[0] == best_tokens
    assert result.scores[0] == pytest.approx(best_score, abs=1e-4)


@torch.no_grad()
def reference_beam(
    model: Seq2Seq, source: list[int], k: int, alpha: float, max_length: int
) -> tuple[list[int], float]:
    """The same beam rules, one sentence in plain Python, never stopping before max_length."""
    beams = [([], 0.0, model.start_decoding(*batch([source])))]  # (tokens, log-prob, state)
    finished = []  # (score, tokens)
    for step in range(max_length):
        candidates = []
        for tokens, log_prob, state in beams:
            prev = torch.tensor([tokens[-1] if tokens else BOS_ID])
            log_probs, new_state, _ = model.decode_step(prev, state)
            for token, lp in enumerate(log_probs[0].tolist()):
                if token not in NEVER:
                    candidates.append((log_prob + lp, tokens, token, new_state))
        candidates = sorted(candidates, key=lambda c: -c[0])[: 2 * k]
        for log_prob, tokens, token, _ in candidates[:k]:
            if token == EOS_ID:
                finished.append((log_prob / length_penalty(step + 1, alpha), tokens))
        beams = [(t + [v], lp, h) for lp, t, v, h in candidates if v != EOS_ID][:k]
    finished += [(lp / length_penalty(max_length, alpha), t) for t, lp, _ in beams]
    score, tokens = max(finished, key=lambda f: f[0])
    return tokens, score


@pytest.mark.parametrize("alpha", [0.0, 1.0, 3.0])
def test_beam_stops_early_only_when_nothing_can_change(alpha: float) -> None:
    """Early stopping returns what running every beam to max_length would return."""
    k, max_length = 2, 10
    for seed in range(3):
        model = random_gru(vocab_size=8, seed=seed, eos_bias=1.0)
        result = beam_search(model, *batch(SOURCES),
                             plain("beam", beam_size=k, alpha=alpha, max_length=max_length))
        for i, source in enumerate(SOURCES):
            tokens, score = reference_beam(model, source, k, alpha, max_length)
            assert result.tokens[i] == tokens
            assert result.scores[i] == pytest.approx(score, abs=1e-4)


def test_decoding_is_padding_invariant() -> None:
    """A sentence decodes the same alone and beside longer (padded) sentences."""
    model = random_gru(seed=5, eos_bias=1.0)
    options = plain("beam", beam_size=3, max_length=8)
    together = beam_search(model, *batch(SOURCES), options)
    for i, source in enumerate(SOURCES):
        alone = beam_search(model, *batch([source]), options)
        assert alone.tokens[0] == together.tokens[i]
        assert alone.scores[0] == pytest.approx(together.scores[i], abs=1e-5)


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_attention_covers_real_source_tokens_only(method: str) -> None:
    model = random_gru(seed=6, eos_bias=1.0)
    decode = {"greedy": greedy_search, "beam": beam_search}[method]
    result = decode(model, *batch(SOURCES), plain(method, max_length=6), return_attention=True)
    for source, (hyp,) in zip(SOURCES, result.hypotheses, strict=True):
        assert hyp.attention.shape == (len(hyp.tokens) + hyp.finished, len(source))
        # rows sum to 1 over the real tokens: source padding got weight 0
        torch.testing.assert_close(
            hyp.attention.sum(dim=1), torch.ones(len(hyp.attention)), atol=1e-5, rtol=0
        )


def test_sampling_is_reproducible_by_seed() -> None:
    model = random_gru(seed=7, eos_bias=0.5)
    src, lengths = batch(SOURCES * 4)

    def sample(seed: int, **kwargs: float) -> list[list[int]]:
        generator = torch.Generator().manual_seed(seed)
        return sample_search(model, src, lengths, plain("sample", max_length=10, **kwargs),
                             generator=generator).tokens

    assert sample(1) == sample(1)
    assert sample(1) != sample(2)
    assert sample(3, temperature=0.7, top_k=4, top_p=0.9) == sample(3, temperature=0.7, top_k=4,
                                                                   top_p=0.9)
    for tokens in sample(4):
        assert EOS_ID not in tokens


def test_sampling_with_one_candidate_is_greedy_and_scores_are_log_probs() -> None:
    model = random_gru(seed=8, eos_bias=1.0)
    src, lengths = batch(SOURCES)
    greedy = greedy_search(model, src, lengths, plain(max_length=10))
    # the smallest values a search option (and a request) allows: still greedy, never NaN
    for kwargs in ({"top_k": 1}, {"top_p": 1e-6}, {"temperature": 1e-4}, {"top_p": 1e-300},
                   {"temperature": 1e-45}, {"temperature": 1e-39}, {"temperature": 5e-324}):
        sampled = sample_search(model, src, lengths, plain("sample", max_length=10, **kwargs),
                                generator=torch.Generator().manual_seed(0))
        assert sampled.tokens == greedy.tokens
        assert sampled.scores == pytest.approx(greedy.scores, abs=1e-5)


def test_top_p_keeps_the_smallest_nucleus() -> None:
    logits = torch.tensor([[math.log(0.5), math.log(0.3), math.log(0.15), math.log(0.05)]])
    kept = filter_logits(logits, 1.0, top_k=0, top_p=0.75).isfinite()
    assert kept.tolist() == [[True, True, False, False]]
    kept = filter_logits(logits, 1.0, top_k=1, top_p=1.0).isfinite()
    assert kept.tolist() == [[True, False, False, False]]
    scaled = filter_logits(logits, 0.5, top_k=0, top_p=1.0)
    torch.testing.assert_close(scaled.softmax(1), (logits.double() * 2).softmax(1))
    cold = filter_logits(torch.tensor([[-math.inf, 0.0, -1.0]]), 1e-300, 0, 1.0)
    assert cold.softmax(1).tolist() == [[0.0, 1.0, 0.0]]  # no inf - inf: no NaN


def test_bad_arguments_are_rejected() -> None:
    model = random_gru()
    src, lengths = batch(SOURCES)
    with pytest.raises(ValueError, match="n_best"):
        beam_search(model, src, lengths, SearchOptions("beam", beam_size=2, n_best=3))
    with pytest.raises(ValueError, match="temperature"):
        sample_search(model, src, lengths, SearchOptions("sample", temperature=0.0))
    with pytest.raises(ValueError, match="search.method: must be one of greedy, beam, "
                                           "sample; got 'viterbi'"):
        SearchOptions(method="viterbi")
    with pytest.raises(ValueError, match="search.top_p: must be a finite number > 0 "
                                           "and <= 1, got 1.5"):
        SearchOptions(method="sample", top_p=1.5)
    # NaN passes no range check it should fail, and inf passed "> 0"
    for field, value in (("temperature", math.inf), ("temperature", math.nan),
                         ("alpha", math.nan), ("alpha", math.inf), ("top_p", math.nan),
                         ("alpha", -0.5), ("temperature", 101.0), ("max_length", 2.0),
                         ("allow_unk", 1), ("beam_size", True)):
        with pytest.raises(ValueError, match=f"^search\\.{field}: "):
            SearchOptions(**{field: value})


@pytest.mark.parametrize("method", ["greedy", "beam", "sample"])
def test_min_length_and_the_unk_ban_restrict_the_choice_not_the_score(method: str) -> None:
    """No output shorter than min_length, none with <unk> unless allowed, never PAD or BOS,
    and the scores stay the model's own log-probabilities of what was chosen."""
    model = random_gru(seed=5, eos_bias=4.0)  # EOS first almost everywhere, unrestricted
    with torch.no_grad():
        model.decoder.out.bias[UNK_ID] += 3.0  # and <unk> a favourite
        model.decoder.out.bias[PAD_ID] += 3.0  # and PAD, which is never chosen anyway
    src, lengths = batch(SOURCES)

    def decode(options: SearchOptions):
        if method == "beam":
            return beam_search(model, src, lengths, replace(options, beam_size=3, alpha=0.0))
        if method == "sample":
            generator = torch.Generator().manual_seed(0)
            return sample_search(model, src, lengths, options, generator=generator)
        return greedy_search(model, src, lengths, options)

    unrestricted = decode(plain(method, max_length=8)).tokens
    assert min(len(tokens) for tokens in unrestricted) < 3  # the restrictions are not idle
    long_enough = decode(plain(method, max_length=8, min_length=3)).tokens
    assert any(UNK_ID in tokens for tokens in long_enough)
    result = decode(plain(method, max_length=8, min_length=3, allow_unk=False))
    for source, nbest in zip(SOURCES, result.hypotheses, strict=True):
        for hyp in nbest:
            assert len(hyp.tokens) >= 3 and not {UNK_ID, *NEVER} & set(hyp.tokens)
            assert hyp.log_prob == pytest.approx(
                sequence_log_prob(model, source, hyp.tokens, hyp.finished), abs=1e-4)


def test_search_options_check_min_length() -> None:
    with pytest.raises(ValueError, match="min_length"):
        SearchOptions(max_length=5, min_length=6)
    with pytest.raises(ValueError, match="min_length"):
        SearchOptions(max_length=2, min_length=-1)


def test_what_someone_asks_for_maps_to_one_method() -> None:
    base = SearchOptions(max_length=9)
    assert base.asked() is base
    assert base.asked(beam=1).method == "greedy"
    assert (base.asked(beam=4).method, base.asked(beam=4).beam_size) == ("beam", 4)
    sampled = base.asked(sample=True, temperature=0.5, top_k=None)
    assert (sampled.method, sampled.temperature, sampled.top_k) == ("sample", 0.5, 0)
    for kwargs, words in (({"beam": 2, "sample": True}, "exclude each other"),
                          ({"top_p": 0.5}, "top_p applies to sampling only"),
                          ({"beam": 9, "max_beam": 8}, "at most 8"),
                          ({"sample": True, "top_p": 0.0},
                           "search.top_p: must be a finite number > 0")):
        with pytest.raises(ValueError, match=words):
            base.asked(**kwargs)


@pytest.mark.parametrize("method", ["greedy", "sample"])
def test_a_prefix_of_its_own_answer_changes_nothing_but_the_score(method: str) -> None:
    """Fed the first tokens of the answer it would give anyway, greedy search (and sampling,
    which draws as many numbers) gives the same answer; the prefix's tokens add nothing to
    the scores (only the tokens the search chose count)."""
    model = random_gru(seed=3, eos_bias=1.0)
    src, lengths = batch(SOURCES)
    options = plain(method, max_length=8)

    def decode(prefixes=None):
        search = greedy_search if method == "greedy" else sample_search
        extra = {} if method == "greedy" else {"generator": torch.Generator().manual_seed(5)}
        return search(model, src, lengths, options, prefixes=prefixes, **extra).hypotheses

    free = [nbest[0] for nbest in decode()]
    prefixes = [hyp.tokens[:2] for hyp in free]
    forced = [nbest[0] for nbest in decode(prefixes)]
    for source, prefix, a, b in zip(SOURCES, prefixes, free, forced, strict=True):
        assert b.tokens == a.tokens and b.finished == a.finished
        given = sequence_log_prob(model, source, prefix, eos=False)
        assert b.log_prob == pytest.approx(a.log_prob - given, abs=1e-4)


def test_beam_answers_start_with_their_prefix_and_score_only_the_rest() -> None:
    model = random_gru(seed=3, eos_bias=1.0)
    src, lengths = batch(SOURCES)
    prefixes = [[9, 10], [], [11], [8, 8, 8], [4]]
    options = plain("beam", beam_size=3, n_best=3, alpha=0.0, max_length=8)
    result = beam_search(model, src, lengths, options, prefixes=prefixes)
    for source, prefix, nbest in zip(SOURCES, prefixes, result.hypotheses, strict=True):
        assert len(nbest) == 3 and len({tuple(h.tokens) for h in nbest}) == 3
        for hyp in nbest:
            assert hyp.tokens[:len(prefix)] == prefix
            whole = sequence_log_prob(model, source, hyp.tokens, eos=hyp.finished)
            given = sequence_log_prob(model, source, prefix, eos=False)
            assert hyp.log_prob == pytest.approx(whole - given, abs=1e-4)
            assert hyp.score == pytest.approx(hyp.log_prob, abs=1e-4)  # alpha 0, no penalty
    # a prefix as long as max_length is the whole answer
    (only,) = beam_search(model, src[:, :1], lengths[:1], replace(options, max_length=2),
                          prefixes=[[9, 10]]).hypotheses
    assert only[0].tokens == [9, 10] and only[0].log_prob == 0.0
