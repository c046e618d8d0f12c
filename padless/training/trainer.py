# long: until the trainer is split by issue 19 (run directory layer, one loop)
"""The training loop behind ``padless train``: :func:`train` and the :class:`Trainer` it runs.

Per optimiser step: take ``accumulate`` micro-batches, back-propagate them so the gradient
is that of the per-token mean over the whole step across all processes
(:func:`padless.training.step.accumulate_gradients`), clip, step, schedule; log, validate,
checkpoint; stop on ``max_steps``, ``max_time``, early stopping, SIGINT or SIGTERM, or
with a ``UserError`` when the gradient stays inf/NaN. Rank 0 holds the run directory's lock
for the whole run (:mod:`padless.training.guards`).

Everything a run changes as it goes lives in :class:`TrainState` (saved in checkpoints);
the rest (model, optimiser, data) is set up once in :class:`Trainer`'s constructor.
"""

from __future__ import annotations

import math
import random
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from padless.data.batch import Batch, IdPair, make_batches
from padless.data.sampler import BucketBatchSampler
from padless.data.text import TextProcessor
from padless.models import build_model
from padless.models.scoring import Scores, perplexity, teacher_forced_scores
from padless.runtime.files import write_text_atomic
from padless.runtime.precision import Precision, choose_precision
from padless.training.checkpoint import (
    TEXT_DIR,
    Checkpoint,
    checkpoint_path,
    get_rng_state,
    keep_checkpoint,
    read_run_info,
    set_rng_state,
    text_settings,
    write_run_info,
)
from padless.training.config import Config
from padless.training.distributed import World, all_reduce, setup_world, teardown_world
from padless.training.ema import WeightAverage
from padless.training.guards import DivergenceGuard, run_directory_lock, usable_pairs
from padless.training.runlog import RunLog, plot_losses
from padless.training.signals import StopSignals
from padless.training.step import (
    StepLoss,
    accumulate_gradients,
    lr_factor,
    make_optimizer,
    update_weights,
)

__all__ = ["TrainResult", "TrainState", "Trainer", "train"]


@dataclass
class TrainResult:
    """How a run ended. ``exit_code`` is 0, or ``128 + signal`` when a signal stopped it."""

    step: int
    stop_reason: str  # max_steps, max_time, early_stopping, SIGINT or SIGTERM
    best_valid_loss: float | None
    exit_code: int


@dataclass
class TrainState:
    """What a run changes as it goes; a checkpoint holds it, so a resumed run goes on from it."""

    step: int = 0
    train_time_s: float = 0.0  # seconds inside training steps, over all invocations
    best_loss: float = math.inf  # lowest validation loss so far ...
    best_step: int = 0  # ... and its step
    bad_validations: int = 0  # validations since the best one
    lr_scale: float = 1.0  # train.plateau_factor ** (validations that did not improve)

    def early_stopping(self) -> dict[str, Any]:
        """The checkpoint's record of the best validation (and of the plateau schedule)."""
        return {"loss": self.best_loss, "step": self.best_step,
                "bad_validations": self.bad_validations, "lr_scale": self.lr_scale}

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint) -> TrainState:
        best = checkpoint.early_stopping
        return cls(checkpoint.step, checkpoint.train_time_s, best["loss"], best["step"],
                   best["bad_validations"], best.get("lr_scale", 1.0))


def train(
    config: Config,
    text: TextProcessor,
    splits: dict[str, list[IdPair]],
    run_dir: str | Path,
    *,
    resume: bool = False,
    data_dir: str | Path | None = None,
) -> TrainResult:
    """Train a model on ``splits["train"]``, validating on ``splits["valid"]``.

    Writes ``config.yaml``, ``text/``, ``latest.pt``, ``best.pt``, ``log.csv``, ``loss.png``
    (and ``tb/``) into ``run_dir`` from rank 0, and ``data_dir`` (where ``splits`` came
    from, so ``padless evaluate`` finds them) into ``run.json``. With ``resume``, continues
    from ``run_dir/latest.pt`` exactly where it stopped (``train.max_steps`` counts all steps).
    Under ``torchrun`` every process calls it; they share the work of every step.

    Raises:
        UserError: if another process trains in ``run_dir``, the data or the checkpoint do
            not fit, or the run diverges.
    """
    world = setup_world(config.train.device)
    run_dir = Path(run_dir)
    try:
        with run_directory_lock(run_dir, tqdm.write) if world.is_main else nullcontext():
            trainer = Trainer(config, text, splits, run_dir, world,
                              resume=resume, data_dir=data_dir)
            return trainer.run()
    finally:
        teardown_world(world)


