"""The training loop behind ``padless train``: :func:`train` and the :class:`Trainer` it runs.

:meth:`Trainer.run` is the loop, read top to bottom: stop? (``max_steps``, ``max_time``, a
signal), one optimiser step (:mod:`padless.training.step`: exact per-token gradients over
micro-batches and processes, clipping, the update, the schedule, the moving average), a log
row, and at each validation a checkpoint and early stopping. The constructor sets up the
rest once; what changes as the run goes is :attr:`Trainer.state`, saved in every checkpoint.
Rank 0 writes the run directory (:mod:`padless.runs`) and holds its lock for the whole run.
"""

from __future__ import annotations

import math
import random
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from padless.data.batch import Batch, IdPair
from padless.data.loader import TrainingBatches, run_batches
from padless.data.text import TextProcessor
from padless.models import build_model, parameter_count
from padless.models.scoring import Scores, perplexity, teacher_forced_scores
from padless.runs.checkpoint import Checkpoint, TrainState, text_settings
from padless.runs.directory import RunDirectory
from padless.runs.info import RunInfo, check_for_training, read_run_info, write_run_info
from padless.runs.kept import keep_checkpoint
from padless.runtime.errors import UserError
from padless.runtime.files import write_text_atomic
from padless.runtime.memory import check_training_fits
from padless.runtime.precision import Precision, choose_precision
from padless.training.config import Config
from padless.training.distributed import World, all_reduce, in_process_group, setup_world
from padless.training.ema import EMA
from padless.training.guards import DivergenceGuard
from padless.training.resume import checkpoint_to_resume, restore
from padless.training.rng import gather_rng_states
from padless.training.runlog import LogWindow, RunLog, plot_losses, shown_figures
from padless.training.signals import StopSignals
from padless.training.step import (
    StepLoss,
    accumulate_gradients,
    lr_factor,
    make_optimizer,
    update_weights,
)

__all__ = ["TrainResult", "Trainer", "train"]

_SIGNALS = ("SIGINT", "SIGTERM")


@dataclass
class TrainResult:
    """How a run ended. ``exit_code`` is 0, or ``128 + signal`` when a signal stopped it."""

    step: int
    stop_reason: str  # max_steps, max_time, early_stopping, SIGINT or SIGTERM
    best_valid_loss: float | None
    exit_code: int
    main_process: bool = True  # rank 0, which writes the run and says how it ended


def train(
    config: Config,
    text: TextProcessor,
    splits: dict[str, list[IdPair]],
    run_dir: str | Path,
    *,
    resume: bool = False,
    data_dir: str | Path | None = None,
    progress: bool = True,
    init_from: str | Path | None = None,
) -> TrainResult:
    """Train a model on ``splits["train"]``, validating on ``splits["valid"]``.

    Writes the run directory (:mod:`padless.runs.directory`) from rank 0, with ``data_dir``
    (where ``splits`` came from, so ``padless evaluate`` finds them) in ``run.json``. With
    ``resume``, continues from ``run_dir/latest.pt`` exactly where it stopped
    (``train.max_steps`` counts all steps). Under ``torchrun`` every process calls it; they
    share the work of every step. With ``init_from`` (a run directory: ``--init-from``),
    the model starts from that run's ``best.pt`` weights (which must be of ``config.model``
    and ``text``); the optimiser, schedule and step count are new.

    Raises:
        UserError: if ``run_dir`` is not padless's or holds a run (without ``resume``), if
            another process trains there, if the data or the checkpoint do not fit, or if
            the run diverges.
    """
    world = setup_world(config.train.device)
    run = RunDirectory(run_dir)
    with in_process_group(world, f"resume from {run.latest} with the same command"):
        with run.lock() if world.is_main else nullcontext():
            if world.is_main:
                check_for_training(run, resume=resume)
                if removed := run.remove_temporaries():
                    tqdm.write(f"removed {len(removed)} temporary file(s) an interrupted run "
                               f"left in {run.path}: {', '.join(removed)}")
            trainer = Trainer(config, text, splits, run, world, resume=resume,
                              data_dir=data_dir, progress=progress, init_from=init_from)
            return trainer.run()


