"""A run's checkpoint file: :class:`Checkpoint`, the only code that knows the format, and the
:class:`TrainState` it carries.

A checkpoint file is a dict of tensors and plain Python values, written atomically and read
with ``torch.load(path, weights_only=True)``: loading a checkpoint from someone else cannot
run their code. Before that, every member of the file (a zip archive) is checked against its
CRC-32, so a damaged file is refused instead of loading with wrong weights.

Version 2 (this one) names both sets of weights: ``weights`` (what the optimiser trains) and
``ema_weights`` (their moving average, ``train.ema_decay``: what every command decodes with).
Version 1 files (padless before 2026-12) held ``model`` (the average, when the run kept one)
and ``optimized`` (then the optimiser's); they load as version 2.
"""

from __future__ import annotations

import math
import os
import pickle
import zipfile
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from padless.data.text import TextProcessor
from padless.data.vocabulary import Vocabulary
from padless.models import EncoderDecoder, ModelConfig, build_model
from padless.runtime.errors import UserError
from padless.runtime.files import atomic_write

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "Checkpoint", "TrainState",
           "text_settings"]

CHECKPOINT_FORMAT = "padless-checkpoint"
CHECKPOINT_VERSION = 2


@dataclass
class TrainState:
    """What a run changes as it goes; a checkpoint holds it, so a resumed run goes on from it.

    Attributes:
        step: optimiser steps taken.
        train_time_s: seconds inside training steps, over all invocations.
        best_loss: the lowest validation loss so far (inf before the first) ...
        best_step: ... and its step.
        bad_validations: validations since the best one (early stopping counts them).
        lr_scale: ``train.plateau_factor ** bad validations so far``, the plateau schedule's
            multiplier of the learning rate.
    """

    step: int = 0
    train_time_s: float = 0.0
    best_loss: float = math.inf
    best_step: int = 0
    bad_validations: int = 0
    lr_scale: float = 1.0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainState:
        """The state :func:`dataclasses.asdict` gave; missing fields keep their defaults.

        Raises:
            TypeError: on an unknown field or a value of the wrong type.
        """
        state = cls(**data)
        for f in fields(cls):
            value = getattr(state, f.name)
            kind = int if f.type == "int" else (int, float)
            if isinstance(value, bool) or not isinstance(value, kind):
                raise TypeError(f"train state {f.name} is a {type(value).__name__}")
        return state


# The types a checkpoint's fields must have; anything else is a damaged or foreign file.
_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "config": dict, "vocab": dict, "text": dict, "weights": dict,
    "ema_weights": (dict, type(None)), "state": dict, "world_size": int,
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


def text_settings(text: TextProcessor) -> dict[str, str]:
    """What a checkpoint records of a TextProcessor besides its vocabulary."""
    return {"normalize": text.normalize, "tokenizer": text.tokenizer.name}


