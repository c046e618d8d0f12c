"""Going on from a checkpoint: ``padless train --resume``.

A resumed run must be the run it continues: the same model settings and text pipeline, and,
for an exact continuation, the same data order. :func:`checkpoint_to_resume` checks the first
two; :func:`restore` puts back the weights, the optimiser, the schedule, the data position,
the random streams and the train state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch
from torch import nn

from padless.data.loader import TrainingBatches
from padless.data.text import TextProcessor
from padless.models import ModelConfig
from padless.runs.checkpoint import Checkpoint, TrainState
from padless.runs.directory import RunDirectory
from padless.runtime.errors import UserError
from padless.training.distributed import World
from padless.training.rng import set_rng_state

__all__ = ["checkpoint_to_resume", "restore"]


def checkpoint_to_resume(run: RunDirectory, model_config: ModelConfig, text: TextProcessor,
                         device: torch.device) -> Checkpoint:
    """``run``'s ``latest.pt``, checked against the model settings and text it resumes with.

    Raises:
        UserError: if it is missing or damaged, holds weights only (``padless average``'s
            output, a kept checkpoint), or its model or text differ.
    """
    path = run.latest
    checkpoint = Checkpoint.load(path, map_location=device)
    if checkpoint.optimizer is None or checkpoint.sampler is None:
        raise UserError(f"{path}: holds weights only (no optimiser state or data position, as "
                        "padless average and the kept checkpoints write), so it cannot be "
                        "resumed; to train on from these weights, start a new run with "
                        "--init-from a run holding them as best.pt")
    if checkpoint.model_config() != model_config:
        raise UserError(f"{path}: the model settings differ from the checkpoint's")
    checkpoint.check_text(text, path)
    return checkpoint


def restore(checkpoint: Checkpoint, run: RunDirectory, world: World, *, model: nn.Module,
            optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
            scaler: torch.amp.GradScaler | None, batches: TrainingBatches,
            say: Callable[[str], object]) -> TrainState:
    """Go on from ``checkpoint``: weights, optimiser, schedule, data position, random streams
    (those of the same process count); returns the train state to go on with.

    Raises:
        UserError: if the data position cannot be restored exactly.
    """
    model.load_state_dict(checkpoint.weights)
    optimizer.load_state_dict(checkpoint.optimizer)
    scheduler.load_state_dict(checkpoint.scheduler)
    if scaler is not None and checkpoint.scaler is not None:
        scaler.load_state_dict(checkpoint.scaler)
    try:
        notice = batches.load_state_dict(checkpoint.sampler)
    except ValueError as e:  # resuming would repeat or skip pairs
        raise UserError(f"{run.latest}: cannot resume exactly ({e}); resume with "
                        "the dataset, train.seed, train.max_length, train.batch_size and "
                        "train.max_tokens the run started with, or start a new run") from None
    if notice:
        say(f"notice: {notice}")
    if checkpoint.world_size == world.world_size:
        set_rng_state(checkpoint.rng[world.rank])
    else:
        say(f"warning: resuming {checkpoint.world_size} processes' run with "
            f"{world.world_size}: random streams restart, the result will not be bit-exact")
    return replace(checkpoint.state)
