# long: the format, the run directory's checkpoint files and their averaging stay together
"""The run directory's checkpoints: :class:`Checkpoint`, the only code that knows their format.

A run directory holds ``latest.pt`` (the newest state, to resume from) and ``best.pt`` (the
lowest validation loss), both full training states, plus ``text/`` (the TextProcessor, whose
vocabulary and settings the checkpoints also record), ``config.yaml`` and ``run.json``.
With ``train.keep_best`` / ``train.keep_last``, ``checkpoints/`` keeps the weights of the
best / the most recent validations (:func:`keep_checkpoint`), which ``padless average``
averages into ``averaged.pt`` (:func:`average_checkpoints`). :data:`CHECKPOINT_NAMES` are
the names every command's ``--checkpoint`` takes.

A checkpoint file is a dict of tensors and plain Python values, written atomically and read
with ``torch.load(path, weights_only=True)``: loading a checkpoint from someone else cannot
run their code. Before that, every member of the file (a zip archive) is checked against its
CRC-32, so a damaged file is refused instead of loading with wrong weights.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import random
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from padless.data.text import TextProcessor
from padless.data.vocabulary import PAD_ID, Vocabulary
from padless.models import EncoderDecoder, build_model
from padless.runtime.devices import resolve_device
from padless.runtime.errors import UserError
from padless.runtime.files import atomic_write, read_utf8, write_json_atomic
from padless.training.config import Config, ConfigError, apply_overrides

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_NAMES",
    "CHECKPOINT_VERSION",
    "Checkpoint",
    "KeptCheckpoint",
    "TEXT_DIR",
    "average_checkpoints",
    "checkpoint_path",
    "get_rng_state",
    "keep_checkpoint",
    "kept_checkpoints",
    "load_model",
    "read_run_info",
    "resumed_config",
    "set_rng_state",
    "write_run_info",
]

CHECKPOINT_FORMAT = "padless-checkpoint"
CHECKPOINT_VERSION = 1
TEXT_DIR = "text"  # the TextProcessor, inside the run directory
RUN_INFO = "run.json"  # facts about the run that are not config: where its data lives
# What `--checkpoint` chooses, RUN_DIR/NAME.pt: the best validation loss, the newest state,
# the average written by `padless average`. Commands take their choices from here.
CHECKPOINT_NAMES = ("best", "latest", "averaged")
KEPT_DIR = "checkpoints"  # train.keep_best / keep_last: RUN_DIR/checkpoints/step-N.pt
KEPT_INDEX = "kept.json"  # ... and their steps and validation losses


def _no_best() -> dict[str, Any]:
    return {"loss": math.inf, "step": 0, "bad_validations": 0}


# The types a checkpoint's fields must have; anything else is a damaged or foreign file.
_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "step": int, "config": dict, "vocab": dict, "text": dict, "model": dict, "world_size": int,
    "early_stopping": dict, "train_time_s": (int, float), "optimized": (dict, type(None)),
    "scaler": (dict, type(None)),
}


def _archive_damage(path: Path) -> str | None:
    """What is wrong with the zip archive ``torch.save`` wrote at ``path``, or None.

    torch does not check the archive's CRC-32s: a flipped byte in a tensor loads silently.

    Raises:
        UserError: if the file is no zip archive at all (not something torch.save wrote).
    """
    with open(path, "rb") as f:
        magic = f.read(4)
    if not magic:
        return "the file is empty"
    if magic != b"PK\x03\x04":
        raise UserError(f"{path}: not a padless checkpoint (not a file torch.save writes)")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError, ValueError) as e:
        return f"not a complete checkpoint archive: {e}"
    return None if bad is None else f"{bad} fails its checksum"


def _reason(error: BaseException) -> str:
    """The first sentence of torch's error, never its advice to load with weights_only=False
    (that would run whatever code the file holds)."""
    first = str(error).strip().split("\n")[0].split(". ")[0].strip()
    return type(error).__name__ if not first or "weights_only" in first else first


@dataclass
class Checkpoint:
    """A training state: the model, how to go on training it, and what it was trained on.

    Attributes:
        step: optimiser steps taken.
        config: the run's :class:`padless.training.config.Config` as plain dicts.
        vocab: the vocabulary (:meth:`padless.data.vocabulary.Vocabulary.to_dict`).
        text: the text settings, ``{"normalize": ..., "tokenizer": ...}``.
        model: the model's ``state_dict``: the weights every command decodes with (their
            moving average when the run keeps one, ``train.ema_decay``).
        optimized: with ``train.ema_decay``, the optimiser's own weights, which a resumed
            run goes on training (None otherwise, and in a weights-only file).
        optimizer, scheduler, sampler: their ``state_dict`` s (None in a weights-only file).
        scaler: the fp16 gradient scaler's ``state_dict`` (None without one).
        rng: every process's random states, in rank order (:func:`get_rng_state`).
        world_size: processes that trained it.
        early_stopping: ``{"loss": best validation loss, "step", "bad_validations"}``.
        valid: the validation metrics at ``step`` (None if not validated there).
        train_time_s: seconds spent in training steps, over all invocations.
    """

    step: int
    config: dict[str, Any]
    vocab: dict[str, Any]
    text: dict[str, str]
    model: dict[str, torch.Tensor]
    optimized: dict[str, torch.Tensor] | None = None
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None
    sampler: dict[str, Any] | None = None
    scaler: dict[str, Any] | None = None
    rng: list[dict[str, Any]] | None = None
    world_size: int = 1
    early_stopping: dict[str, Any] = field(default_factory=_no_best)
    valid: dict[str, float] | None = None
    train_time_s: float = 0.0

    @property
    def vocab_size(self) -> int:
        return len(self.vocab["tokens"])

    def weights_only(self) -> Checkpoint:
        """The same checkpoint without what only resuming needs (optimiser, RNG, ...)."""
        return replace(self, optimized=None, optimizer=None, scheduler=None, sampler=None,
                       scaler=None, rng=None)

    def weight_average(self) -> dict[str, torch.Tensor] | None:
        """The moving average of the weights, if the run kept one (``train.ema_decay``)."""
        return None if self.optimized is None else self.model

    def run_config(self) -> Config:
        """The run's config, checked (older checkpoints get defaults for newer keys)."""
        return Config.from_dict(self.config)

    # -- files ------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write the checkpoint atomically: a reader sees the old file or the new one."""
        state = {f.name: getattr(self, f.name) for f in fields(self)}
        # vocab_size and pad_id are derived; they are kept for readers of the version-1 files
        state.update(format=CHECKPOINT_FORMAT, version=CHECKPOINT_VERSION,
                     vocab_size=self.vocab_size, pad_id=PAD_ID)
        atomic_write(path, lambda f: torch.save(state, f))

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        map_location: torch.device | str | None = "cpu",
        *,
        mmap: bool = False,
    ) -> Checkpoint:
        """Read a checkpoint with ``weights_only=True``, after checking the file's checksums.

        ``mmap``: map the tensors instead of reading them (to look at the config only).

        Raises:
            UserError: one line naming the file: missing, truncated or damaged, not a
                padless checkpoint, of another version, or holding objects that are not
                plain data (such a file is never unpickled beyond that).
        """
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: no such checkpoint")
        damage = _archive_damage(path)
        if damage is not None:
            raise UserError(f"{path}: cannot read the checkpoint, the file is truncated or "
                            f"corrupt ({damage})")
        try:
            state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
        except pickle.UnpicklingError:
            raise UserError(f"{path}: not a padless checkpoint (it holds Python objects, "
                            "not only tensors and plain values; it is not loaded)") from None
        except MemoryError:
            raise
        except Exception as e:  # a damaged file fails the unpickler in many ways
            raise UserError(f"{path}: cannot read the checkpoint, the file is truncated or "
                            f"corrupt ({_reason(e)})") from None
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise UserError(f"{path}: not a padless checkpoint")
        if state.get("version") != CHECKPOINT_VERSION:
            raise UserError(
                f"{path}: checkpoint version {state.get('version')!r}; this padless reads "
                f"version {CHECKPOINT_VERSION} (use the padless release that wrote it)"
            )
        known = {f.name for f in fields(cls)}
        try:
            for name, kind in _FIELD_TYPES.items():
                if name in state and not isinstance(state[name], kind):
                    raise TypeError(f"{name} is a {type(state[name]).__name__}")
            checkpoint = cls(**{k: v for k, v in state.items() if k in known})
            Vocabulary.from_dict(checkpoint.vocab)
            checkpoint.run_config()
        except (TypeError, ValueError) as e:
            raise UserError(f"{path}: a damaged padless checkpoint ({e})") from None
        return checkpoint

    # -- using it ---------------------------------------------------------------------

    def check_compatible(self, config: Config, text: TextProcessor, path: str | Path) -> None:
        """Raise a UserError naming ``path`` if ``config``'s model or ``text`` differ from it."""
        if self.run_config().model != config.model:
            raise UserError(f"{path}: the model settings differ from the checkpoint's")
        if self.vocab != text.vocab.to_dict():
            raise UserError(f"{path}: the data's vocabulary differs from the checkpoint's: go on "
                            "with the prepared dataset the run was trained on")
        if self.text != text_settings(text):
            raise UserError(f"{path}: the text settings differ from the checkpoint's: go on "
                            "with the prepared dataset the run was trained on")

    def build_model(self, device: torch.device | str = "cpu") -> EncoderDecoder:
        """The model with the checkpoint's weights, on ``device``, in eval mode."""
        model = build_model(self.run_config().model, self.vocab_size, pad_id=PAD_ID)
        try:
            model.load_state_dict(self.model)
        except RuntimeError as e:
            raise UserError(
                f"the checkpoint's weights do not fit its model config ({_reason(e)})") from None
        return model.to(device).eval()

    def restore(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                scheduler: Any, sampler: Any, scaler: torch.amp.GradScaler | None = None) -> None:
        """Load the training state into a fresh model, optimiser, scheduler, sampler (and
        fp16 gradient scaler: a run that had none starts it afresh).

        Raises:
            UserError: if the sampler's position belongs to another training split or seed.
        """
        model.load_state_dict(self.model if self.optimized is None else self.optimized)
        optimizer.load_state_dict(self.optimizer)
        scheduler.load_state_dict(self.scheduler)
        if scaler is not None and self.scaler is not None:
            scaler.load_state_dict(self.scaler)
        try:
            sampler.load_state_dict(self.sampler)
        except ValueError as e:  # the sampler's own check: resuming would repeat or skip pairs
            raise UserError(f"{e}; resume with the dataset, train.seed and train.max_length "
                            "the run started with") from None


