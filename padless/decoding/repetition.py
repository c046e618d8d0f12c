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
    if lengths is None:
        seen = torch.zeros_like(log_probs, dtype=torch.bool).scatter_(1, history, True)
    else:
        real = torch.arange(history.size(1), device=history.device) < lengths.unsqueeze(1)
        counts = torch.zeros(log_probs.shape, dtype=torch.long, device=log_probs.device)
        seen = counts.scatter_add_(1, history, real.long()) > 0
    return torch.where(seen, log_probs * penalty, log_probs)


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