@dataclass
class Checkpoint:
    """A training state: the model, how to go on training it, and what it was trained on.

    Attributes:
        config: the run's config (``padless.training.config.Config.to_dict()``: plain dicts).
        vocab: the vocabulary (:meth:`padless.data.vocabulary.Vocabulary.to_dict`).
        text: the text settings, ``{"normalize": ..., "tokenizer": ...}``.
        weights: the model's ``state_dict`` as the optimiser left it.
        ema_weights: the moving average of the weights (``train.ema_decay``), which every
            command decodes with; None when the run keeps none.
        state: the :class:`TrainState` (step, time, best validation, plateau schedule).
        optimizer, scheduler, sampler, scaler: their ``state_dict`` s (None in a weights-only
            file; ``scaler`` also without fp16).
        rng: every process's random states, in rank order (None in a weights-only file).
        world_size: processes that trained it.
        valid: the validation metrics at ``state.step`` (None if not validated there).
    """

    config: dict[str, Any]
    vocab: dict[str, Any]
    text: dict[str, str]
    weights: dict[str, torch.Tensor]
    ema_weights: dict[str, torch.Tensor] | None = None
    state: TrainState = field(default_factory=TrainState)
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None
    sampler: dict[str, Any] | None = None
    scaler: dict[str, Any] | None = None
    rng: list[dict[str, Any]] | None = None
    world_size: int = 1
    valid: dict[str, float] | None = None

    @property
    def step(self) -> int:
        return self.state.step

    @property
    def vocab_size(self) -> int:
        return len(self.vocab["tokens"])

    @property
    def decoding_weights(self) -> dict[str, torch.Tensor]:
        """The weights to decode with: the moving average when the run keeps one."""
        return self.weights if self.ema_weights is None else self.ema_weights

    def weights_only(self) -> Checkpoint:
        """The same checkpoint without what only resuming needs (optimiser, RNG, ...)."""
        return replace(self, optimizer=None, scheduler=None, sampler=None, scaler=None,
                       rng=None)

    def model_config(self) -> ModelConfig:
        """The model's config (checked; older checkpoints get defaults for newer keys)."""
        return ModelConfig(**self.config.get("model", {}))

    def check_text(self, text: TextProcessor, path: str | os.PathLike) -> None:
        """Raise a UserError naming ``path`` if ``text`` is not what the model was trained on."""
        if self.vocab != text.vocab.to_dict():
            raise UserError(f"{path}: the vocabulary differs from the checkpoint's: use the "
                            "prepared dataset (or run) the model was trained on")
        if self.text != text_settings(text):
            raise UserError(f"{path}: the text settings (normaliser, tokenizer) differ from "
                            "the checkpoint's: use the dataset the model was trained on")

    def build_model(self, device: torch.device | str = "cpu") -> EncoderDecoder:
        """The model with the decoding weights, on ``device``, in eval mode."""
        vocab = Vocabulary.from_dict(self.vocab)
        model = build_model(self.model_config(), len(vocab), vocab.specials)
        try:
            model.load_state_dict(self.decoding_weights)
        except RuntimeError as e:
            raise UserError(
                f"the checkpoint's weights do not fit its model config ({_reason(e)})") from None
        return model.to(device).eval()

    # -- files ------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write the checkpoint atomically: a reader sees the old file or the new one."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        # vocab_size and pad_id are derived; they are kept for readers of the files
        data.update(format=CHECKPOINT_FORMAT, version=CHECKPOINT_VERSION, state=asdict(self.state),
                    vocab_size=self.vocab_size,
                    pad_id=Vocabulary.from_dict(self.vocab).specials.pad)
        atomic_write(path, lambda f: torch.save(data, f))

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
            data = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
        except pickle.UnpicklingError:
            raise UserError(f"{path}: not a padless checkpoint (it holds Python objects, "
                            "not only tensors and plain values; it is not loaded)") from None
        except MemoryError:
            raise
        except Exception as e:  # a damaged file fails the unpickler in many ways
            raise UserError(f"{path}: cannot read the checkpoint, the file is truncated or "
                            f"corrupt ({_reason(e)})") from None
        if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
            raise UserError(f"{path}: not a padless checkpoint")
        if data.get("version") not in (1, CHECKPOINT_VERSION):
            raise UserError(
                f"{path}: checkpoint version {data.get('version')!r}; this padless reads "
                f"versions 1 and {CHECKPOINT_VERSION} (use the padless release that wrote it)")
        try:
            return cls._checked(_from_version_1(data) if data["version"] == 1 else data)
        except (TypeError, ValueError) as e:
            raise UserError(f"{path}: a damaged padless checkpoint ({e})") from None

    @classmethod
    def _checked(cls, data: dict[str, Any]) -> Checkpoint:
        for name, kind in _FIELD_TYPES.items():
            if name in data and not isinstance(data[name], kind):
                raise TypeError(f"{name} is a {type(data[name]).__name__}")
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["state"] = TrainState.from_dict(values.get("state", {}))
        checkpoint = cls(**values)
        Vocabulary.from_dict(checkpoint.vocab)
        checkpoint.model_config()
        return checkpoint


def _from_version_1(data: dict[str, Any]) -> dict[str, Any]:
    """A version-1 checkpoint's fields as version 2's (see the module docstring)."""
    data = dict(data)
    model, optimized = data.pop("model", None), data.pop("optimized", None)
    data["weights"], data["ema_weights"] = (model, None) if optimized is None else (optimized,
                                                                                    model)
    best = data.pop("early_stopping", None) or {}
    if not isinstance(best, dict):
        raise TypeError("early_stopping is not a mapping")
    data["state"] = {"step": data.pop("step", 0), "train_time_s": data.pop("train_time_s", 0.0),
                     "best_loss": best.get("loss", math.inf), "best_step": best.get("step", 0),
                     "bad_validations": best.get("bad_validations", 0),
                     "lr_scale": best.get("lr_scale", 1.0)}
    return data