def text_settings(text: TextProcessor) -> dict[str, str]:
    """What a checkpoint records of a TextProcessor besides its vocabulary."""
    return {"normalize": text.normalize, "tokenizer": text.tokenizer.name}


def checkpoint_path(run_dir: str | os.PathLike, which: str = "latest") -> Path:
    """``RUN_DIR/WHICH.pt`` for ``which`` in :data:`CHECKPOINT_NAMES`."""
    if which not in CHECKPOINT_NAMES:
        raise UserError(f"checkpoint: which must be one of {', '.join(CHECKPOINT_NAMES)}, "
                         f"got {which!r}")
    return Path(run_dir) / f"{which}.pt"


def load_model(
    run_dir: str | os.PathLike,
    which: str = "best",
    device: torch.device | str | None = None,
) -> tuple[EncoderDecoder, TextProcessor, Config]:
    """The trained model (in eval mode), its TextProcessor and config, from a run directory.

    Args:
        run_dir: the ``--out`` directory of ``padless train``.
        which: ``"best"`` (lowest validation loss), ``"latest"`` or ``"averaged"`` (see
            :data:`CHECKPOINT_NAMES`).
        device: where to put the model; default CUDA when available, else CPU.

    Raises:
        UserError: naming the file that is missing or does not match the run.
    """
    path = checkpoint_path(run_dir, which)
    device = resolve_device() if device is None else device
    checkpoint = Checkpoint.load(path, map_location=device)
    text = TextProcessor.load(Path(run_dir) / TEXT_DIR)
    if checkpoint.vocab != text.vocab.to_dict() or checkpoint.text != text_settings(text):
        raise UserError(
            f"{path}: the vocabulary or text settings in the checkpoint differ from "
            f"{Path(run_dir) / TEXT_DIR}"
        )
    try:
        model = checkpoint.build_model(device)
    except UserError as e:
        raise UserError(f"{path}: {e}") from None
    return model, text, checkpoint.run_config()


