"""Checkpoint averaging for a run: :func:`average_run`, what ``padless average`` does.

The mean of the weights of a few checkpoints near the end of training (fairseq's
``average_checkpoints``; JoeyNMT keeps the best ones for it) usually sits lower in the loss
than any one of them. The run keeps them with ``train.keep_best`` / ``train.keep_last``;
:func:`padless.training.checkpoint.average_checkpoints` does the averaging.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from padless.data.dataset import PreparedData
from padless.models.scoring import corpus_scores
from padless.runtime.errors import UserError
from padless.training.checkpoint import (
    Checkpoint,
    KeptCheckpoint,
    average_checkpoints,
    checkpoint_path,
    kept_checkpoints,
    read_run_info,
)

__all__ = ["AverageResult", "average_run"]


@dataclass(frozen=True)
class AverageResult:
    """What :func:`average_run` wrote and how it scores.

    Attributes:
        path: the averaged checkpoint.
        inputs: the kept checkpoints averaged (their steps and validation losses).
        valid_loss: the averaged model's validation loss per token (None without data).
        best_loss: ``best.pt``'s validation loss, to compare with (None if unknown).
    """

    path: Path
    inputs: list[KeptCheckpoint]
    valid_loss: float | None
    best_loss: float | None


def _choose(run_dir: Path, best: int | None, last: int | None) -> list[KeptCheckpoint]:
    if (best is None) == (last is None):
        raise UserError("average: give exactly one of --best K and --last K")
    k, how = (best, "best") if best is not None else (last, "last")
    if k < 1:
        raise UserError(f"average: --{how} must be at least 1, got {k}")
    kept = kept_checkpoints(run_dir)
    chosen = sorted(kept, key=lambda c: (c.loss, -c.step))[:k] if best else kept[-k:]
    if len(chosen) < k:
        raise UserError(
            f"{run_dir}: {len(kept)} kept checkpoint(s), --{how} {k} needs {k}; train with "
            f"--set train.keep_{how}={k} (the run keeps them as it validates)")
    return sorted(chosen, key=lambda c: c.step)


def average_run(
    run_dir: str | os.PathLike,
    *,
    best: int | None = None,
    last: int | None = None,
    out: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
) -> AverageResult:
    """Average the ``best`` lowest-validation-loss (or the ``last`` newest) kept checkpoints
    of ``run_dir`` into ``out`` (default ``RUN_DIR/averaged.pt``, which every command's
    ``--checkpoint averaged`` loads) and score it on the valid split of ``data_dir``
    (default: the run's own data, from ``run.json``), recorded in the checkpoint.

    Raises:
        UserError: naming what is missing (too few kept checkpoints, an unreadable file).
    """
    run_dir = Path(run_dir)
    inputs = _choose(run_dir, best, last)
    averaged = average_checkpoints([c.path for c in inputs])
    data_dir = data_dir or read_run_info(run_dir).get("data_dir")
    valid_loss = None
    if data_dir is not None and (valid := PreparedData.load(data_dir).splits["valid"]):
        scores = corpus_scores(averaged.build_model(), valid)
        valid_loss = scores.loss
        averaged = replace(averaged, valid={"loss": scores.loss, "ppl": scores.perplexity,
                                            "accuracy": scores.accuracy,
                                            "tokens": scores.n_tokens})
    path = Path(out) if out is not None else checkpoint_path(run_dir, "averaged")
    averaged.save(path)
    best_path, best_loss = checkpoint_path(run_dir, "best"), None
    if best_path.is_file() and (valid := Checkpoint.load(best_path).valid) is not None:
        best_loss = float(valid["loss"])
    return AverageResult(path, inputs, valid_loss, best_loss)
