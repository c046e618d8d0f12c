"""What every search shares: its result types and the rules of a step. The searches are
plain, batched functions: greedy search and sampling in :mod:`padless.decoding.greedy`, beam
search in :mod:`padless.decoding.beam`, all taking their settings as one
:class:`padless.decoding.options.SearchOptions`.

Every search takes a model with the two decoding methods of
:class:`padless.models.base.EncoderDecoder` (see :class:`StepModel`), a padded source batch
``src [S, B]`` with its lengths ``[B]``, and returns a :class:`SearchResult`. The model owns
its decoding state (a GRU's hidden state, a Transformer's key/value cache, and the source
padding mask every step attends with); search only selects rows of it.

Returned token ids never contain BOS, EOS or anything after EOS. Sentences that finish early
are dropped from the batch, so a long answer does not make the others pay for its steps.

Restrictions and repetition control, shared by every function:

- bans change the choice only: EOS before ``min_length`` tokens, PAD and BOS (never
  outputs) and UNK unless ``allow_unk``, and with ``no_repeat_ngram=n`` any token that would
  complete an n-gram the hypothesis already holds (fairseq's ``--no-repeat-ngram-size``). A
  chosen token is never banned, so bans never enter a score;
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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from padless.data.vocabulary import Specials
from padless.decoding.repetition import repeated_ngram_bans
from padless.models.base import DecoderState

__all__ = ["Hypothesis", "SearchResult", "StepModel", "Stopped", "filter_logits",
           "length_penalty", "restrict"]


class Stopped(Exception):
    """A search's ``stop()`` said to stop (its requests were given up, the server stops)."""


class StepModel(Protocol):
    """What decoding needs from a model (any :class:`padless.models.base.EncoderDecoder`).

    ``start_decoding(src [S, B], src_lengths [B])`` encodes and returns a
    :class:`~padless.models.base.DecoderState` for ``B`` rows;
    ``decode_step(prev_tokens [R], state)`` returns ``(log_probs [R, V], state,
    attention [R, S])``; ``state.select(rows)`` repeats, reorders or drops rows;
    ``specials`` says where decoding starts (BOS), where it ends (EOS) and what it never
    outputs.
    """

    specials: Specials

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
    *,
    inplace: bool = False,
) -> torch.Tensor:
    """``log_probs [R, V]`` with the banned choices at -inf (``inplace``: in ``log_probs``
    itself, which the caller does not need any more).

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
    eos = log_probs[:, eos_id].clone()
    restricted = log_probs if inplace else log_probs.clone()
    if banned_ids:
        restricted[:, list(banned_ids)] = -math.inf
    if lengths is None and step < min_length:
        restricted[:, eos_id] = -math.inf
    elif lengths is not None:
        restricted[lengths < min_length, eos_id] = -math.inf
    if bans_ngrams:
        restricted[repeated_ngram_bans(history, no_repeat_ngram, lengths)] = -math.inf
    # a row with nothing allowed (NaN counts as nothing) ends: one reduction, not isfinite's
    stuck = ~(restricted.amax(dim=1) > -math.inf)
    restricted[:, eos_id] = torch.where(stuck, eos, restricted[:, eos_id])
    return restricted


def filter_logits(
    scores: torch.Tensor, temperature: float, top_k: int, top_p: float
) -> torch.Tensor:
    """``scores [R, V] / temperature`` (shifted so each row's best is 0, in float64) with
    every score outside the top-k and outside the top-p nucleus at -inf: what sampling
    draws from. Any temperature a search option allows is safe: a tiny one leaves the best
    token at 0 and the others at -inf or far below (never inf - inf = NaN)."""
    logits = scores.double()
    logits = (logits - logits.max(dim=1, keepdim=True).values) / temperature
    if 0 < top_k < logits.size(1):
        kth = logits.topk(top_k, dim=1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=1, descending=True)
        probs = sorted_logits.softmax(dim=1)
        # drop a token when the tokens ranked above it already reach top_p (keeps the first)
        drop_sorted = probs.cumsum(dim=1) - probs >= top_p
        drop = drop_sorted.scatter(1, order, drop_sorted)
        logits = logits.masked_fill(drop, -math.inf)
    return logits