@dataclass(frozen=True)
class KeptCheckpoint:
    """A checkpoint kept by ``train.keep_best`` / ``keep_last``: its step, validation loss
    and file (weights only)."""

    step: int
    loss: float
    path: Path


def kept_checkpoints(run_dir: str | os.PathLike) -> list[KeptCheckpoint]:
    """The run's kept checkpoints, oldest first (empty if none were kept)."""
    index = Path(run_dir) / KEPT_DIR / KEPT_INDEX
    if not index.is_file():
        return []
    try:
        entries = json.loads(index.read_text(encoding="utf-8"))
        kept = [KeptCheckpoint(int(e["step"]), float(e["loss"]),
                               index.parent / f"step-{int(e['step']):08d}.pt") for e in entries]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise UserError(f"{index}: a damaged index of kept checkpoints ({e})") from None
    return sorted(kept, key=lambda k: k.step)


def keep_checkpoint(
    run_dir: str | os.PathLike,
    checkpoint: Checkpoint,
    *,
    keep_best: int,
    keep_last: int,
) -> None:
    """Add ``checkpoint`` (validated: ``checkpoint.valid`` holds its loss) to the kept ones,
    weights only, and delete those that are neither among the ``keep_best`` lowest
    validation losses nor among the ``keep_last`` newest.

    Kept checkpoints from a later step than ``checkpoint`` are forgotten first: they come
    from a run that was interrupted and resumed from an earlier state.
    """
    if checkpoint.valid is None:
        raise ValueError("keep_checkpoint: the checkpoint has no validation loss")
    directory = Path(run_dir) / KEPT_DIR
    directory.mkdir(parents=True, exist_ok=True)
    kept = [k for k in kept_checkpoints(run_dir) if k.step < checkpoint.step]
    new = KeptCheckpoint(checkpoint.step, float(checkpoint.valid["loss"]),
                         directory / f"step-{checkpoint.step:08d}.pt")
    checkpoint.weights_only().save(new.path)
    kept.append(new)
    best = sorted(kept, key=lambda k: (k.loss, -k.step))[:keep_best]
    last = kept[-keep_last:] if keep_last else []
    chosen = {k.step for k in best + last}
    write_json_atomic(directory / KEPT_INDEX,
                      [{"step": k.step, "loss": k.loss} for k in kept if k.step in chosen])
    for path in directory.glob("step-*.pt"):  # dropped ones, and any a crash left behind
        if path not in {k.path for k in kept if k.step in chosen}:
            path.unlink(missing_ok=True)


