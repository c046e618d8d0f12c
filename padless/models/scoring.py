"""Teacher-forced scoring, the one path behind validation, ``padless evaluate`` and benchmarks.

:func:`teacher_forced_scores` runs a model over batches with the reference targets fed in and
sums, over the real target tokens only, the cross-entropy and the number of tokens whose
argmax is right. Sums (not means) so that scores of several batches, or several processes,
add up exactly: ``Scores.loss`` divides once at the end.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from padless.data.batch import Batch, IdPair
from padless.data.loader import make_batches
from padless.models.base import EncoderDecoder
from padless.runtime.precision import Precision

__all__ = ["PairScore", "Scores", "corpus_scores", "pair_scores", "perplexity",
           "teacher_forced_scores"]

# Real tokens projected to the vocabulary at once: bounds the [rows, V] logits alive.
SCORING_ROWS = 4096


def perplexity(loss_per_token: float) -> float:
    """``exp(loss)``, capped so that a diverged model gives a huge number, not an overflow."""
    return math.exp(min(loss_per_token, 700.0))


@dataclass(frozen=True)
class Scores:
    """Summed teacher-forced scores; ``+`` adds two of them."""

    loss_sum: float = 0.0  # cross-entropy summed over real target tokens (nats)
    correct: int = 0  # real target tokens whose argmax prediction is right
    n_tokens: int = 0  # real target tokens (EOS included)
    stopped: bool = False  # the pass stopped before its last batch (a stop signal)

    def __add__(self, other: Scores) -> Scores:
        return Scores(self.loss_sum + other.loss_sum, self.correct + other.correct,
                      self.n_tokens + other.n_tokens, self.stopped or other.stopped)

    def metrics(self) -> dict[str, float]:
        """``{"loss", "ppl", "accuracy", "tokens"}``: what validation logs and checkpoints
        record."""
        return {"loss": self.loss, "ppl": self.perplexity, "accuracy": self.accuracy,
                "tokens": self.n_tokens}

    @property
    def loss(self) -> float:
        """Mean loss per real target token (NaN when there is none)."""
        return self.loss_sum / self.n_tokens if self.n_tokens else math.nan

    @property
    def perplexity(self) -> float:
        return perplexity(self.loss)

    @property
    def accuracy(self) -> float:
        """Share of real target tokens predicted right (argmax under teacher forcing)."""
        return self.correct / self.n_tokens if self.n_tokens else math.nan


@torch.no_grad()
def teacher_forced_scores(
    model: EncoderDecoder,
    batches: Iterable[Batch],
    *,
    precision: Precision | None = None,
    stop: Callable[[], bool] | None = None,
) -> Scores:
    """Loss and accuracy sums over the real target tokens of ``batches``, in eval mode.

    Args:
        model: any :class:`padless.models.base.EncoderDecoder`; it is put in eval mode for
            the pass and back in its previous mode afterwards.
        batches: batches on any device (moved to the model's).
        precision: run the model under its autocast (None: as the weights are); the loss is
            float32 either way.
        stop: asked before every batch; True ends the pass there (``Scores.stopped``): a
            long validation must not keep a stop signal waiting for minutes.
    """
    was_training = model.training
    model.eval()
    device = model.device
    loss_sum, correct, n_tokens = 0.0, 0, 0
    try:
        for batch in batches:
            if stop is not None and stop():
                return Scores(loss_sum, correct, n_tokens, stopped=True)
            batch = batch.to(device)
            targets = batch.real_targets()
            with nullcontext() if precision is None else precision.autocast(device):
                states = model.target_states(batch)  # [N, H], real tokens only
                for start in range(0, states.shape[0], SCORING_ROWS):
                    logits = model.output(states[start : start + SCORING_ROWS])
                    rows = targets[start : start + SCORING_ROWS]
                    loss_sum += F.cross_entropy(logits.float(), rows, reduction="sum").item()
                    correct += int((logits.argmax(dim=-1) == rows).sum())
            n_tokens += batch.n_tokens
    finally:
        model.train(was_training)
    return Scores(loss_sum, correct, n_tokens)


def corpus_scores(
    model: EncoderDecoder, pairs: Sequence[IdPair], *, batch_size: int = 64
) -> Scores:
    """Teacher-forced scores summed over the real target tokens of ``pairs`` (EOS included).

    Pairs are batched by length so the batches carry little padding (padding costs nothing
    in the loss, only in time); pairs with an empty source are left out.
    """
    ordered = sorted((p for p in pairs if p[0]), key=lambda p: (len(p[0]), len(p[1])))
    index_lists = (range(start, min(start + batch_size, len(ordered)))
                   for start in range(0, len(ordered), batch_size))
    return teacher_forced_scores(model, make_batches(ordered, index_lists,
                                                     specials=model.specials))


@dataclass(frozen=True)
class PairScore:
    """The model's log-probability of one pair's target given its source.

    Attributes:
        log_prob: ``sum_t log p(y_t | y_<t, x)`` over the target's tokens and its EOS (nats).
        tokens: those tokens (EOS included).
    """

    log_prob: float
    tokens: int

    @property
    def mean(self) -> float:
        """The log-probability per token."""
        return self.log_prob / self.tokens


@torch.no_grad()
def pair_scores(model: EncoderDecoder, pairs: Sequence[IdPair], *,
                batch_size: int = 64) -> list[PairScore]:
    """Each pair's :class:`PairScore`, in input order: teacher-forced, pad-free (only the real
    target tokens are projected to the vocabulary), in length-sorted batches; their summed
    ``-log_prob`` over the summed ``tokens`` is :func:`corpus_scores`' loss. Every source must
    hold a token."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(pairs)), key=lambda i: (len(pairs[i][0]), len(pairs[i][1])))
    scores: list[PairScore | None] = [None] * len(pairs)
    try:
        for start in range(0, len(order), batch_size):
            chosen = order[start : start + batch_size]
            batch = Batch.from_pairs([pairs[i] for i in chosen], specials=model.specials,
                                     batch_first=True).to(model.device)
            states = model.target_states(batch)  # [N, H]: each pair's tokens in a row
            targets = batch.real_targets()
            per_token = torch.cat([
                -F.cross_entropy(model.output(states[s : s + SCORING_ROWS]).float(),
                                 targets[s : s + SCORING_ROWS], reduction="none").double()
                for s in range(0, states.shape[0], SCORING_ROWS)])
            lengths = batch.tgt_mask.sum(dim=1).tolist()
            for i, row in zip(chosen, per_token.split(lengths), strict=True):
                scores[i] = PairScore(float(row.sum()), len(row))
    finally:
        model.train(was_training)
    return scores