class Trainer:
    """One run: set up in the constructor, trained by :meth:`run`."""

    def __init__(
        self,
        config: Config,
        text: TextProcessor,
        splits: dict[str, list[IdPair]],
        run: RunDirectory,
        world: World,
        *,
        resume: bool = False,
        data_dir: str | Path | None = None,
        progress: bool = True,
        init_from: str | Path | None = None,
    ) -> None:
        tc, device = config.train, world.device
        self.config, self.text, self.run_dir, self.world = config, text, run, world
        self.say = tqdm.write if world.is_main else (lambda *_: None)
        checkpoint = (checkpoint_to_resume(run, config.model, text, device) if resume
                      else None)
        self.precision = self._choose_precision(checkpoint)

        # Same seed on every rank for the weights (DDP also broadcasts rank 0's); dropout and
        # teacher-forcing coins then draw from a per-rank stream.
        check_training_fits(parameter_count(config.model, len(text.vocab)), device,
                            extra_copies=int(tc.ema_decay is not None))
        torch.manual_seed(tc.seed)
        self.model = build_model(config.model, len(text.vocab), text.vocab.specials)
        if init_from is not None:
            self._start_from(init_from, data_dir)
        self.model.to(device)
        torch.manual_seed((tc.seed << 16) + 1 + world.rank)
        random.seed((tc.seed << 16) + 1 + world.rank)
        self.optimizer = make_optimizer(self.model, tc, device)
        self.scaler = torch.amp.GradScaler(device.type) if self.precision.scaled else None
        self.state = TrainState()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, tc) * self.state.lr_scale)
        self.batches, self.valid_batches = self._data(splits, data_dir)
        if checkpoint is not None:
            self.state = restore(checkpoint, run, world, model=self.model,
                                 optimizer=self.optimizer, scheduler=self.scheduler,
                                 scaler=self.scaler, batches=self.batches, say=self.say)
            self.say(f"resumed {run.path} at step {self.state.step}")
        self.ema = None if tc.ema_decay is None else EMA(
            self.model, tc.ema_decay, updates=self.state.step,
            saved=None if checkpoint is None else checkpoint.ema_weights)
        self.valid_every = tc.valid_steps(self.batches.batches_per_epoch)

        self._write_run_files(data_dir)
        self.log = RunLog(run, enabled=world.is_main,
                          resume_step=self.state.step if resume else None)
        self.step_loss: nn.Module = StepLoss(self.model, tc)
        if world.distributed:
            device_ids = [device] if device.type == "cuda" else None
            self.step_loss = DistributedDataParallel(self.step_loss, device_ids=device_ids)
        self.divergence = DivergenceGuard()
        self.window = LogWindow()
        self.validated_at = -1
        self.started = time.monotonic()  # the clock of max_time; run() restarts it
        # a bar on a terminal; in a log file or a pipe its redraws pile up: a line a log row
        self.log_lines = progress and world.is_main and not sys.stderr.isatty()
        self.bar = tqdm(total=tc.max_steps, initial=self.state.step, unit="step",
                        disable=self.log_lines or not (progress and world.is_main),
                        dynamic_ncols=True, mininterval=1.0, file=sys.stderr)

    # -- the loop ---------------------------------------------------------------------

    def run(self) -> TrainResult:
        """Train until ``max_steps``, ``max_time``, early stopping or a signal."""
        tc = self.config.train
        self.started = time.monotonic()
        with self.bar, StopSignals() as signals:  # the bar closes before any error shows
            while True:
                reason = self.stop_reason(signals)
                if reason is not None:
                    break
                self.train_step()
                if self.state.step % tc.log_every == 0:
                    self.log_training()
                if self.state.step % self.valid_every == 0:
                    self.save(self.validate(signals))
                    if tc.patience is not None and self.state.bad_validations >= tc.patience:
                        reason = "early_stopping"
                        break
            reason = self.finish(reason, signals)
        signum = signal.Signals[reason] if reason in _SIGNALS else None
        best = self.state.best_loss if math.isfinite(self.state.best_loss) else None
        return TrainResult(self.state.step, reason, best, 128 + signum if signum else 0,
                           self.world.is_main)

    def stop_reason(self, signals: StopSignals) -> str | None:
        """``"max_steps"``, or ``"SIGINT"``/``"SIGTERM"``/``"max_time"`` if any process must
        stop (a collective), else None."""
        if self.state.step >= self.config.train.max_steps:
            return "max_steps"
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
        if not math.isfinite(grad_norm):  # the update was skipped
            why = "fp16 overflow: the gradient scale is lowered" if self.scaler else (
                f"gradient norm {grad_norm}")
            self.say(f"step {self.state.step + 1}: {why}; update skipped")
        self.divergence.update(math.isfinite(grad_norm), self.state.step + 1, tc.lr,
                               self.run_dir.path)
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update()
        self.optimizer.zero_grad(set_to_none=True)
        elapsed = time.perf_counter() - started
        self.state.step += 1
        self.state.train_time_s += elapsed
        self.window.add(loss_sum.item(), step_tokens, elapsed, grad_norm)
        self.bar.update(1)

    def log_training(self) -> None:
        """A log row for the steps since the last one (collective); the bar and line quote it."""
        window, tc = self.window, self.config.train
        (total_loss,) = all_reduce(self.world, [window.loss])
        loss = total_loss / window.tokens
        row = self.log.log("train", self.state.step, epoch=self.batches.epoch,
                           lr=self.scheduler.get_last_lr()[0], loss=loss, ppl=perplexity(loss),
                           tokens=window.tokens, tokens_per_s=window.tokens / window.time,
                           grad_norm=window.grad_norm, elapsed_s=self.state.train_time_s,
                           precision=self.precision.name)
        postfix = shown_figures(row)
        if tc.max_time is not None:  # the bar's ETA counts max_steps only
            left = max(0.0, tc.max_time * 60 - (time.monotonic() - self.started))
            postfix["time_left"] = f"{int(left // 60)}:{int(left % 60):02d}"
        self.bar.set_postfix(postfix, refresh=False)
        if self.log_lines:
            self.say(f"step {self.state.step}: loss {postfix['loss']}, {postfix['tok_s']} "
                     "tokens/s" + (f", {postfix['time_left']} left" if "time_left" in postfix
                                   else ""))
        self.window = LogWindow()

    def validate(self, signals: StopSignals) -> dict[str, float] | None:
        """Score the valid split (with the moving average, if any), log it and update the
        best validation and the plateau schedule; the metrics, or None without a valid
        split or when a signal came in the middle (a collective)."""
        state, tc = self.state, self.config.train
        self.validated_at = state.step
        with nullcontext() if self.ema is None else self.ema.applied():
            local = teacher_forced_scores(self.model, self.valid_batches,
                                          precision=self.precision,
                                          stop=lambda: bool(signals.received))
        loss_sum, correct, tokens, stopped = all_reduce(
            self.world, [local.loss_sum, local.correct, local.n_tokens, local.stopped],
            op="sum")
        if stopped or tokens == 0:
            return None
        metrics = Scores(loss_sum, int(correct), int(tokens)).metrics()
        if metrics["loss"] < state.best_loss:
            state.best_loss, state.best_step, state.bad_validations = (
                metrics["loss"], state.step, 0)
        else:
            state.bad_validations += 1
            if tc.plateau_factor is not None:  # applies from the next step on
                state.lr_scale *= tc.plateau_factor
        row = self.log.log("valid", state.step, epoch=self.batches.epoch, **metrics)
        self.say(f"step {state.step}: valid loss {float(row['loss']):.4f} ppl "
                 f"{float(row['ppl']):.2f} acc {float(row['accuracy']):.3f}"
                 + (" (best)" if state.best_step == state.step else ""))
        return metrics

    def save(self, valid: dict[str, float] | None) -> None:
        """Write ``latest.pt``, ``best.pt`` when ``valid`` is a new best (or there is no
        valid split), and the kept checkpoints (a collective: the RNG states)."""
        rng = gather_rng_states(self.world)
        if not self.world.is_main:
            return
        checkpoint = Checkpoint(
            config=self.config.to_dict(), vocab=self.text.vocab.to_dict(),
            text=text_settings(self.text), weights=self.model.state_dict(),
            ema_weights=None if self.ema is None else self.ema.state_dict(),
            state=replace(self.state), optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(), sampler=self.batches.state_dict(),
            scaler=None if self.scaler is None else self.scaler.state_dict(),
            rng=rng, world_size=self.world.world_size, valid=valid,
        )
        checkpoint.save(self.run_dir.latest)
        new_best = valid is not None and self.state.best_step == self.state.step
        if new_best or not self.valid_batches:
            checkpoint.save(self.run_dir.best)
        tc = self.config.train
        if valid is not None and (tc.keep_best or tc.keep_last):
            keep_checkpoint(self.run_dir, checkpoint, keep_best=tc.keep_best,
                            keep_last=tc.keep_last)

    def finish(self, reason: str, signals: StopSignals) -> str:
        """Log the last steps, validate and save (after a signal only save: a scheduler's
        grace period is short), close the files, plot; returns the reason the run stopped
        (a signal during the last validation stops it too)."""
        if self.window.tokens:  # steps since the last train row
            self.log_training()
        if self.validated_at != self.state.step:
            if reason in _SIGNALS:
                self.save(None)
            else:
                self.save(self.validate(signals))
                if signals.received:  # it came during the validation, which was dropped
                    reason = signal.Signals(signals.received).name
        if reason in _SIGNALS:
            self.say(f"{reason}: saved {self.run_dir.latest} at step {self.state.step}; "
                     "continue with --resume")
        self.bar.close()
        self.log.close()
        if self.world.is_main and self.log.path.exists() and plot_losses(
                self.log.path, self.run_dir.plot_file):
            self.say(f"loss curves: {self.run_dir.plot_file}")
        return reason

    # -- set-up -----------------------------------------------------------------------

    def _start_from(self, run_dir: str | Path, data_dir: str | Path | None) -> None:
        """The weights of ``run_dir``'s best checkpoint, if its model and text are ours."""
        path = RunDirectory(run_dir).best
        start = Checkpoint.load(path)
        if start.vocab != self.text.vocab.to_dict():
            raise UserError(f"{data_dir or 'the data'}: its vocabulary is not that of {run_dir}; "
                            f"prepare the corpus with --text-from {run_dir}")
        if not start.model_config().same_model(self.config.model):
            raise UserError(f"{path}: its model differs from the config's model section")
        self.model.load_state_dict(start.decoding_weights)
        self.say(f"starting from {path} (its step {start.step}), with a new optimiser")

    def _choose_precision(self, checkpoint: Checkpoint | None) -> Precision:
        """``train.precision`` for this device, said at start; a resumed run keeps its own
        choice on the same hardware, and goes on in fp32 where this one runs it badly."""
        tc, previous = self.config.train, None
        inherited = checkpoint is not None and (
            Config.from_dict(checkpoint.config).train.precision == tc.precision)
        if checkpoint is not None:
            previous = read_run_info(self.run_dir).precision
        rows = tc.max_tokens if tc.max_tokens is not None else 16 * tc.batch_size
        workload = self.config.model.workload(rows, training=True)
        chosen = [choose_precision(tc.precision, self.world.device, workload,
                                   inherited=inherited, previous=previous)]
        if self.world.distributed:  # a measured choice could differ between processes
            dist.broadcast_object_list(chosen, src=0)
        self.say(chosen[0].describe())
        if chosen[0].warning is not None:
            self.say(f"warning: {chosen[0].warning}")
        return chosen[0]

    def _data(self, splits: dict[str, list[IdPair]], data_dir: str | Path | None,
              ) -> tuple[TrainingBatches, list[Batch]]:
        tc, world = self.config.train, self.world
        batches, valid = run_batches(
            splits, max_length=tc.max_length, batch_size=tc.batch_size,
            max_tokens=tc.max_tokens, seed=tc.seed, num_shards=world.world_size,
            shard_index=world.rank, specials=self.text.vocab.specials, say=self.say,
            where=data_dir)
        if not valid:
            self.say("warning: no validation split: no validation, early stopping or best "
                     "checkpoint")
        return batches, valid

    def _write_run_files(self, data_dir: str | Path | None) -> None:
        """``run.json`` (padless's mark, the data, the precision), ``config.yaml``, ``text/``."""
        if not self.world.is_main:
            return
        run = self.run_dir
        run.path.mkdir(parents=True, exist_ok=True)
        recorded = read_run_info(run).data_dir
        data = str(Path(data_dir).resolve()) if data_dir is not None else recorded
        write_run_info(run, RunInfo(marked=True, data_dir=data, precision=self.precision))
        write_text_atomic(run.config_file, self.config.to_yaml())
        self.text.save(run.text_dir)
