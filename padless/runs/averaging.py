"""Checkpoint averaging for a run: :func:`average_run`, what ``padless average`` does.

The mean of the weights of a few checkpoints near the end of training (fairseq's
``average_checkpoints``; JoeyNMT keeps the best ones for it) usually sits lower in the loss
than any one of them. The run keeps them with ``train.keep_best`` / ``train.keep_last``
(:mod:`padless.runs.kept`). This is the mean of checkpoints written at validations, not the
moving average of the weights that a run keeps with ``train.ema_decay``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from padless.data.dataset import PreparedData
from padless.models.scoring import corpus_scores
from padless.runs.checkpoint import Checkpoint
from padless.runs.directory import RunDirectory
from padless.runs.info import read_run_info
from padless.runs.kept import KeptCheckpoint, average_checkpoints, kept_checkpoints
from padless.runs.outputs import check_weights_file
from padless.runtime.errors import UserError

__all__ = ["AverageResult", "average_run"]


@dataclass(frozen=True)
class AverageResult:
    """What :func:`average_run` wrote and how it scores.

    Attributes:
        path: the averaged checkpoint.
        inputs: the kept checkpoints averaged (their steps and validation losses).
        valid_loss: the averaged model's validation loss per token (None without data).
        best_loss: ``best.pt``'s validation loss, to compare with (None if unknown).
        notice: why it was not scored, when the run's recorded data is gone (else None).
    """

    path: Path
    inputs: list[KeptCheckpoint]
    valid_loss: float | None
    best_loss: float | None
    notice: str | None = None


def _choose(run: RunDirectory, best: int | None, last: int | None) -> list[KeptCheckpoint]:
    if (best is None) == (last is None):
        raise UserError("average: give exactly one of --best K and --last K")
    k, how = (best, "best") if best is not None else (last, "last")
    if k < 1:
        raise UserError(f"average: --{how} must be at least 1, got {k}")
    kept = kept_checkpoints(run)
    chosen = sorted(kept, key=lambda c: (c.loss, -c.step))[:k] if best else kept[-k:]
    if len(chosen) < k:
        raise UserError(
            f"{run.path}: {len(kept)} kept checkpoint(s), --{how} {k} needs {k}; train with "
            f"--set train.keep_{how}={k} (the run keeps them as it validates)")
    return sorted(chosen, key=lambda c: c.step)


def _output(run: RunDirectory, out: str | os.PathLike | None) -> Path:
    """Where to write: ``averaged.pt`` by default; never over another file of a run or a
    dataset, nor over anything but a checkpoint (:func:`~padless.runs.outputs
    .check_weights_file`)."""
    path = run.checkpoint("averaged") if out is None else Path(out)
    check_weights_file(path, run)
    return path


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
        UserError: naming what is wrong (too few kept checkpoints, an unreadable file, an
            ``out`` that is one of the run's files, data of another vocabulary), before the
            average is written.
    """
    run = RunDirectory(run_dir)
    inputs = _choose(run, best, last)
    path = _output(run, out)
    averaged = average_checkpoints([c.path for c in inputs])
    valid_loss, notice = None, None
    if data_dir is None and (recorded := read_run_info(run).data_dir) is not None:
        if Path(recorded).is_dir():
            data_dir = recorded
        else:
            notice = f"the run's data {recorded} is gone: not scored (give --data DATA_DIR)"
    if data_dir is not None:
        data = PreparedData.load(data_dir)
        if data.vocab.to_dict() != averaged.vocab:
            raise UserError(f"{data_dir}: its vocabulary differs from the run's; score the "
                            "average on data prepared with the run's vocabulary (or leave "
                            "--data out)")
        if data.splits["valid"]:
            scores = corpus_scores(averaged.build_model(), data.splits["valid"])
            valid_loss = scores.loss
            averaged = replace(averaged, valid=scores.metrics())
    averaged.save(path)
    best_loss = None
    if run.best.is_file() and (valid := Checkpoint.load(run.best, mmap=True).valid) is not None:
        best_loss = float(valid["loss"])
    return AverageResult(path, inputs, valid_loss, best_loss, notice)
