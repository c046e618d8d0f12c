"""Repetition control for every search: which tokens would repeat an n-gram
(``no_repeat_ngram``, banned by :func:`padless.decoding.search.restrict`) and the
repetition penalty (:func:`penalize_repetitions`); see :mod:`padless.decoding.search` for
what each does to the choice and to the scores.

A hypothesis' tokens so far are its ``history``: ``[R, t]`` ids, one row per hypothesis,
left-aligned; with ``lengths [R]`` row ``r`` holds ``lengths[r]`` tokens and the rest is
padding (rows at different steps, as in continuous batching).
"""

from __future__ import annotations

import torch

__all__ = ["penalize_repetitions", "repeated_ngram_bans"]


def penalize_repetitions(
    log_probs: torch.Tensor,
    history: torch.Tensor,
    penalty: float,
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """``log_probs [R, V]`` with every id in row ``r`` of ``history [R, t]`` multiplied by
    ``penalty`` (>= 1: a log-probability is <= 0, so repeated tokens become less likely).

    ``lengths [R]``: when rows hold different numbers of tokens, row ``r``'s are its first
    ``lengths[r]`` (the rest is padding); None: all ``t``.
    """
    if penalty == 1.0 or history.size(1) == 0:
        return log_probs
    index = history
    if lengths is not None:  # padding points at the row's first token: it gets the same value
        real = torch.arange(history.size(1), device=history.device) < lengths.unsqueeze(1)
        index = torch.where(real, history, history[:, :1])
        penalised = log_probs.gather(1, index) * penalty
        unpenalised_rows = lengths == 0  # nothing seen: leave the row as it is
        penalised = torch.where(
            unpenalised_rows.unsqueeze(1), log_probs.gather(1, index), penalised
        )
    else:
        penalised = log_probs.gather(1, index) * penalty
    # only the seen ids are touched: no [R, V] mask, and a repeated id writes one value
    return log_probs.clone().scatter_(1, index, penalised)


def repeated_ngram_bans(
    history: torch.Tensor, n: int, lengths: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rows, ids)``: id ``ids[i]`` would complete, in row ``rows[i]`` of ``history [R, t]``
    (its first ``lengths[r]`` tokens; None: all), an ``n``-gram that row already holds (its
    last ``n - 1`` tokens occurred before)."""
    t = history.size(1)
    if n < 1 or t < n:
        empty = history.new_empty(0)
        return empty, empty
    if lengths is None:
        lengths = torch.full((history.size(0),), t, dtype=torch.long, device=history.device)
    grams = history.unfold(1, n, 1)  # [R, t - n + 1, n]
    # the last n - 1 tokens of each row: what its next n-gram starts with
    at = (lengths - n + 1).clamp(min=0).unsqueeze(1) + torch.arange(n - 1, device=history.device)
    suffix = history.gather(1, at.clamp(max=t - 1)).unsqueeze(1)  # [R, 1, n - 1]
    inside = torch.arange(grams.size(1), device=history.device) <= (lengths - n).unsqueeze(1)
    rows, starts = ((grams[:, :, :-1] == suffix).all(dim=2) & inside).nonzero(as_tuple=True)
    return rows, grams[rows, starts, -1]