def average_checkpoints(paths: Sequence[str | os.PathLike]) -> Checkpoint:
    """One checkpoint whose weights are the mean of the ``paths`` ' weights (float64 sums,
    cast back), as fairseq's ``average_checkpoints`` does; weights only.

    The others' fields (config, vocabulary, step, time) are the newest checkpoint's.

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
        if first is None:
            first = checkpoint
        elif (checkpoint.run_config().model != first.run_config().model
              or checkpoint.vocab != first.vocab or checkpoint.text != first.text
              or checkpoint.model.keys() != first.model.keys()):
            raise UserError(f"{path}: another model, vocabulary or text than {paths[0]}; "
                             "only checkpoints of one run can be averaged")
        for name, tensor in checkpoint.model.items():
            if tensor.is_floating_point():
                total[name] = total.get(name, 0) + tensor.double()
            else:  # integer buffers (counters) are not averaged: the newest is kept
                total[name] = tensor
        if newest is None or checkpoint.step >= newest.step:
            newest = checkpoint
    model = {name: (t / len(paths)).to(first.model[name].dtype)
             if first.model[name].is_floating_point() else t for name, t in total.items()}
    return replace(newest.weights_only(), model=model, valid=None)


def write_run_info(run_dir: str | os.PathLike, **info: Any) -> None:
    """Record plain facts about a run (``data_dir=...``, ``precision={...}``) in
    ``RUN_DIR/run.json`` (JSON values)."""
    write_json_atomic(Path(run_dir) / RUN_INFO, info)


def read_run_info(run_dir: str | os.PathLike) -> dict[str, Any]:
    """What :func:`write_run_info` recorded; empty for a run without ``run.json``.

    Raises:
        UserError: if the file is not a JSON object, or its ``data_dir`` not a string.
    """
    path = Path(run_dir) / RUN_INFO
    if not path.is_file():
        return {}
    fix = "fix or delete it (then give --data DATA_DIR)"
    try:
        info = json.loads(read_utf8(path))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg}); {fix}") from None
    except RecursionError:
        raise UserError(f"{path}: not valid run information; {fix}") from None
    if not isinstance(info, dict) or not isinstance(info.get("data_dir", ""), str):
        raise UserError(f"{path}: expected a JSON object with a data_dir string; {fix}")
    return info


def resumed_config(run_dir: str | os.PathLike, overrides: list[str] = ()) -> Config:
    """The config a resumed run goes on with: the one ``RUN_DIR/latest.pt`` was trained with.

    The checkpoint holds the whole config, written atomically with the weights it belongs
    to; ``config.yaml`` is a copy for people to read. ``overrides`` (``--set key=value``)
    may change ``train.*`` keys, not the model.

    Raises:
        UserError: if there is no checkpoint to resume or it is damaged, or an override
            is bad or changes the model.
    """
    path = checkpoint_path(run_dir, "latest")
    if not path.exists():
        raise ConfigError(f"{path}: no checkpoint to resume; start the run without --resume")
    saved = Checkpoint.load(path, mmap=True).run_config()
    config = Config.from_dict(apply_overrides(saved.to_dict(), list(overrides)))
    for key, value in config.to_dict()["model"].items():
        if value != getattr(saved.model, key):
            raise ConfigError(f"model.{key}: the model of a resumed run cannot change "
                              f"(it is {getattr(saved.model, key)!r})")
    return config


def get_rng_state() -> dict[str, Any]:
    """This process's random states as tensors and plain types.

    torch's CPU generator drives dropout and the teacher-forcing coins on CPU, CUDA's
    generators dropout on the GPU, and Python's ``random`` whatever else may draw from it.
    """
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [version, list(internal), gauss_next],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    torch.set_rng_state(state["torch"].cpu())
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
