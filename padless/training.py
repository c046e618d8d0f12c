"""The training loop behind ``padless train``; :func:`train` reads top to bottom.

Per optimiser step: take ``accumulate`` micro-batches, count their real target tokens over
all processes, back-propagate each micro-batch's *summed* loss scaled by
``world_size / step_tokens`` (DDP averages gradients over processes, the factor turns that
into a sum), clip, step. The gradient is then exactly that of the per-token mean over the
whole step, whatever the split into micro-batches and processes (``docs/losses.md``).
"""

from __future__ import annotations

import math
import random
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
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
)
from padless.config import Config, TrainConfig
from padless.distributed import World, all_reduce, setup_world, teardown_world
from padless.model import Seq2Seq
from padless.runlog import RunLog, plot_losses
from padless.sampler import BucketBatchSampler
from padless.text import TextProcessor
from padless.vocabulary import BOS_ID, EOS_ID, PAD_ID

__all__ = ["StepLoss", "TrainResult", "accumulate_gradients", "evaluate", "lr_factor", "train"]

Pair = tuple[list[int], list[int]]


@dataclass
class TrainResult:
    """How a run ended. ``exit_code`` is 0, or ``128 + signal`` when a signal stopped it."""

    step: int
    stop_reason: str  # max_steps, max_time, early_stopping, SIGINT or SIGTERM
    best_valid_loss: float | None
    exit_code: int


class StepLoss(nn.Module):
    """``model.loss`` (summed over real tokens) as ``forward``: DDP only hooks ``forward``."""

    def __init__(self, model: Seq2Seq, tc: TrainConfig) -> None:
        super().__init__()
        self.model = model
        self.tc = tc

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.model.loss(
            batch,
            reduction="sum",
            teacher_forcing_ratio=self.tc.teacher_forcing_ratio,
            teacher_forcing=self.tc.teacher_forcing,
            label_smoothing=self.tc.label_smoothing,
        ).loss


def _autocast(device: torch.device, precision: str) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def accumulate_gradients(
    step_loss: nn.Module, micro_batches: Sequence[Batch], tc: TrainConfig, world: World
) -> tuple[torch.Tensor, int]:
    """Back-propagate one optimiser step's micro-batches into ``.grad``.

    Afterwards ``.grad`` is the gradient of (summed token loss of the global step) / (real
    target tokens of the global step): K micro-batches, or N processes, give the gradient
    of one big batch.

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
            with _autocast(world.device, tc.precision):
                loss = step_loss(batch.to(world.device))
            (loss * scale).backward()
        loss_sum += loss.detach().float()
    return loss_sum, int(step_tokens)


@torch.no_grad()
def evaluate(
    model: Seq2Seq, batches: Sequence[Batch], world: World, precision: str = "fp32"
) -> dict[str, float] | None:
    """Per-token loss, perplexity and token accuracy under teacher forcing, over all ranks.

    One decoder pass over each whole target; only the real tokens' states are projected to
    the vocabulary, and their argmax gives the accuracy. Returns None if no rank has data.
    """
    was_training = model.training
    model.eval()
    loss_sum = correct = tokens = 0.0
    for batch in batches:
        batch = batch.to(world.device)
        with _autocast(world.device, precision):
            enc = model.encode(batch.src, batch.src_lengths)
            states, _, _ = model.decoder(batch.tgt_in, enc.hidden, enc.memory, enc.src_mask)
            logits = model.decoder.out(states[batch.tgt_mask])  # [N, V], real tokens only
        targets = batch.tgt_out[batch.tgt_mask]
        loss_sum += F.cross_entropy(logits.float(), targets, reduction="sum").item()
        correct += (logits.argmax(dim=-1) == targets).sum().item()
        tokens += batch.n_tokens
    model.train(was_training)
    loss_sum, correct, tokens = all_reduce(world, [loss_sum, correct, tokens])
    if tokens == 0:
        return None
    loss = loss_sum / tokens
    return {"loss": loss, "ppl": math.exp(min(loss, 700.0)), "accuracy": correct / tokens,
            "tokens": int(tokens)}


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


def _make_optimizer(model: Seq2Seq, tc: TrainConfig, device: torch.device) -> torch.optim.Adam:
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
) -> TrainResult:
    """Train a :class:`Seq2Seq` on ``splits["train"]``, validating on ``splits["valid"]``.

    Writes ``config.yaml``, ``text/``, ``latest.pt``, ``best.pt``, ``log.csv``, ``loss.png``
    (and ``tb/``) into ``run_dir`` from rank 0. With ``resume``, continues from
    ``run_dir/latest.pt`` exactly where it stopped (``train.max_steps`` counts all steps).
    """
    tc = config.train
    run_dir = Path(run_dir)
    world = setup_world(tc.device)
    try:
        return _train(config, text, splits, run_dir, resume, world)
    finally:
        teardown_world(world)


def _train(
    config: Config,
    text: TextProcessor,
    splits: dict[str, list[Pair]],
    run_dir: Path,
    resume: bool,
    world: World,
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
    optimizer = _make_optimizer(model, tc, device)
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

    indices = _endless(train_sampler)
    bar = tqdm(total=tc.max_steps, initial=step, unit="step", disable=not world.is_main,
               dynamic_ncols=True, mininterval=1.0, file=sys.stderr)
    window = {"loss": 0.0, "tokens": 0, "time": 0.0, "steps": 0}
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
            grad_norm = (torch.nn.utils.clip_grad_norm_(model.parameters(), tc.clip)
                         if tc.clip is not None else None)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            window["loss"] += loss_sum.item()
            window["tokens"] += step_tokens
            window["steps"] += 1
            elapsed = time.perf_counter() - t0
            window["time"] += elapsed
            train_time += elapsed
            bar.update(1)

            if step % tc.log_every == 0 or step == tc.max_steps:
                (total_loss,) = all_reduce(world, [window["loss"]])
                loss, speed = total_loss / window["tokens"], window["tokens"] / window["time"]
                log.log("train", step, epoch=train_sampler.epoch, lr=scheduler.get_last_lr()[0],
                        loss=loss, ppl=math.exp(min(loss, 700.0)), tokens=window["tokens"],
                        tokens_per_s=speed, elapsed_s=train_time,
                        grad_norm=None if grad_norm is None else float(grad_norm))
                bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{speed:,.0f}", refresh=False)
                window = {"loss": 0.0, "tokens": 0, "time": 0.0, "steps": 0}
            if step % tc.valid_every == 0:
                validated_at = step
                if validate():
                    reason = "early_stopping"
                    break
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
