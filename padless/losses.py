"""Masked sequence losses: padding never counts, never costs, never NaNs.

Every loss here first selects the real tokens (``valid_mask`` True), then computes only
those rows; pad positions are never read, so whatever sits there (garbage logits, NaN,
``-100`` target ids) changes neither the loss nor any gradient, and the gradient at pads is
exactly zero.

Layouts: scores are ``[..., V]`` whose leading shape equals ``target``'s: time-major
``[T, B]`` (default), batch-major ``[B, T]`` (``batch_first=True``) or one decoding step
``[B]``. The layout only matters for the ``"sequence"`` and ``"timestep"`` reductions.

Reductions (``N`` = number of real tokens):

- ``"mean"``: sum over real tokens / ``N``, the true per-token mean (0 when ``N == 0``).
- ``"sum"``: sum over real tokens. Divide by a *global* token count to keep gradient
  accumulation and multi-process training exact (see ``docs/losses.md``).
- ``"sequence"``: mean over non-empty sequences of each sequence's per-token mean.
- ``"timestep"``: the PyTorch chatbot tutorial's objective, the sum over time steps of each
  step's per-token mean. Kept for comparison; it weighs tokens unequally (a token at a late
  step, where few sequences are still running, counts more).
- ``"none"``: per-position losses shaped like ``target``, exactly 0 at pads.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from padless._chunked_ce import chunked_linear_cross_entropy
from padless._tokens import REDUCTIONS, LossOutput, reduce_losses, select_tokens

__all__ = [
    "LossOutput",
    "REDUCTIONS",
    "masked_nll_loss",
    "masked_cross_entropy",
    "masked_linear_cross_entropy",
]

# How far above 0 a log-probability may be through rounding (log_softmax's never is on CPU)
# before masked_nll_loss takes its input for probabilities.
LOG_PROB_TOLERANCE = 1e-4


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Log-softmax runs in float32 at least (bf16/fp16 are upcast), float64 stays float64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _token_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, label_smoothing: float, focal_gamma: float
) -> torch.Tensor:
    """Per-row cross-entropy of ``logits [N, V]`` against ``target [N]`` -> ``[N]``."""
    log_probs = F.log_softmax(logits.to(_compute_dtype(logits.dtype)), dim=-1)
    nll = -log_probs.gather(1, target.unsqueeze(1)).squeeze(1)
    loss = nll
    if label_smoothing > 0:
        # F.cross_entropy's convention: eps/V of the mass on every class.
        loss = (1.0 - label_smoothing) * nll - label_smoothing * log_probs.mean(dim=-1)
    if focal_gamma > 0:
        loss = (-torch.expm1(-nll)).pow(focal_gamma) * loss
    return loss


def _check_options(fn: str, label_smoothing: float, focal_gamma: float) -> None:
    # Written so that NaN fails too: every comparison with NaN is False.
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{fn}: label_smoothing must be in [0, 1], got {label_smoothing}")
    if not 0.0 <= focal_gamma < math.inf:
        raise ValueError(f"{fn}: focal_gamma must be finite and >= 0, got {focal_gamma}")


def _check_scores(fn: str, name: str, scores: torch.Tensor) -> None:
    if not isinstance(scores, torch.Tensor) or not scores.dtype.is_floating_point:
        kind = scores.dtype if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise TypeError(f"{fn}: {name} must be a floating-point tensor, got {kind}")


def masked_nll_loss(
    log_probs: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    pad_id: int | None = None,
    reduction: str = "mean",
    batch_first: bool = False,
) -> LossOutput:
    """Negative log-likelihood of ``target`` under ``log_probs``, over real tokens only.

    The successor of the tutorial's ``maskNLLLoss``; pass log-probabilities (from
    ``log_softmax``), not probabilities: a positive value at a real target (a log-probability
    is never above 0) raises. Prefer :func:`masked_cross_entropy` on logits.

    Args:
        log_probs: ``[T, B, V]`` (``[B, T, V]`` with ``batch_first``, or ``[B, V]``).
        target: ``[T, B]`` integer ids (``[B, T]``, or ``[B]``), matching ``log_probs``.
        mask: valid mask shaped like ``target``; bool, uint8 or int, non-zero = real token.
        pad_id: with ``mask=None``, the mask is ``target != pad_id``.
        reduction: one of ``REDUCTIONS`` (see the module docstring).
        batch_first: layout of 2-D inputs; matters for ``"sequence"``/``"timestep"``.

    Returns:
        ``LossOutput(loss, n_tokens)``.

    Raises:
        ValueError: on bad shapes, ids or reduction, or a positive value at a real target
            (probabilities passed for log-probabilities).
    """
    fn = "masked_nll_loss"
    _check_scores(fn, "log_probs", log_probs)
    sel = select_tokens(fn, log_probs.shape, target, mask, pad_id, reduction, batch_first)
    rows = log_probs.reshape(-1, log_probs.shape[-1]).index_select(0, sel.index)
    rows = rows.to(_compute_dtype(rows.dtype))
    per_token = -rows.gather(1, sel.target.unsqueeze(1)).squeeze(1)
    if per_token.numel():
        lowest = float(per_token.detach().min())  # NaN compares False: it is let through
        if lowest < -LOG_PROB_TOLERANCE:
            raise ValueError(
                f"{fn}: log_probs holds {-lowest:.4g} at a real target, and a log-probability "
                "is never above 0: pass log_softmax(logits) (or use masked_cross_entropy on "
                "the logits), not probabilities"
            )
    return reduce_losses(per_token, sel, reduction, batch_first)


def masked_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    pad_id: int | None = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    focal_gamma: float = 0.0,
    batch_first: bool = False,
) -> LossOutput:
    """Cross-entropy of ``logits`` against ``target`` over real tokens only.

    Computes ``log_softmax`` (never ``log(softmax)``) in float32 at least, on the real
    tokens' rows only.

    Args:
        logits: ``[T, B, V]`` (``[B, T, V]`` with ``batch_first``, or ``[B, V]``).
        target: ``[T, B]`` integer ids (``[B, T]``, or ``[B]``), matching ``logits``.
        mask: valid mask shaped like ``target``; bool, uint8 or int, non-zero = real token.
        pad_id: with ``mask=None``, the mask is ``target != pad_id``.
        reduction: one of ``REDUCTIONS`` (see the module docstring).
        label_smoothing: ``eps`` in ``[0, 1]``; as ``F.cross_entropy``, ``eps/V`` of the
            target mass goes to every class.
        focal_gamma: ``gamma >= 0``; each token's loss is scaled by ``(1 - p_t) ** gamma``.
        batch_first: layout of 2-D inputs; matters for ``"sequence"``/``"timestep"``.

    Returns:
        ``LossOutput(loss, n_tokens)``.
    """
    fn = "masked_cross_entropy"
    _check_scores(fn, "logits", logits)
    _check_options(fn, label_smoothing, focal_gamma)
    sel = select_tokens(fn, logits.shape, target, mask, pad_id, reduction, batch_first)
    rows = logits.reshape(-1, logits.shape[-1]).index_select(0, sel.index)
    per_token = _token_cross_entropy(rows, sel.target, label_smoothing, focal_gamma)
    return reduce_losses(per_token, sel, reduction, batch_first)


def masked_linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    bias: torch.Tensor | None = None,
    pad_id: int | None = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    chunk_size: int | None = None,
    batch_first: bool = False,
) -> LossOutput:
    """``masked_cross_entropy(hidden @ weight.T + bias, ...)`` projecting real tokens only.

    Pads are never projected to the vocabulary, and the ``[N, V]`` logits of the ``N`` real
    tokens never exist at once: rows go through the projection and the softmax ``chunk_size``
    at a time, in the forward and in the backward pass, so at most ``chunk_size x V`` logits
    are alive (plus parameter-sized gradient accumulators). Gradients for ``hidden``,
    ``weight`` and ``bias`` are exact. With ``"sum"``/``"mean"`` it costs three matmuls like
    the unfused loss (the gradients are finished during the forward pass, so evaluate under
    ``torch.no_grad()``); the other reductions recompute each chunk's logits in the backward
    pass (four matmuls).

    Under autocast the matmuls run in the autocast dtype (as ``F.linear`` would) while the
    logits, log-sum-exp, losses and the gradient sums across chunks stay in float32.

    Args:
        hidden: ``[T, B, H]`` (``[B, T, H]`` with ``batch_first``, or ``[B, H]``).
        weight: ``[V, H]``, as ``nn.Linear.weight``.
        target, mask, pad_id, reduction, label_smoothing, batch_first: as in
            :func:`masked_cross_entropy`.
        bias: optional ``[V]``.
        chunk_size: rows of logits computed at once, a positive int; ``None`` picks the
            largest that keeps one chunk of logits within 32 MiB
            (``padless._chunked_ce.LOGITS_BUDGET_BYTES``): 256 rows of a 32,000-word
            vocabulary in float32.

    Returns:
        ``LossOutput(loss, n_tokens)``.
    """
    fn = "masked_linear_cross_entropy"
    _check_scores(fn, "hidden", hidden)
    _check_scores(fn, "weight", weight)
    if bias is not None:
        _check_scores(fn, "bias", bias)
    _check_options(fn, label_smoothing, 0.0)
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        raise ValueError(
            f"{fn}: weight of shape {tuple(weight.shape)} does not fit hidden of shape "
            f"{tuple(hidden.shape)}; weight must be [V, H] with H = hidden.shape[-1]"
        )
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(
            f"{fn}: bias of shape {tuple(bias.shape)} does not match weight's vocabulary "
            f"size {weight.shape[0]}; bias must be [V]"
        )
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
    ):
        raise ValueError(f"{fn}: chunk_size must be a positive int or None, got {chunk_size!r}")
    score_shape = torch.Size((*hidden.shape[:-1], weight.shape[0]))
    sel = select_tokens(fn, score_shape, target, mask, pad_id, reduction, batch_first)
    rows = hidden.reshape(-1, hidden.shape[-1]).index_select(0, sel.index)
    # Same per-token values as _token_cross_entropy(F.linear(rows, weight, bias), ...), chunked.
    per_token = chunked_linear_cross_entropy(
        rows,
        weight,
        bias,
        sel.target,
        label_smoothing=label_smoothing,
        chunk_size=chunk_size,
        acc_dtype=_compute_dtype(torch.promote_types(hidden.dtype, weight.dtype)),
        # "sum"/"mean" give every token the same upstream gradient (see _chunked_ce).
        uniform_grad=reduction in ("sum", "mean"),
    )
    return reduce_losses(per_token, sel, reduction, batch_first)