class Trainer:
    """One run: set up in the constructor, trained by :meth:`run`."""

    def __init__(
        self,
        config: Config,
        text: TextProcessor,
        splits: dict[str, list[IdPair]],
        run_dir: Path,
        world: World,
        *,
        resume: bool = False,
        data_dir: str | Path | None = None,
    ) -> None:
        tc, device = config.train, world.device
        self.config, self.text, self.run_dir, self.world = config, text, run_dir, world
        self.say = tqdm.write if world.is_main else (lambda *_: None)
        self.divergence = DivergenceGuard()
        checkpoint = None
        if resume:
            path = checkpoint_path(run_dir, "latest")
            checkpoint = Checkpoint.load(path, map_location=device)
            checkpoint.check_compatible(config, text, path)
        self.precision = self._choose_precision(checkpoint)
        self.say(self.precision.describe())
        if self.precision.warning is not None:
            self.say(f"warning: {self.precision.warning}")

        # Same seed on every rank for the weights (DDP also broadcasts rank 0's); dropout and
        # teacher-forcing coins then draw from a per-rank stream.
        torch.manual_seed(tc.seed)
        self.model = build_model(config.model, len(text.vocab)).to(device)
        torch.manual_seed((tc.seed << 16) + 1 + world.rank)
        random.seed((tc.seed << 16) + 1 + world.rank)
        self.optimizer = make_optimizer(self.model, tc, device)
        self.scaler = torch.amp.GradScaler(device.type) if self.precision.scaled else None
        self.state = TrainState()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, tc) * self.state.lr_scale)

        limits = {"batch_size": tc.batch_size, "max_tokens": tc.max_tokens,
                  "num_shards": world.world_size, "shard_index": world.rank}
        train_pairs, valid_pairs = usable_pairs(splits, tc.max_length, world.world_size,
                                                self.say, data_dir)
        self.sampler = BucketBatchSampler(
            [len(s) for s, _ in train_pairs], [len(t) for _, t in train_pairs],
            shuffle=True, seed=tc.seed, **limits)
        self.batches: Iterator[Batch] = make_batches(train_pairs, _endless(self.sampler))
        self.valid_batches: list[Batch] = []
        if len(valid_pairs) >= world.world_size:
            valid_sampler = BucketBatchSampler(
                [len(s) for s, _ in valid_pairs], [len(t) for _, t in valid_pairs],
                shuffle=False, **limits)
            self.valid_batches = list(make_batches(valid_pairs, valid_sampler))
        else:
            self.say("warning: no validation split: no validation, early stopping or best "
                     "checkpoint")

        if checkpoint is not None:
            self._resume_from(checkpoint)
        saved_average = None if checkpoint is None else checkpoint.weight_average()
        self.average = None if tc.ema_decay is None else WeightAverage(
            self.model, tc.ema_decay, updates=self.state.step, saved=saved_average)
        self.valid_every = tc.valid_steps(len(self.sampler))
        self._write_run_files(data_dir)
        self.log = RunLog(run_dir, enabled=world.is_main,
                          resume_step=self.state.step if resume else None)
        self.step_loss: nn.Module = StepLoss(self.model, tc)
        if world.distributed:
            device_ids = [device] if device.type == "cuda" else None
            self.step_loss = DistributedDataParallel(self.step_loss, device_ids=device_ids)
        self.window = _Window()
        self.validated_at = -1

    def _choose_precision(self, checkpoint: Checkpoint | None) -> Precision:
        """``train.precision`` for this device; a resumed run keeps its own choice on the same
        hardware, and where this one runs the run's precision badly, it goes on in fp32."""
        tc, previous = self.config.train, None
        inherited = checkpoint is not None and (
            checkpoint.run_config().train.precision == tc.precision)
        if checkpoint is not None:
            previous = Precision.from_dict(read_run_info(self.run_dir).get("precision"))
        rows = tc.max_tokens if tc.max_tokens is not None else 16 * tc.batch_size
        workload = self.config.model.workload(rows, training=True)
        chosen = [choose_precision(tc.precision, self.world.device, workload,
                                   inherited=inherited, previous=previous)]
        if self.world.distributed:  # a measured choice could differ between processes
            dist.broadcast_object_list(chosen, src=0)
        return chosen[0]

    def _resume_from(self, checkpoint: Checkpoint) -> None:
        checkpoint.restore(self.model, self.optimizer, self.scheduler, self.sampler,
                           self.scaler)
        self.state = TrainState.from_checkpoint(checkpoint)
        if checkpoint.world_size == self.world.world_size:
            set_rng_state(checkpoint.rng[self.world.rank])
        else:
            self.say(f"warning: resuming {checkpoint.world_size} processes' run with "
                     f"{self.world.world_size}: random streams restart, the result will not "
                     "be bit-exact")
        self.say(f"resumed {self.run_dir} at step {self.state.step}")

    def _write_run_files(self, data_dir: str | Path | None) -> None:
        if not self.world.is_main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.run_dir / "config.yaml", self.config.to_yaml())
        self.text.save(self.run_dir / TEXT_DIR)
        info: dict[str, Any] = {"precision": self.precision.to_dict()}
        if data_dir is not None:
            info["data_dir"] = str(Path(data_dir).resolve())
        elif "data_dir" in (recorded := read_run_info(self.run_dir)):
            info["data_dir"] = recorded["data_dir"]
        write_run_info(self.run_dir, **info)

    # -- the loop ---------------------------------------------------------------------

    def run(self) -> TrainResult:
        """Train until ``max_steps``, ``max_time``, early stopping or a signal."""
        self.start()
        reason = None
        with self.bar, StopSignals() as signals:  # the bar closes before any error shows
            while reason is None:
                done = self.state.step >= self.config.train.max_steps
                reason = "max_steps" if done else self.stop_requested(signals) or self.advance()
            self.finish(reason)
        signum = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM}.get(reason)
        best = self.state.best_loss if math.isfinite(self.state.best_loss) else None
        return TrainResult(self.state.step, reason, best, 128 + signum if signum else 0)

    def start(self, *, progress: bool = True) -> None:
        """Start the clock of ``max_time`` and the progress bar (``run`` does it)."""
        self.started = time.monotonic()
        self.bar = tqdm(total=self.config.train.max_steps, initial=self.state.step, unit="step",
                        disable=not (progress and self.world.is_main), dynamic_ncols=True,
                        mininterval=1.0, file=sys.stderr)

    def advance(self) -> str | None:
        """One optimiser step, its log row and validation when due: ``"early_stopping"`` if
        that ends the run, else None (``start``, ``advance`` until a reason, ``finish``)."""
        self.train_step()
        if self.state.step % self.config.train.log_every == 0:
            self.log_training()
        if self.state.step % self.valid_every == 0 and self.validate():
            return "early_stopping"
        return None

    def stop_requested(self, signals: StopSignals) -> str | None:
        """``"SIGINT"``/``"SIGTERM"``/``"max_time"`` if any process must stop (a collective)."""
        max_time = self.config.train.max_time
        timed_out = max_time is not None and time.monotonic() - self.started > max_time * 60
        received, timed_out = all_reduce(self.world, [signals.received, timed_out], op="max")
        if received:
            return signal.Signals(int(received)).name
        return "max_time" if timed_out else None

    def train_step(self) -> None:
        """One optimiser step: the micro-batches' gradient, clipping, update, schedule."""
        tc = self.config.train
        started = time.perf_counter()
        micro_batches = [next(self.batches) for _ in range(tc.accumulate)]
        loss_sum, step_tokens = accumulate_gradients(
            self.step_loss, micro_batches, self.world, self.precision, self.scaler)
        grad_norm = update_weights(self.model, self.optimizer, tc.clip, self.scaler)
        if not math.isfinite(grad_norm):  # one inf/NaN gradient would poison every weight
            why = "fp16 overflow: the gradient scale is lowered" if self.scaler else (
                f"gradient norm {grad_norm}")
            self.say(f"step {self.state.step + 1}: {why}; update skipped")
        self.divergence.update(math.isfinite(grad_norm), self.state.step + 1, tc.lr, self.run_dir)
        self.scheduler.step()
        if self.average is not None:
            self.average.update()
        self.optimizer.zero_grad(set_to_none=True)
        elapsed = time.perf_counter() - started
        self.state.step += 1
        self.state.train_time_s += elapsed
        self.window.add(loss_sum.item(), step_tokens, elapsed, grad_norm)
        self.bar.update(1)

    def log_training(self) -> None:
        """A log row for the steps since the last one: token-weighted loss, speed (collective)."""
        window, tc = self.window, self.config.train
        (total_loss,) = all_reduce(self.world, [window.loss])
        loss, speed = total_loss / window.tokens, window.tokens / window.time
        self.log.log("train", self.state.step, epoch=self.sampler.epoch,
                     lr=self.scheduler.get_last_lr()[0], loss=loss, ppl=perplexity(loss),
                     tokens=window.tokens, tokens_per_s=speed, grad_norm=window.grad_norm,
                     elapsed_s=self.state.train_time_s, precision=self.precision.name)
        postfix = {"loss": f"{loss:.3f}", "tok_s": f"{speed:,.0f}"}
        left = None if tc.max_time is None else tc.max_time * 60 - (time.monotonic() - self.started)
        if left is not None and math.isfinite(left):  # the bar's ETA counts max_steps only
            left = max(0.0, left)
            postfix["time_left"] = f"{int(left // 60)}:{int(left % 60):02d}"
        self.bar.set_postfix(postfix, refresh=False)
        self.window = _Window()

    def validate(self) -> bool:
        """Validate, save the checkpoints, and say whether early stopping ends the run."""
        state, tc = self.state, self.config.train
        self.validated_at = state.step
        metrics = self.valid_metrics()
        improved = metrics is not None and metrics["loss"] < state.best_loss
        if metrics is not None:
            if improved:
                state.best_loss, state.best_step, state.bad_validations = (
                    metrics["loss"], state.step, 0)
            else:
                state.bad_validations += 1
                if tc.plateau_factor is not None:  # applies from the next step on
                    state.lr_scale *= tc.plateau_factor
            self.log.log("valid", state.step, epoch=self.sampler.epoch, **metrics)
            self.say(f"step {state.step}: valid loss {metrics['loss']:.4f} ppl "
                     f"{metrics['ppl']:.2f} acc {metrics['accuracy']:.3f}"
                     + (" (best)" if improved else ""))
        self.save(metrics, as_best=improved or not self.valid_batches)
        return tc.patience is not None and state.bad_validations >= tc.patience

    def valid_metrics(self) -> dict[str, float] | None:
        """Loss, perplexity and accuracy on the valid split, over all ranks (a collective)."""
        with nullcontext() if self.average is None else self.average.applied():
            local = teacher_forced_scores(self.model, self.valid_batches,
                                          precision=self.precision)
        loss_sum, correct, tokens = all_reduce(
            self.world, [local.loss_sum, local.correct, local.n_tokens])
        if tokens == 0:
            return None
        scores = Scores(loss_sum, int(correct), int(tokens))
        return {"loss": scores.loss, "ppl": scores.perplexity, "accuracy": scores.accuracy,
                "tokens": scores.n_tokens}

    def save(self, valid: dict[str, float] | None, *, as_best: bool) -> None:
        """Write ``latest.pt`` (and ``best.pt``) from rank 0 (a collective: RNG states)."""
        rng = _gather_rng(self.world)
        if not self.world.is_main:
            return
        checkpoint = Checkpoint(
            step=self.state.step, config=self.config.to_dict(),
            vocab=self.text.vocab.to_dict(), text=text_settings(self.text),
            model=(self.model if self.average is None else self.average).state_dict(),
            optimized=None if self.average is None else self.model.state_dict(),
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(), sampler=self.sampler.state_dict(),
            scaler=None if self.scaler is None else self.scaler.state_dict(),
            rng=rng, world_size=self.world.world_size,
            early_stopping=self.state.early_stopping(), valid=valid,
            train_time_s=self.state.train_time_s,
        )
        checkpoint.save(checkpoint_path(self.run_dir, "latest"))
        if as_best:
            checkpoint.save(checkpoint_path(self.run_dir, "best"))
        tc = self.config.train
        if valid is not None and (tc.keep_best or tc.keep_last):
            keep_checkpoint(self.run_dir, checkpoint, keep_best=tc.keep_best,
                            keep_last=tc.keep_last)

    def finish(self, reason: str) -> None:
        """Log the last steps, save (or validate and save), close the files, plot."""
        if self.window.tokens:  # steps since the last train row
            self.log_training()
        self.bar.close()
        if reason in ("SIGINT", "SIGTERM"):
            self.save(None, as_best=False)  # no validation: a scheduler's grace period is short
            self.say(f"{reason}: saved {checkpoint_path(self.run_dir, 'latest')} at step "
                     f"{self.state.step}; continue with --resume")
        elif self.validated_at != self.state.step:
            self.validate()
        self.log.close()
        png = self.run_dir / "loss.png"
        if self.world.is_main and self.log.path.exists() and plot_losses(self.log.path, png):
            self.say(f"loss curves: {png}")


@dataclass
class _Window:
    """Sums over the steps since the last training log row."""

    loss: float = 0.0
    tokens: int = 0
    time: float = 0.0
    grad_norm: float = 0.0  # the last step's

    def add(self, loss: float, tokens: int, seconds: float, grad_norm: float) -> None:
        self.loss += loss
        self.tokens += tokens
        self.time += seconds
        self.grad_norm = grad_norm


def _endless(sampler: BucketBatchSampler) -> Iterator[list[int]]:
    """Index lists across epochs; the sampler itself advances its epoch at each end."""
    while True:
        yield from sampler


def _gather_rng(world: World) -> list[dict[str, Any]]:
    """Every rank's RNG states, in rank order (a collective: all ranks call it)."""
    if not world.distributed:
        return [get_rng_state()]
    states: list[Any] = [None] * world.world_size
    dist.all_gather_object(states, get_rng_state())
    return states
