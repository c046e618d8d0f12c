"""The training loop behind ``padless train``; :func:`train` reads top to bottom.

Per optimiser step: take ``accumulate`` micro-batches, back-propagate them so the gradient
is that of the per-token mean over the whole step across all processes
(:func:`padless.steps.accumulate_gradients`), clip, step, schedule; log, validate,
checkpoint; stop on ``max_steps``, ``max_time``, early stopping, SIGINT or SIGTERM.
"""

from __future__ import annotations

import math
import random
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from padless.batch import Batch
from padless.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    TEXT_DIR,
    checkpoint_path,
    get_rng_state,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
    write_run_info,
)
from padless.config import Config
from padless.distributed import World, all_reduce, setup_world, teardown_world
from padless.model import Seq2Seq
from padless.runlog import RunLog, plot_losses
from padless.sampler import BucketBatchSampler
from padless.steps import StepLoss, accumulate_gradients, evaluate, lr_factor, make_optimizer
from padless.text import TextProcessor
from padless.vocabulary import BOS_ID, EOS_ID, PAD_ID

__all__ = ["TrainResult", "train"]

Pair = tuple[list[int], list[int]]


@dataclass
class TrainResult:
    """How a run ended. ``exit_code`` is 0, or ``128 + signal`` when a signal stopped it."""

    step: int
    stop_reason: str  # max_steps, max_time, early_stopping, SIGINT or SIGTERM
    best_valid_loss: float | None
    exit_code: int


def _batches(pairs: Sequence[Pair], indices: Sequence[int]) -> Batch:
    return Batch.from_pairs(
        [pairs[i] for i in indices], pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID
    )


def _endless(sampler: BucketBatchSampler) -> Iterator[list[int]]:
    """Index lists across epochs; the sampler itself advances its epoch at each end."""
    while True:
        yield from sampler


class _StopSignals:
    """SIGINT and SIGTERM set a flag the loop reads between steps; a second Ctrl-C aborts."""

    def __init__(self) -> None:
        self.received: int = 0
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: object) -> None:
        if self.received and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _gather_rng(world: World) -> list[dict[str, Any]]:
    """Every rank's RNG states, in rank order (a collective: all ranks call it)."""
    if not world.distributed:
        return [get_rng_state()]
    states: list[Any] = [None] * world.world_size
    dist.all_gather_object(states, get_rng_state())
    return states


def train(
    config: Config,
    text: TextProcessor,
    splits: dict[str, list[Pair]],
    run_dir: str | Path,
    *,
    resume: bool = False,
    data_dir: str | Path | None = None,
) -> TrainResult:
    """Train a :class:`Seq2Seq` on ``splits["train"]``, validating on ``splits["valid"]``.

    Writes ``config.yaml``, ``text/``, ``latest.pt``, ``best.pt``, ``log.csv``, ``loss.png``
    (and ``tb/``) into ``run_dir`` from rank 0, and ``data_dir`` (where ``splits`` came
    from, so ``padless evaluate`` finds them) into ``run.json``. With ``resume``, continues
    from ``run_dir/latest.pt`` exactly where it stopped (``train.max_steps`` counts all steps).
    """
    tc = config.train
    run_dir = Path(run_dir)
    world = setup_world(tc.device)
    try:
        return _train(config, text, splits, run_dir, resume, world, data_dir)
    finally:
        teardown_world(world)


