"""Which tokens of a batch a masked loss counts, and how their losses are reduced: the part
every loss of :mod:`padless.losses` shares (argument checks, the selection of the real
tokens, the reductions)."""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["REDUCTIONS", "LossOutput", "Selection", "reduce_losses", "select_tokens"]

REDUCTIONS = ("mean", "sum", "sequence", "timestep", "none")


class LossOutput(NamedTuple):
    """What every masked loss returns: ``loss, n_tokens = masked_...(...)``.

    Attributes:
        loss: scalar tensor (or ``target``-shaped for ``reduction="none"``).
        n_tokens: number of real (non-pad) target tokens that entered the loss.
    """

    loss: torch.Tensor
    n_tokens: int


class Selection(NamedTuple):
    """The real tokens of a batch: flat positions (into ``target.reshape(-1)``) and ids."""

    index: torch.Tensor  # [N] long, ascending
    target: torch.Tensor  # [N] long
    shape: torch.Size  # target's shape


def select_tokens(
    fn: str,
    score_shape: torch.Size,
    target: torch.Tensor,
    mask: torch.Tensor | None,
    pad_id: int | None,
    reduction: str,
    batch_first: bool,
) -> Selection:
    """Validate the arguments of a masked loss and select its real tokens.

    ``score_shape`` is ``[..., V]``; all checks run before any work on the scores.
    """
    _check_target(fn, score_shape, target, reduction)
    valid = _valid_mask(fn, target, mask, pad_id)
    index = valid.reshape(-1).nonzero().squeeze(1)
    ids = target.reshape(-1).index_select(0, index).long()
    vocab = score_shape[-1]
    if ids.numel():
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= vocab:
            bad = lo if lo < 0 else hi
            where = index[(ids == bad).nonzero()[0, 0]].item()
            position = tuple(int(i) for i in torch.unravel_index(torch.tensor(where), target.shape))
            raise ValueError(
                f"{fn}: target id {bad} at real position {position} is outside the "
                f"vocabulary [0, {vocab}); mark it as padding in the mask or fix the data"
            )
    return Selection(index, ids, target.shape)


def _check_target(
    fn: str, score_shape: torch.Size, target: torch.Tensor, reduction: str
) -> None:
    """The reduction is known, and ``target`` holds integer ids shaped like the scores."""
    if reduction not in REDUCTIONS:
        raise ValueError(
            f"{fn}: unknown reduction {reduction!r}; valid ones are {', '.join(REDUCTIONS)}"
        )
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"{fn}: target must be a tensor of token ids, got {type(target).__name__}")
    if target.dtype.is_floating_point or target.dtype.is_complex or target.dtype == torch.bool:
        raise TypeError(f"{fn}: target must hold integer token ids, got dtype {target.dtype}")
    if len(score_shape) < 1 or tuple(score_shape[:-1]) != tuple(target.shape):
        hint = ""
        if target.dim() == 2 and tuple(score_shape[:-1]) == tuple(target.shape)[::-1]:
            hint = (
                "; the scores look transposed relative to the target: use one layout for "
                "both (time-major [T, B, V] with [T, B], or batch_first=True with [B, T, V] "
                "and [B, T])"
            )
        elif len(score_shape) >= 2 and tuple(score_shape[:1]) + tuple(score_shape[2:]) == tuple(
            target.shape
        ):
            hint = (
                "; the class dimension must be last ([..., V]), not second as in "
                "F.cross_entropy's [N, V, T] layout"
            )
        raise ValueError(
            f"{fn}: scores of shape {tuple(score_shape)} do not match target of shape "
            f"{tuple(target.shape)}; scores must be [*target.shape, V]{hint}"
        )
    if reduction in ("sequence", "timestep") and target.dim() not in (1, 2):
        raise ValueError(
            f"{fn}: reduction {reduction!r} needs a [T, B] or [B, T] target (or [B] for one "
            f"step), got shape {tuple(target.shape)}"
        )
    if score_shape[-1] == 0:
        raise ValueError(f"{fn}: scores have an empty class dimension (shape {tuple(score_shape)})")


def _valid_mask(
    fn: str, target: torch.Tensor, mask: torch.Tensor | None, pad_id: int | None
) -> torch.Tensor:
    """True at the real tokens: ``mask != 0``, or ``target != pad_id`` without a mask."""
    if mask is None:
        if pad_id is None:
            raise ValueError(f"{fn}: give either mask (True at real tokens) or pad_id")
        valid = target != pad_id
    else:
        if not isinstance(mask, torch.Tensor):
            raise TypeError(f"{fn}: mask must be a tensor, got {type(mask).__name__}")
        if mask.dtype.is_floating_point or mask.dtype.is_complex:
            raise TypeError(
                f"{fn}: mask must be bool, uint8 or integer (non-zero = real token), "
                f"got {mask.dtype}"
            )
        if mask.shape != target.shape:
            raise ValueError(
                f"{fn}: mask of shape {tuple(mask.shape)} does not match target of shape "
                f"{tuple(target.shape)}"
            )
        if mask.device != target.device:
            mask = mask.to(target.device)
        valid = mask != 0
    return valid


def reduce_losses(
    per_token: torch.Tensor, sel: Selection, reduction: str, batch_first: bool
) -> LossOutput:
    """Reduce per-token losses ``[N]`` (in the order of ``sel.index``) to a LossOutput."""
    n = sel.index.numel()
    if reduction == "sum":
        return LossOutput(per_token.sum(), n)
    if reduction == "mean":
        # An empty sum is a differentiable zero, so an all-pad batch gives 0, not NaN.
        return LossOutput(per_token.sum() / max(n, 1), n)
    if reduction == "none":
        numel = sel.shape.numel()
        full = per_token.new_zeros(numel).index_copy(0, sel.index, per_token)
        return LossOutput(full.view(sel.shape), n)

    # "sequence" and "timestep": a [B] target is one time step of B sequences.
    if len(sel.shape) == 1:
        steps, batch = 1, sel.shape[0]
    elif batch_first:
        batch, steps = sel.shape
    else:
        steps, batch = sel.shape
    if batch_first and len(sel.shape) == 2:
        seq_of, step_of = sel.index // steps, sel.index % steps
    else:
        step_of, seq_of = sel.index // batch, sel.index % batch
    if reduction == "timestep":
        group, groups = step_of, steps
    else:
        group, groups = seq_of, batch
    counts = torch.bincount(group, minlength=groups).to(per_token.dtype)
    sums = per_token.new_zeros(groups).index_add(0, group, per_token)
    group_means = sums / counts.clamp(min=1)
    if reduction == "timestep":
        return LossOutput(group_means.sum(), n)
    return LossOutput(group_means.sum() / max(int((counts > 0).sum()), 1), n)
