"""Decoding as plain, batched functions: greedy and sampling here, beam search in
:mod:`padless.decoding.beam`; the types and rules they share.

Every function takes a model with the two decoding methods of
:class:`padless.models.base.EncoderDecoder` (see :class:`StepModel`), a padded source batch
``src [S, B]`` with its lengths ``[B]`` (CPU), and returns a :class:`SearchResult`. The
model owns its decoding state (a GRU's hidden state, a Transformer's key/value cache, and
the source padding mask every step attends with); search only selects rows of it.

Returned token ids never contain BOS, EOS or anything after EOS. Sentences that finish early
are dropped from the batch, so a long answer does not make the others pay for its steps.

Restrictions and repetition control, shared by every function:

- bans change the choice only: EOS before ``min_length`` tokens, ``banned_ids`` (UNK in the
  commands), and with ``no_repeat_ngram=n`` any token that would complete an n-gram the
  hypothesis already holds (fairseq's ``--no-repeat-ngram-size``). A chosen token is never
  banned, so bans never enter a score;
- ``repetition_penalty=P`` (>= 1; Keskar et al. 2019, Hugging Face's ``repetition_penalty``)
  multiplies the log-probability of every token the hypothesis already holds by ``P`` (it
  is negative, so it falls) before the choice. The search ranks by these penalised values,
  so they are its scores; ``Hypothesis.log_prob`` stays the model's own.

Scores (with ``P = 1``, the model's log-probabilities):

- greedy and sampling: ``sum_t s_t`` over the returned tokens (plus EOS when the hypothesis
  finished), where ``s_t`` is ``log p(y_t | y_<t, x)`` at temperature 1, times ``P`` when
  ``y_t`` repeats a token of ``y_<t``;
- beam search: that sum divided by the GNMT length penalty ``((5 + n) / 6) ** alpha``, where
  ``n`` counts the returned tokens plus EOS when finished.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from padless.decoding.repetition import penalize_repetitions, repeated_ngram_bans
from padless.models.base import DecoderState
from padless.runtime.errors import UserError

__all__ = [
    "Hypothesis", "SearchOptions", "SearchResult", "StepModel", "greedy_search",
    "length_penalty", "restrict", "sample_search",
]

class StepModel(Protocol):
    """What decoding needs from a model (any :class:`padless.models.base.EncoderDecoder`).

    ``start_decoding(src [S, B], src_lengths [B])`` encodes and returns a
    :class:`~padless.models.base.DecoderState` for ``B`` rows;
    ``decode_step(prev_tokens [R], state)`` returns ``(log_probs [R, V], state,
    attention [R, S])``; ``state.select(rows)`` repeats, reorders or drops rows.
    """

    def start_decoding(self, src: torch.Tensor, src_lengths: torch.Tensor) -> DecoderState: ...

    def decode_step(
        self, prev_tokens: torch.Tensor, state: DecoderState
    ) -> tuple[torch.Tensor, DecoderState, torch.Tensor]: ...


@dataclass(frozen=True)
class Hypothesis:
    """One output sequence.

    Attributes:
        tokens: generated ids, without BOS, EOS or anything after EOS.
        score: the ranking score (see the module docstring): the log-probability with
            any repetition penalty, length-penalised in beam search.
        log_prob: the model's ``sum_t log p(y_t | y_<t, x)`` over ``tokens`` (and EOS if
            ``finished``), without any penalty.
        finished: True if the model produced EOS, False if cut at ``max_length``.
        attention: ``[T, S_b]`` attention of each generated step (``T = len(tokens) + 1``
            when finished, the last row being EOS's) over the ``S_b`` real source tokens;
            None unless asked for.
    """

    tokens: list[int]
    score: float
    log_prob: float
    finished: bool
    attention: torch.Tensor | None = None


@dataclass(frozen=True)
class SearchResult:
    """The output for a batch: ``hypotheses[b]`` is sentence ``b``'s n-best list, best first."""

    hypotheses: list[list[Hypothesis]]

    @property
    def tokens(self) -> list[list[int]]:
        """The best hypothesis' tokens of each sentence, ``[B][T_b]``."""
        return [nbest[0].tokens for nbest in self.hypotheses]

    @property
    def scores(self) -> list[float]:
        """The best hypothesis' score of each sentence, ``[B]``."""
        return [nbest[0].score for nbest in self.hypotheses]


@dataclass(frozen=True)
class SearchOptions:
    """How to decode; ``method`` picks the function, the other fields are its arguments."""

    method: str = "greedy"  # "greedy" | "beam" | "sample"
    max_length: int = 30
    beam_size: int = 5
    alpha: float = 0.6
    n_best: int = 1
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    # What the commands do by default (the search functions themselves default to no
    # constraint): never an empty answer, never an <unk> in it, no 3-gram twice in one
    # answer and a penalty on repeated words (greedy and beam search on a chit-chat model
    # otherwise loop: "i like the the time i have to a good to the here"; with 1.2 a barely
    # trained model still said "i have you you you a be?", with 1.5 "i have you a be?").
    min_length: int = 1
    allow_unk: bool = False
    no_repeat_ngram: int = 3
    repetition_penalty: float = 1.5

    def __post_init__(self) -> None:
        """Reject bad values before any decoding starts (e.g. at a command's start).

        Raises:
            UserError: ``bad search option NAME=VALUE``, with the rule it breaks.
        """
        checks = {  # name -> (holds, the rule); NaN fails every comparison
            "method": (self.method in ("greedy", "beam", "sample"), "greedy, beam or sample"),
            "max_length": (self.max_length >= 1, ">= 1"),
            "min_length": (0 <= self.min_length <= self.max_length, "in [0, max_length]"),
            "beam_size": (self.beam_size >= 1, ">= 1"),
            "n_best": (1 <= self.n_best <= self.beam_size, "in [1, beam_size]"),
            "alpha": (0 <= self.alpha < math.inf, "finite and >= 0"),
            "temperature": (0 < self.temperature < math.inf, "finite and > 0"),
            "top_k": (self.top_k >= 0, ">= 0"),
            "top_p": (0.0 < self.top_p <= 1.0, "in (0, 1]"),
            "no_repeat_ngram": (self.no_repeat_ngram >= 0, ">= 0"),
            "repetition_penalty": (1.0 <= self.repetition_penalty < math.inf, "finite and >= 1"),
        }
        for name, (ok, rule) in checks.items():
            if not ok:
                raise UserError(f"bad search option {name}={getattr(self, name)!r}: must be {rule}")


def length_penalty(length: int, alpha: float) -> float:
    """GNMT length penalty ``((5 + length) / 6) ** alpha`` (Wu et al., 2016)."""
    return ((5.0 + length) / 6.0) ** alpha


def restrict(
    log_probs: torch.Tensor,
    step: int,
    eos_id: int,
    min_length: int,
    banned_ids: Sequence[int],
    history: torch.Tensor | None = None,
    no_repeat_ngram: int = 0,
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """``log_probs [R, V]`` with the banned choices at -inf.

    Banned: ``banned_ids``; EOS before ``min_length`` tokens (``step``, the tokens
    generated so far, is 0 at the first step); with ``no_repeat_ngram=n > 0`` and the
    tokens so far ``history [R, step]``, every id that would repeat an n-gram of its row.
    ``lengths [R]``: rows at different steps (continuous batching), row ``r`` at step
    ``lengths[r]`` with its first ``lengths[r]`` tokens in ``history``; ``step`` is then the
    largest. A row left with no allowed id may end: EOS gets its value back.

    Only the choice is restricted: the allowed ids keep their values, so a hypothesis is
    still scored with what it chose.
    """
    first = step if lengths is None else int(lengths.min())  # the youngest row's step
    bans_ngrams = no_repeat_ngram > 0 and history is not None and step >= no_repeat_ngram
    if not banned_ids and first >= min_length and not bans_ngrams:
        return log_probs
    restricted = log_probs.clone()
    if banned_ids:
        restricted[:, list(banned_ids)] = -math.inf
    if lengths is None and step < min_length:
        restricted[:, eos_id] = -math.inf
    elif lengths is not None:
        restricted[lengths < min_length, eos_id] = -math.inf
    if bans_ngrams:
        restricted[repeated_ngram_bans(history, no_repeat_ngram, lengths)] = -math.inf
    stuck = ~restricted.isfinite().any(dim=1)
    if stuck.any():
        restricted[stuck, eos_id] = log_probs[stuck, eos_id]
    return restricted


def _sequential_search(
    model: StepModel,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    pick: Callable[[torch.Tensor], torch.Tensor],
    *,
    bos_id: int,
    eos_id: int,
    max_length: int,
    min_length: int,
    banned_ids: Sequence[int],
    no_repeat_ngram: int,
    repetition_penalty: float,
    return_attention: bool,
) -> SearchResult:
    """One hypothesis per sentence, choosing each token with ``pick(scores [b, V]) -> [b]``
    among the tokens :func:`restrict` allows (scores: :func:`penalize_repetitions`)."""
    state = model.start_decoding(src, src_lengths)
    batch_size, device = src.size(1), src.device
    alive = torch.arange(batch_size, device=device)  # original index of each decoding row
    prev = torch.full((batch_size,), bos_id, dtype=torch.long, device=device)
    out = torch.full((max_length, batch_size), eos_id, dtype=torch.long, device=device)
    log_prob = torch.zeros(batch_size, dtype=torch.float64, device=device)
    score = torch.zeros(batch_size, dtype=torch.float64, device=device)
    finished = torch.zeros(batch_size, dtype=torch.bool, device=device)
    attn_out = (
        torch.zeros(max_length, batch_size, src.size(0), device=device)
        if return_attention else None
    )
    for step in range(max_length):
        step_log_probs, state, attention = model.decode_step(prev, state)
        history = out[:step, alive].t()  # [b, step]: the tokens so far
        scores = penalize_repetitions(step_log_probs, history, repetition_penalty)
        token = pick(restrict(scores, step, eos_id, min_length, banned_ids, history,
                              no_repeat_ngram))
        out[step, alive] = token
        log_prob[alive] += step_log_probs.gather(1, token.unsqueeze(1)).squeeze(1).double()
        score[alive] += scores.gather(1, token.unsqueeze(1)).squeeze(1).double()
        if attn_out is not None:
            attn_out[step, alive] = attention.float()
        is_eos = token == eos_id
        finished[alive] |= is_eos
        if is_eos.any():  # drop finished rows so the others decode alone
            keep = (~is_eos).nonzero().squeeze(1)
            if keep.numel() == 0:
                break
            alive, token = alive[keep], token[keep]
            state = state.select(keep)
        prev = token

    hypotheses = []
    for b, (ids, lp, sc, done) in enumerate(
        zip(out.t().tolist(), log_prob.tolist(), score.tolist(), finished.tolist(), strict=True)
    ):
        n = ids.index(eos_id) if done else max_length
        attention_b = None
        if attn_out is not None:
            attention_b = attn_out[: n + done, b, : int(src_lengths[b])].cpu()
        hypotheses.append([Hypothesis(ids[:n], sc, lp, done, attention_b)])
    return SearchResult(hypotheses)


@torch.no_grad()
def greedy_search(
    model: StepModel,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    *,
    bos_id: int,
    eos_id: int,
    max_length: int = 30,
    min_length: int = 0,
    banned_ids: Sequence[int] = (),
    no_repeat_ngram: int = 0,
    repetition_penalty: float = 1.0,
    return_attention: bool = False,
) -> SearchResult:
    """Batched greedy decoding: the most likely token at each step; a sentence stops at EOS.

    Args:
        model: a :class:`StepModel` (in eval mode).
        src: ``[S, B]`` padded source ids, on the model's device.
        src_lengths: ``[B]`` source lengths (CPU).
        max_length: at most this many tokens per sentence (EOS included).
        min_length: EOS is not chosen before this many tokens (1: no empty output).
        banned_ids: ids never chosen (e.g. UNK).
        no_repeat_ngram: n > 0: no n-gram twice in one output (0: no such ban).
        repetition_penalty: P >= 1 multiplies the log-probability of tokens already in the
            output (1.0: none); see the module docstring for what it does to scores.
        return_attention: keep each hypothesis' ``[T, S_b]`` attention.
    """
    SearchOptions(  # checks the values
        max_length=max_length, min_length=min_length, no_repeat_ngram=no_repeat_ngram,
        repetition_penalty=repetition_penalty,
    )
    return _sequential_search(
        model, src, src_lengths, lambda lp: lp.argmax(dim=1), bos_id=bos_id, eos_id=eos_id,
        max_length=max_length, min_length=min_length, banned_ids=banned_ids,
        no_repeat_ngram=no_repeat_ngram, repetition_penalty=repetition_penalty,
        return_attention=return_attention,
    )


def _filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Set to -inf every logit outside the top-k and outside the top-p nucleus; ``[b, V]``."""
    if 0 < top_k < logits.size(1):
        kth = logits.topk(top_k, dim=1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=1, descending=True)
        cumulative = sorted_logits.softmax(dim=1).cumsum(dim=1)
        # drop a token when the tokens ranked above it already reach top_p (keeps the first)
        drop_sorted = cumulative - sorted_logits.softmax(dim=1) >= top_p
        drop = drop_sorted.scatter(1, order, drop_sorted)
        logits = logits.masked_fill(drop, -math.inf)
    return logits


@torch.no_grad()
def sample_search(
    model: StepModel,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    *,
    bos_id: int,
    eos_id: int,
    max_length: int = 30,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    min_length: int = 0,
    banned_ids: Sequence[int] = (),
    no_repeat_ngram: int = 0,
    repetition_penalty: float = 1.0,
    return_attention: bool = False,
) -> SearchResult:
    """Batched ancestral sampling from ``softmax(scores / temperature)``, where ``scores`` are
    the log-probabilities after the repetition penalty and bans.

    Args:
        temperature: > 0; below 1 sharpens the distribution, above 1 flattens it.
        top_k: sample among the ``top_k`` most likely tokens only (0: all).
        top_p: nucleus sampling, the smallest set of tokens whose probability reaches
            ``top_p`` (1.0: all).
        generator: a ``torch.Generator`` on the model's device; the same seed and batch give
            the same samples.

    The score is the sample's (penalised) log-probability at temperature 1, unfiltered by
    top-k and top-p. Other arguments as :func:`greedy_search`.
    """
    SearchOptions(  # checks the values
        "sample", max_length, temperature=temperature, top_k=top_k, top_p=top_p,
        min_length=min_length, no_repeat_ngram=no_repeat_ngram,
        repetition_penalty=repetition_penalty,
    )

    def pick(log_probs: torch.Tensor) -> torch.Tensor:
        logits = _filter_logits(log_probs.float() / temperature, top_k, top_p)
        return torch.multinomial(logits.softmax(dim=1), 1, generator=generator).squeeze(1)

    return _sequential_search(
        model, src, src_lengths, pick, bos_id=bos_id, eos_id=eos_id, max_length=max_length,
        min_length=min_length, banned_ids=banned_ids, no_repeat_ngram=no_repeat_ngram,
        repetition_penalty=repetition_penalty, return_attention=return_attention,
    )