def _train(
    config: Config,
    text: TextProcessor,
    splits: dict[str, list[Pair]],
    run_dir: Path,
    resume: bool,
    world: World,
    data_dir: str | Path | None,
) -> TrainResult:
    tc, device = config.train, world.device
    say = tqdm.write if world.is_main else (lambda *_: None)
    ckpt = load_checkpoint(checkpoint_path(run_dir, "latest"), device) if resume else None
    if ckpt is not None and ckpt["config"]["model"] != config.to_dict()["model"]:
        raise ValueError(f"{run_dir}: the model settings differ from the checkpoint's")
    if ckpt is not None and ckpt["vocab"] != text.vocab.to_dict():
        raise ValueError(f"{run_dir}: the data's vocabulary differs from the checkpoint's")

    # Same seed on every rank for the weights (DDP also broadcasts rank 0's); dropout and
    # teacher-forcing coins then draw from a per-rank stream.
    torch.manual_seed(tc.seed)
    model = Seq2Seq(config.model, len(text.vocab), pad_id=PAD_ID).to(device)
    torch.manual_seed((tc.seed << 16) + 1 + world.rank)
    random.seed((tc.seed << 16) + 1 + world.rank)
    optimizer = make_optimizer(model, tc, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, tc))

    batch_limits = {"batch_size": tc.batch_size, "max_tokens": tc.max_tokens}
    shard = {"num_shards": world.world_size, "shard_index": world.rank}
    train_pairs, valid_pairs = splits["train"], splits.get("valid", [])
    train_sampler = BucketBatchSampler(
        [len(s) for s, _ in train_pairs], [len(t) for _, t in train_pairs],
        shuffle=True, seed=tc.seed, **batch_limits, **shard,
    )
    valid_batches: list[Batch] = []
    if len(valid_pairs) >= world.world_size:
        valid_sampler = BucketBatchSampler(
            [len(s) for s, _ in valid_pairs], [len(t) for _, t in valid_pairs],
            shuffle=False, **batch_limits, **shard,
        )
        valid_batches = [_batches(valid_pairs, idx) for idx in valid_sampler]
    else:
        say("warning: no validation split: no validation, early stopping or best checkpoint")

    step, train_time = 0, 0.0
    best = {"loss": math.inf, "step": 0, "bad_validations": 0}
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        train_sampler.load_state_dict(ckpt["sampler"])
        step, train_time, best = ckpt["step"], ckpt["train_time_s"], dict(ckpt["early_stopping"])
        if ckpt["world_size"] == world.world_size:
            set_rng_state(ckpt["rng"][world.rank])
        else:
            say(f"warning: resuming {ckpt['world_size']} processes' run with "
                f"{world.world_size}: random streams restart, the result will not be bit-exact")
        say(f"resumed {run_dir} at step {step}")
        del ckpt
    if world.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(config.to_yaml(), encoding="utf-8")
        text.save(run_dir / TEXT_DIR)
        if data_dir is not None:
            write_run_info(run_dir, data_dir=str(Path(data_dir).resolve()))
    log = RunLog(run_dir, enabled=world.is_main, resume_step=step if resume else None)

    step_loss: nn.Module = StepLoss(model, tc)
    if world.distributed:
        device_ids = [device] if device.type == "cuda" else None
        step_loss = DistributedDataParallel(step_loss, device_ids=device_ids)
    model.train()

    def save(valid: dict[str, float] | None, *, as_best: bool) -> None:
        rng = _gather_rng(world)  # a collective: every rank takes part
        if not world.is_main:
            return
        state = {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "step": step,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "config": config.to_dict(),
            "vocab": text.vocab.to_dict(), "vocab_size": len(text.vocab), "pad_id": PAD_ID,
            "text": {"normalize": text.normalize, "tokenizer": text.tokenizer.name},
            "sampler": train_sampler.state_dict(), "rng": rng, "world_size": world.world_size,
            "early_stopping": best, "valid": valid, "train_time_s": train_time,
        }
        save_checkpoint(checkpoint_path(run_dir, "latest"), state)
        if as_best:
            save_checkpoint(checkpoint_path(run_dir, "best"), state)

    def validate() -> bool:
        """Validate, checkpoint, and say whether early stopping ends the run."""
        metrics = evaluate(model, valid_batches, world, tc.precision)
        improved = metrics is not None and metrics["loss"] < best["loss"]
        if metrics is not None:
            if improved:
                best.update(loss=metrics["loss"], step=step, bad_validations=0)
            else:
                best["bad_validations"] += 1
            log.log("valid", step, epoch=train_sampler.epoch, **metrics)
            say(f"step {step}: valid loss {metrics['loss']:.4f} ppl {metrics['ppl']:.2f} "
                f"acc {metrics['accuracy']:.3f}" + (" (best)" if improved else ""))
        save(metrics, as_best=improved or not valid_batches)
        return tc.patience is not None and best["bad_validations"] >= tc.patience

    window = {"loss": 0.0, "tokens": 0, "time": 0.0, "grad_norm": 0.0}

    def log_window() -> None:
        """Log the steps since the last train row: token-weighted loss, speed (a collective)."""
        (total_loss,) = all_reduce(world, [window["loss"]])
        loss, speed = total_loss / window["tokens"], window["tokens"] / window["time"]
        log.log("train", step, epoch=train_sampler.epoch, lr=scheduler.get_last_lr()[0],
                loss=loss, ppl=math.exp(min(loss, 700.0)), tokens=window["tokens"],
                tokens_per_s=speed, grad_norm=window["grad_norm"], elapsed_s=train_time)
        postfix = {"loss": f"{loss:.3f}", "tok_s": f"{speed:,.0f}"}
        if tc.max_time is not None:  # the bar's ETA counts towards max_steps only
            left = max(0.0, tc.max_time * 60 - (time.monotonic() - started))
            postfix["time_left"] = f"{int(left // 60)}:{int(left % 60):02d}"
        bar.set_postfix(postfix, refresh=False)
        window.update(loss=0.0, tokens=0, time=0.0)

    indices = _endless(train_sampler)
    bar = tqdm(total=tc.max_steps, initial=step, unit="step", disable=not world.is_main,
               dynamic_ncols=True, mininterval=1.0, file=sys.stderr)
    started, reason, validated_at = time.monotonic(), "max_steps", -1
    with _StopSignals() as signals:
        while step < tc.max_steps:
            timed_out = tc.max_time is not None and time.monotonic() - started > tc.max_time * 60
            received, timed_out = all_reduce(world, [signals.received, timed_out], op="max")
            if received or timed_out:
                reason = signal.Signals(int(received)).name if received else "max_time"
                break

            t0 = time.perf_counter()
            micro = [_batches(train_pairs, next(indices)) for _ in range(tc.accumulate)]
            loss_sum, step_tokens = accumulate_gradients(step_loss, micro, tc, world)
            # The norm before clipping (max_norm inf: no clipping), logged either way.
            grad_norm = float(torch.nn.utils.clip_grad_norm_(
                model.parameters(), tc.clip if tc.clip is not None else math.inf))
            if math.isfinite(grad_norm):  # the same on every rank: gradients are all-reduced
                optimizer.step()
            else:  # one inf/NaN gradient (overflow, a bad batch) would poison every weight
                say(f"step {step + 1}: gradient norm {grad_norm}; update skipped")
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            elapsed = time.perf_counter() - t0
            train_time += elapsed
            window["loss"] += loss_sum.item()
            window["tokens"] += step_tokens
            window["time"] += elapsed
            window["grad_norm"] = grad_norm
            bar.update(1)

            if step % tc.log_every == 0:
                log_window()
            if step % tc.valid_every == 0:
                validated_at = step
                if validate():
                    reason = "early_stopping"
                    break
        if window["tokens"]:  # steps since the last train row
            log_window()
        bar.close()
        if reason in ("SIGINT", "SIGTERM"):
            save(None, as_best=False)  # no validation: a scheduler's grace period is short
            say(f"{reason}: saved {checkpoint_path(run_dir, 'latest')} at step {step}; "
                "continue with --resume")
        elif validated_at != step:
            validate()
    log.close()
    if world.is_main and log.path.exists() and plot_losses(log.path, run_dir / "loss.png"):
        say(f"loss curves: {run_dir / 'loss.png'}")
    signum = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM}.get(reason)
    best_loss = best["loss"] if math.isfinite(best["loss"]) else None
    return TrainResult(step, reason, best_loss, 128 + signum if signum else 0)
