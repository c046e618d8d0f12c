"""Repetition control on a hand-built model whose unrestricted search loops.

The model is a Markov chain over ids (the next token depends on the previous one only), so
every expected output is computed by hand or by brute force in plain Python.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import pytest
import torch

from padless.data.vocabulary import BOS_ID, EOS_ID, Specials
from padless.decoding.beam import beam_search
from padless.decoding.greedy import greedy_search, sample_search
from padless.decoding.metrics import has_repeated_ngram
from padless.decoding.options import SearchOptions
from padless.decoding.search import length_penalty, restrict

A, B, C, D = 4, 5, 6, 7  # words; 0-3 are PAD, BOS, EOS, UNK
VOCAB = 8
SPECIALS_BANNED = (0, 1, 3)  # PAD, BOS, UNK: what SearchOptions(allow_unk=False) bans


@dataclass(frozen=True)
class MarkovState:
    rows: int

    def select(self, rows: torch.Tensor) -> MarkovState:
        return MarkovState(len(rows))


class MarkovModel:
    """``log p(next | prev) = table[prev]``: a StepModel that ignores its source."""

    specials = Specials()

    def __init__(self, logits: dict[int, dict[int, float]]) -> None:
        table = torch.full((VOCAB, VOCAB), -20.0)
        for prev, row in logits.items():
            for token, logit in row.items():
                table[prev, token] = logit
        self.table = table.log_softmax(dim=1)

    def start_decoding(self, src: torch.Tensor, src_lengths: torch.Tensor) -> MarkovState:
        return MarkovState(src.size(1))

    def decode_step(self, prev: torch.Tensor, state: MarkovState):
        return self.table[prev], state, torch.full((len(prev), 1), 1.0)

    def step_log_prob(self, prev: int, token: int) -> float:
        return float(self.table[prev, token])


# A loop: a -> b -> c -> a ..., with a weaker way out at every word.
LOOP = MarkovModel({
    BOS_ID: {A: 6.0, D: 3.0, EOS_ID: 0.0},
    A: {B: 6.0, C: 3.5, D: 2.0, EOS_ID: 1.0},
    B: {C: 6.0, D: 4.0, A: 3.0, EOS_ID: 1.5},
    C: {A: 6.0, D: 5.6, B: 3.2, EOS_ID: 2.0},
    D: {D: 5.0, A: 4.5, EOS_ID: 3.0},
})
SRC, LENGTHS = torch.tensor([[4], [5]]), torch.tensor([2])  # one source (ignored)


def options(method: str, **settings: object) -> SearchOptions:
    return SearchOptions.plain(method, allow_unk=False, **settings)


def search(method: str, **settings: object):
    if method == "greedy":
        return greedy_search(LOOP, SRC, LENGTHS, options(method, **settings))
    if method == "beam":
        return beam_search(LOOP, SRC, LENGTHS, options(method, beam_size=3, alpha=0.0,
                                                       **settings))
    return sample_search(LOOP, SRC, LENGTHS, options(method, top_k=1, **settings),
                         generator=torch.Generator())


def reference_greedy(n: int, penalty: float, max_length: int) -> tuple[list[int], float, float]:
    """Greedy with bans and penalty one step at a time: ``(tokens, score, log_prob)``."""
    tokens, score, log_prob = [], 0.0, 0.0
    for _ in range(max_length):
        prev = tokens[-1] if tokens else BOS_ID
        best = None
        for token in range(VOCAB):
            if token in SPECIALS_BANNED:
                continue
            if n and token != EOS_ID and len(tokens) >= n - 1:
                candidate = tokens + [token]
                if has_repeated_ngram(candidate, n):
                    continue
            value = LOOP.step_log_prob(prev, token) * (penalty if token in tokens else 1.0)
            if best is None or value > best[0]:
                best = (value, token)
        value, token = best
        score += value
        log_prob += LOOP.step_log_prob(prev, token)
        if token == EOS_ID:
            break
        tokens.append(token)
    return tokens, score, log_prob


@pytest.mark.parametrize("method", ["greedy", "beam", "sample"])
def test_unrestricted_search_loops_and_no_repeat_ngram_stops_it(method: str) -> None:
    (loop,) = search(method, max_length=12).tokens
    assert loop[:7] == [A, B, C, A, B, C, A] and has_repeated_ngram(loop, 3)
    for n in (1, 2, 3):
        (tokens,) = search(method, max_length=12, min_length=n, no_repeat_ngram=n).tokens
        assert len(tokens) >= n and not has_repeated_ngram(tokens, n), (n, tokens)


@pytest.mark.parametrize("n", [0, 1, 2, 3])
@pytest.mark.parametrize("penalty", [1.0, 1.3, 2.0])
def test_greedy_chooses_the_best_allowed_penalised_token(n: int, penalty: float) -> None:
    result = search("greedy", max_length=12, no_repeat_ngram=n, repetition_penalty=penalty)
    tokens, score, log_prob = reference_greedy(n, penalty, 12)
    (hyp,) = result.hypotheses[0]
    assert hyp.tokens == tokens
    assert hyp.score == pytest.approx(score, abs=1e-4)
    assert hyp.log_prob == pytest.approx(log_prob, abs=1e-4)  # the model's own
    if penalty > 1.0 and len(set(hyp.tokens)) < len(hyp.tokens):
        assert hyp.score < hyp.log_prob  # repetitions were penalised
    else:
        assert hyp.score == pytest.approx(hyp.log_prob)
    if penalty == 2.0 and n == 0:  # enough to leave the loop (for a loop of D D D ...)
        assert hyp.tokens[:4] == [A, B, C, D]


def sequence_scores(body: list[int], eos: bool, penalty: float) -> tuple[float, float]:
    """``(penalised score, log-probability)`` of one output under LOOP."""
    score = log_prob = 0.0
    for i, token in enumerate(body + ([EOS_ID] if eos else [])):
        step = LOOP.step_log_prob(body[i - 1] if i else BOS_ID, token)
        log_prob += step
        score += step * (penalty if token in body[:i] else 1.0)
    return score, log_prob


@pytest.mark.parametrize(("n", "penalty", "alpha"), [(2, 1.0, 0.0), (0, 1.5, 0.6),
                                                     (3, 1.2, 1.0), (1, 2.0, 0.0)])
def test_wide_beam_finds_the_best_allowed_sequence(n: int, penalty: float, alpha: float) -> None:
    """Brute force over every output of up to 4 tokens the bans allow, ranked by penalised
    score / length penalty: a beam that holds them all must return the best."""
    max_length, allowed_words = 4, [A, B, C, D]  # and EOS, at the end
    candidates = [
        (list(body), eos)
        for length in range(max_length + 1)
        for body in itertools.product(allowed_words, repeat=length)
        for eos in (True, False)
        if (eos and length < max_length) or (not eos and length == max_length)
    ]
    if n:
        candidates = [(b, e) for b, e in candidates if not has_repeated_ngram(b, n)]

    def ranked(candidate: tuple[list[int], bool]) -> float:
        body, eos = candidate
        return sequence_scores(body, eos, penalty)[0] / length_penalty(len(body) + eos, alpha)

    best_body, best_eos = max(candidates, key=ranked)
    result = beam_search(LOOP, SRC, LENGTHS, options(
        "beam", beam_size=len(allowed_words) ** max_length, alpha=alpha, max_length=max_length,
        no_repeat_ngram=n, repetition_penalty=penalty))
    (hyp, *_) = result.hypotheses[0]
    assert hyp.tokens == best_body and hyp.finished == best_eos
    score, log_prob = sequence_scores(best_body, best_eos, penalty)
    assert hyp.score == pytest.approx(score / length_penalty(len(best_body) + best_eos, alpha),
                                      abs=1e-4)
    assert hyp.log_prob == pytest.approx(log_prob, abs=1e-4)


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("penalty", [1.0, 1.4])
def test_beam_of_one_is_greedy_with_the_same_rules(n: int, penalty: float) -> None:
    greedy = search("greedy", max_length=10, no_repeat_ngram=n, repetition_penalty=penalty)
    beam = beam_search(LOOP, SRC, LENGTHS, options(
        "beam", beam_size=1, alpha=0.0, max_length=10, no_repeat_ngram=n,
        repetition_penalty=penalty))
    assert beam.tokens == greedy.tokens
    assert beam.scores == pytest.approx(greedy.scores, abs=1e-4)
    assert beam.hypotheses[0][0].log_prob == pytest.approx(
        greedy.hypotheses[0][0].log_prob, abs=1e-4)


@pytest.mark.parametrize("method", ["greedy", "beam", "sample"])
def test_a_row_with_nothing_left_to_choose_ends(method: str) -> None:
    """Every word used once (no_repeat_ngram=1), EOS banned by min_length: EOS comes back."""
    (tokens,) = search(method, max_length=12, min_length=10, no_repeat_ngram=1).tokens
    assert sorted(tokens) == [A, B, C, D]


def test_restrict_bans_exactly_the_repeating_continuations() -> None:
    history = torch.tensor([[A, B, C, A, B], [A, A, A, B, C]])
    log_probs = torch.zeros(2, VOCAB)
    allowed = restrict(log_probs, 5, EOS_ID, 0, (), history, no_repeat_ngram=3)
    banned = [set((~row.isfinite()).nonzero().flatten().tolist()) for row in allowed]
    assert banned == [{C}, set()]  # "a b c" again; row 2 ends "b c", new
    allowed = restrict(log_probs, 5, EOS_ID, 0, (), history, no_repeat_ngram=2)
    banned = [set((~row.isfinite()).nonzero().flatten().tolist()) for row in allowed]
    assert banned == [{C}, set()]  # "b c" again; "c" never followed by anything
    allowed = restrict(log_probs, 5, EOS_ID, 0, (), history, no_repeat_ngram=1)
    banned = [set((~row.isfinite()).nonzero().flatten().tolist()) for row in allowed]
    assert banned == [{A, B, C}, {A, B, C}]


def test_bad_repetition_options_are_rejected() -> None:
    with pytest.raises(ValueError, match="search.repetition_penalty: must be a finite "
                                           "number >= 1, got 0.9"):
        SearchOptions(repetition_penalty=0.9)
    with pytest.raises(ValueError, match="search.no_repeat_ngram: must be an integer >= 0, got -1"):
        SearchOptions(no_repeat_ngram=-1)
    assert math.isfinite(SearchOptions().repetition_penalty)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_rows_at_different_steps_are_restricted_and_penalised_as_alone(n: int) -> None:
    """Continuous batching pads each row's tokens so far: the padding must not count."""
    from padless.decoding.repetition import penalize_repetitions
    from padless.masking import pad_batch

    rows = [[A, B, C, A, B], [A, A], [], [D, D, D], [B, C, B]]
    history, lengths = pad_batch(rows, 0, batch_first=True)
    log_probs = torch.randn(len(rows), VOCAB).log_softmax(dim=1)
    together = restrict(penalize_repetitions(log_probs, history, 1.5, lengths), 5, EOS_ID, 3,
                        (), history, n, lengths)
    for r, row in enumerate(rows):
        alone_history = torch.tensor([row], dtype=torch.long).view(1, len(row))
        alone = restrict(penalize_repetitions(log_probs[r : r + 1], alone_history, 1.5),
                         len(row), EOS_ID, 3, (), alone_history, n)
        torch.testing.assert_close(together[r : r + 1], alone)
