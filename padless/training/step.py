"""One optimiser step: the gradient of a step's micro-batches, the optimiser, the schedule.

The pieces :mod:`padless.training.trainer`'s loop calls, kept apart so they can be tested alone.

Normalisation: per optimiser step, count the real target tokens of its ``accumulate``
micro-batches over all processes, back-propagate each micro-batch's *summed* loss scaled by
``world_size / step_tokens`` (DDP averages gradients over processes; the factor turns that
into a sum). The gradient is then exactly that of the per-token mean over the whole step,
whatever the split into micro-batches and processes (``docs/losses.md``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import nullcontext

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from padless.data.batch import Batch
from padless.models import EncoderDecoder
from padless.runtime.precision import Precision
from padless.training.config import TrainConfig
from padless.training.distributed import World, all_reduce

__all__ = ["StepLoss", "accumulate_gradients", "lr_factor", "make_optimizer", "update_weights"]


class StepLoss(nn.Module):
    """``model.loss`` (summed over real tokens) as ``forward``: DDP only hooks ``forward``."""

    def __init__(self, model: EncoderDecoder, tc: TrainConfig) -> None:
        super().__init__()
        self.model = model
        self.tc = tc

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.model.loss(
            batch.with_word_dropout(self.tc.word_dropout, self.model.specials.unk),
            reduction="sum",
            teacher_forcing_ratio=self.tc.teacher_forcing_ratio,
            teacher_forcing=self.tc.teacher_forcing,
            label_smoothing=self.tc.label_smoothing,
        ).loss


def accumulate_gradients(
    step_loss: nn.Module,
    micro_batches: Sequence[Batch],
    world: World,
    precision: Precision,
    scaler: torch.amp.GradScaler | None = None,
) -> tuple[torch.Tensor, int]:
    """Back-propagate one optimiser step's micro-batches into ``.grad``.

    Afterwards ``.grad`` is the gradient of (summed token loss of the global step) / (real
    target tokens of the global step): K micro-batches, or N processes, give the gradient
    of one big batch (times the ``scaler``'s scale, if any: ``scaler.unscale_`` removes it).
    The forward passes run under ``precision``'s autocast.

    Returns:
        ``(this process's summed loss, detached; the step's global token count)``.
    """
    local_tokens = sum(b.n_tokens for b in micro_batches)
    (step_tokens,) = all_reduce(world, [float(local_tokens)])
    scale = world.world_size / step_tokens
    loss_sum = torch.zeros((), device=world.device)
    for i, batch in enumerate(micro_batches):
        # Gradients are all-reduced once per step, on the last micro-batch's backward.
        defer = isinstance(step_loss, DistributedDataParallel) and i < len(micro_batches) - 1
        with step_loss.no_sync() if defer else nullcontext():
            with precision.autocast(world.device):
                loss = step_loss(batch.to(world.device))
            scaled = loss * scale
            (scaled if scaler is None else scaler.scale(scaled)).backward()
        loss_sum += loss.detach().float()
    return loss_sum, int(step_tokens)


def update_weights(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    clip: float | None,
    scaler: torch.amp.GradScaler | None = None,
) -> float:
    """Clip the gradient to norm ``clip`` (None: no clipping) and take the optimiser step,
    unless the gradient is inf/NaN (an overflow or a bad batch would poison every weight):
    then the step is skipped (the same on every process: gradients are all-reduced).

    With an fp16 ``scaler``, the gradient is unscaled first and the scaler's scale is then
    updated (lowered after an overflow, raised after a run of good steps).

    Returns:
        the gradient norm before clipping (inf or NaN: the step was skipped).
    """
    if scaler is not None:
        scaler.unscale_(optimizer)
    norm = float(torch.nn.utils.clip_grad_norm_(
        model.parameters(), clip if clip is not None else math.inf))  # inf: norm only
    if math.isfinite(norm):
        if scaler is None:
            optimizer.step()
        else:
            scaler.step(optimizer)
    if scaler is not None:
        scaler.update()
    return norm


def lr_factor(step: int, tc: TrainConfig) -> float:
    """Learning-rate multiplier for optimiser step ``step`` (0-based): warm-up, then decay."""
    if step < tc.warmup_steps:
        return (step + 1) / tc.warmup_steps
    if tc.decay == "inverse_sqrt":
        return max(tc.min_lr_ratio, math.sqrt(max(tc.warmup_steps, 1) / (step + 1)))
    end = tc.max_steps if tc.decay_steps is None else tc.decay_steps
    progress = min(1.0, (step - tc.warmup_steps) / max(1, end - tc.warmup_steps))
    if tc.decay == "linear":
        return 1.0 - (1.0 - tc.min_lr_ratio) * progress
    if tc.decay == "cosine":
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return tc.min_lr_ratio + (1.0 - tc.min_lr_ratio) * cosine
    return 1.0


def make_optimizer(
    model: EncoderDecoder, tc: TrainConfig, device: torch.device
) -> torch.optim.Adam:
    """Adam with the decoder at ``lr * decoder_lr_ratio``; fused kernels on CPU and CUDA."""
    groups = model.parameter_groups()
    return torch.optim.Adam(
        [
            {"params": groups["encoder"], "lr": tc.lr},
            {"params": groups["decoder"], "lr": tc.lr * tc.decoder_lr_ratio},
        ],
        betas=tc.betas,
        weight_decay=tc.weight_decay,
        fused=device.type in ("cpu", "cuda"),  # torch 2.13 has fused Adam for both
    )
