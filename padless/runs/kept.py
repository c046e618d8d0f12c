"""The checkpoints a run keeps as it validates (``train.keep_best`` / ``train.keep_last``), and
the mean of some of them: :func:`keep_checkpoint`, :func:`kept_checkpoints`,
:func:`average_checkpoints`.

``RUN_DIR/checkpoints/kept.json`` lists them, ``[{"step": 1200, "loss": 3.95}, ...]``, and
``step-00001200.pt`` holds each one's weights (weights-only checkpoints). Only files that the
index listed are ever deleted: a user's ``step-00001200-backup.pt`` beside them stays.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from padless.runs.checkpoint import Checkpoint
from padless.runs.directory import RunDirectory
from padless.runtime.errors import UserError
from padless.runtime.files import write_json_atomic

__all__ = ["KeptCheckpoint", "average_checkpoints", "keep_checkpoint", "kept_checkpoints"]


@dataclass(frozen=True)
class KeptCheckpoint:
    """A kept checkpoint: its step, validation loss and file (weights only)."""

    step: int
    loss: float
    path: Path


def kept_checkpoints(run: RunDirectory) -> list[KeptCheckpoint]:
    """The run's kept checkpoints, oldest first (empty if none were kept).

    Raises:
        UserError: naming the index, if it is damaged (not a list of integer steps with
            finite losses).
    """
    index = run.kept_index
    if not index.is_file():
        return []
    try:
        entries = json.loads(index.read_text(encoding="utf-8"))
        if not isinstance(entries, list):
            raise TypeError("not a list")
        kept = []
        for entry in entries:
            step, loss = entry["step"], entry["loss"]
            if isinstance(step, bool) or not isinstance(step, int) or step < 0:
                raise ValueError(f"step {step!r} is not a step number")
            if isinstance(loss, bool) or not isinstance(loss, int | float) or not math.isfinite(
                    loss):
                raise ValueError(f"loss {loss!r} of step {step} is not a finite number")
            kept.append(KeptCheckpoint(step, float(loss), run.kept_file(step)))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, RecursionError,
            UnicodeDecodeError) as e:
        raise UserError(f"{index}: a damaged index of kept checkpoints ({e}); delete it "
                        "(and the step-*.pt files beside it) to start the list afresh") from None
    return sorted(kept, key=lambda k: k.step)


def keep_checkpoint(
    run: RunDirectory, checkpoint: Checkpoint, *, keep_best: int, keep_last: int
) -> None:
    """Add ``checkpoint`` (validated: ``checkpoint.valid`` holds its loss) to the kept ones,
    weights only, and delete those that are neither among the ``keep_best`` lowest
    validation losses nor among the ``keep_last`` newest.

    Kept checkpoints from a later step than ``checkpoint`` are forgotten first: they come
    from a run that was interrupted and resumed from an earlier state.
    """
    if checkpoint.valid is None:
        raise ValueError("keep_checkpoint: the checkpoint has no validation loss")
    run.kept_dir.mkdir(parents=True, exist_ok=True)
    listed = kept_checkpoints(run)
    kept = [k for k in listed if k.step < checkpoint.step]
    new = KeptCheckpoint(checkpoint.step, float(checkpoint.valid["loss"]),
                         run.kept_file(checkpoint.step))
    checkpoint.weights_only().save(new.path)
    kept.append(new)
    best = sorted(kept, key=lambda k: (k.loss, -k.step))[:keep_best]
    last = kept[-keep_last:] if keep_last else []
    chosen = {k.step for k in best + last}
    write_json_atomic(run.kept_index,
                      [{"step": k.step, "loss": k.loss} for k in kept if k.step in chosen])
    for gone in {k.path for k in [*listed, new] if k.step not in chosen}:
        gone.unlink(missing_ok=True)


def average_checkpoints(paths: Sequence[str | os.PathLike]) -> Checkpoint:
    """One weights-only checkpoint whose weights are the mean of the ``paths`` ' decoding
    weights (float64 sums, cast back), as fairseq's ``average_checkpoints`` does.

    The other fields (config, vocabulary, train state) are the newest checkpoint's.

    Raises:
        UserError: naming a file that cannot be read, or whose model, vocabulary or text
            settings differ from the first's.
    """
    if not paths:
        raise UserError("average_checkpoints: no checkpoint to average")
    total: dict[str, torch.Tensor] = {}
    newest = first = None
    for path in paths:
        checkpoint = Checkpoint.load(path)
        weights = checkpoint.decoding_weights
        if first is None:
            first = checkpoint
        elif (checkpoint.model_config() != first.model_config()
              or checkpoint.vocab != first.vocab or checkpoint.text != first.text
              or weights.keys() != first.decoding_weights.keys()):
            raise UserError(f"{path}: another model, vocabulary or text than {paths[0]}; "
                            "only checkpoints of one run can be averaged")
        for name, tensor in weights.items():
            if tensor.is_floating_point():
                total[name] = total.get(name, 0) + tensor.double()
            else:  # integer buffers (counters) are not averaged: the newest is kept
                total[name] = tensor
        if newest is None or checkpoint.step >= newest.step:
            newest = checkpoint
    dtypes = {name: t.dtype for name, t in first.decoding_weights.items()}
    averaged = {name: (t / len(paths)).to(dtypes[name]) if dtypes[name].is_floating_point
                else t for name, t in total.items()}
    return replace(newest.weights_only(), weights=averaged, ema_weights=None, valid=None)
