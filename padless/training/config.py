"""Run configuration: dataclasses loaded from YAML, overridden with ``--set key=value``.

One form only: the dataclasses below. A YAML file holds a (possibly partial) tree of them,
``--set train.lr=3e-4`` edits that tree by dotted key before it is checked, the resolved
config is written back as YAML into the run directory, and the checkpoint stores
:meth:`Config.to_dict` (plain types, so ``torch.load(weights_only=True)`` can read it).

Every unknown key and every badly typed, non-finite or out-of-range value is rejected with
its dotted name (``train.lr: expected a number, got 'fast'``; ``train.max_time: expected a
finite number, got inf``).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import reprlib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from padless.models.config import ModelConfig
from padless.runs.checkpoint import Checkpoint
from padless.runs.directory import RunDirectory
from padless.runtime.devices import check_device_name
from padless.runtime.errors import UserError
from padless.runtime.files import read_utf8
from padless.runtime.yaml_text import YamlProblem, load_yaml

__all__ = [
    "Config",
    "ConfigError",
    "TrainConfig",
    "apply_overrides",
    "bundled_configs",
    "load_config",
    "resumed_config",
]


class ConfigError(UserError):
    """A configuration key or value is wrong; the message starts with the dotted key."""


def _shown(value: object) -> str:
    """``repr(value)``, cut short: a 10 MB ``--set`` value would make a 10 MB message."""
    short = reprlib.Repr()  # keyword arguments only from Python 3.12
    short.maxstring = short.maxother = 60
    short.maxlist = short.maxdict = 6
    short.maxlevel = 3
    return short.repr(value)


@dataclass
class TrainConfig:
    """How to train. Steps are optimiser steps (one step = ``accumulate`` micro-batches).

    A micro-batch is ``batch_size`` pairs or at most ``max_tokens`` padded tokens (exactly one
    of the two). Both are global: under ``torchrun`` each micro-batch is split over the
    processes, so N processes see the same batches as one.
    """

    batch_size: int | None = 64
    max_tokens: int | None = None
    accumulate: int = 1  # micro-batches per optimiser step
    lr: float = 1e-4
    decoder_lr_ratio: float = 5.0  # the tutorial trains the decoder with a 5x learning rate
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    clip: float | None = 50.0  # max gradient norm; null disables clipping
    warmup_steps: int = 0  # linear warm-up from 0 to lr
    decay: Literal["constant", "linear", "cosine", "inverse_sqrt"] = "constant"
    min_lr_ratio: float = 0.0  # linear/cosine decay ends at lr * min_lr_ratio ...
    decay_steps: int | None = None  # ... at this step; null: max_steps (then a resumed run
    # with a larger --max-steps stretches the rest of the schedule)
    teacher_forcing_ratio: float = 1.0
    teacher_forcing: Literal["batch", "token"] = "batch"
    label_smoothing: float = 0.0
    word_dropout: float = 0.0  # each real source token and decoder input is UNK with this
    # probability during training (Batch.with_word_dropout); a regulariser for small corpora
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: chosen for the device
    # at start (padless.runtime.precision); fp16 (CUDA only) trains with a gradient scaler
    max_steps: int = 10000
    max_time: float | None = None  # minutes of training in this invocation; null: no limit
    valid_every: int | Literal["auto"] = 500  # steps between validations (and `latest`
    # checkpoints); auto: half an epoch, within 50 to 500 steps (small data: often)
    log_every: int = 50  # steps between CSV/TensorBoard rows
    patience: int | None = None  # stop after this many validations without improvement
    plateau_factor: float | None = None  # multiply the lr by this at every validation
    # without a new best (a schedule that adapts to over-fitting); null: never
    ema_decay: float | None = None  # validate, save and decode with the moving average of
    # the weights at this decay (padless.training.ema); null: the weights themselves
    keep_best: int = 0  # keep the weights of the K best validations (padless average --best)
    keep_last: int = 0  # ... and of the K most recent ones (padless average --last)
    seed: int = 0
    device: str = "auto"  # auto (cuda when available), cpu, cuda, cuda:1, ...
    # Pairs with more tokens than this on a side are left out of training and validation (a
    # guard: one runaway pair can take minutes and all the memory); null: no limit.
    max_length: int | None = 1000

    def __post_init__(self) -> None:
        floats = ("lr", "decoder_lr_ratio", "weight_decay", "clip", "min_lr_ratio",
                  "teacher_forcing_ratio", "label_smoothing", "word_dropout", "max_time",
                  "ema_decay")
        for name in floats:
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ConfigError(f"train.{name}: expected a finite number, got {value}")
        if not all(math.isfinite(b) for b in self.betas):
            raise ConfigError(f"train.betas: expected finite numbers, got {list(self.betas)}")
        if (self.batch_size is None) == (self.max_tokens is None):
            raise ConfigError(
                "train.batch_size / train.max_tokens: set exactly one of them "
                f"(got batch_size={self.batch_size}, max_tokens={self.max_tokens}); "
                "set the other to null"
            )
        positive = ("batch_size", "max_tokens", "accumulate", "max_steps", "decay_steps",
                    "valid_every", "log_every", "patience", "max_length")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, int) and value < 1:
                raise ConfigError(f"train.{name}: must be >= 1, got {value}")
        for name in ("lr", "decoder_lr_ratio", "clip", "max_time"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"train.{name}: must be > 0, got {value}")
        for name in ("min_lr_ratio", "teacher_forcing_ratio", "label_smoothing", "word_dropout"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"train.{name}: must be in [0, 1], got {getattr(self, name)}")
        for name in ("warmup_steps", "weight_decay", "keep_best", "keep_last"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name}: must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.seed < 2**31:  # the trainer derives per-rank seeds from it
            raise ConfigError(f"train.seed: must be in [0, 2**31), got {self.seed}")
        try:
            check_device_name(self.device)
        except UserError as e:
            raise ConfigError(f"train.device: {e}") from None
        if self.plateau_factor is not None and not 0.0 < self.plateau_factor < 1.0:
            raise ConfigError(
                f"train.plateau_factor: must be in (0, 1) or null, got {self.plateau_factor}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ConfigError(f"train.ema_decay: must be in (0, 1) or null, got {self.ema_decay}")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"train.betas: each must be in [0, 1), got {list(self.betas)}")


    def valid_steps(self, batches_per_epoch: int) -> int:
        """``valid_every`` in steps: ``auto`` is half an epoch, within 50 to 500 steps."""
        if self.valid_every != "auto":
            return self.valid_every
        return min(500, max(50, batches_per_epoch // self.accumulate // 2))


@dataclass
class Config:
    """Everything a run needs besides the data: the model and how to train it."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        """What one section allows depends on the other."""
        if self.model.arch == "transformer" and self.train.teacher_forcing_ratio != 1.0:
            raise ConfigError(
                "train.teacher_forcing_ratio: the transformer trains with teacher forcing "
                f"only; set it to 1.0 (got {self.train.teacher_forcing_ratio})"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dicts/lists/numbers/strings (YAML- and ``weights_only``-safe)."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        """Build and check a config from a (partial) nested dict; missing keys keep defaults.

        Raises:
            ConfigError: naming the first unknown key or bad value.
        """
        return _build(cls, data, "")

    def to_yaml(self) -> str:
        """The resolved config as YAML, keys in declaration order."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _plain(value: Any) -> Any:
    """Tuples become lists so YAML and the checkpoint hold only plain types."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _build(cls: type, data: Any, prefix: str) -> Any:
    """Instantiate dataclass ``cls`` from ``data``, checking every key against its fields."""
    where = prefix.rstrip(".") or "the config"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of keys, got {_shown(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f"; did you mean {prefix}{close[0]}?" if close else ""
            raise ConfigError(
                f"{prefix}{key}: unknown key (valid keys: {', '.join(fields)}){hint}"
            )
    kwargs = {
        key: _convert(hints[key], value, f"{prefix}{key}") for key, value in data.items()
    }
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        # Another module's dataclass (ModelConfig) validates in its own words: add the place.
        raise ConfigError(f"{where}: {e}") from None


def _convert(hint: Any, value: Any, key: str) -> Any:
    """Check ``value`` against the type ``hint`` of ``key``; return it converted."""
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key + ".")
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _convert(option, value, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: bad value {_shown(value)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(
                f"{key}: must be one of {', '.join(map(str, args))}; got {_shown(value)}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple) or len(value) != len(args):
            raise ConfigError(f"{key}: expected a list of {len(args)} values, got {_shown(value)}")
        pairs = enumerate(zip(args, value, strict=True))
        return tuple(_convert(a, v, f"{key}[{i}]") for i, (a, v) in pairs)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {_shown(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {_shown(value)}")
        return value
    if hint is float:
        # YAML 1.1 reads "1e-4" (no dot) as a string; accept it as the number it clearly is.
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {_shown(value)}")
        if not math.isfinite(value):  # YAML's .inf and .nan, or "inf" and "nan"
            raise ConfigError(f"{key}: expected a finite number, got {_shown(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {_shown(value)}")
        return value
    raise ConfigError(f"{key}: unsupported field type {hint!r}")  # a bug in the dataclass


def bundled_configs() -> list[str]:
    """Names of the configs shipped in ``padless/configs`` (``--config NAME``)."""
    directory = resources.files("padless.training") / "configs"
    return sorted(p.name[:-5] for p in directory.iterdir() if p.name.endswith(".yaml"))


def _read_yaml(name_or_path: str) -> dict[str, Any]:
    """The YAML mapping of a bundled config name (``tutorial``) or a file path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        try:
            text = read_utf8(path)
        except OSError as e:
            raise ConfigError(f"{path}: cannot read the config ({e.strerror})") from None
    elif name_or_path in bundled_configs():
        text = (resources.files("padless.training") / "configs" / f"{name_or_path}.yaml").read_text(
            encoding="utf-8"
        )
    else:
        raise ConfigError(
            f"{name_or_path}: neither a config file nor a bundled config "
            f"(bundled: {', '.join(bundled_configs())})"
        )
    try:
        data = load_yaml(text)
    except YamlProblem as e:
        line = f":{e.line}" if e.line is not None else ""
        raise ConfigError(f"{name_or_path}{line}: not valid YAML ({e})") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{name_or_path}: the config must be a mapping (model:, train:)")
    return data or {}


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a nested dict in place.

    Unknown keys are left for :meth:`Config.from_dict` to reject with their full name.
    """
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(
                f"--set {_shown(item)}: expected key=value, e.g. model.hidden_size=256")
        try:
            value = load_yaml(raw) if raw.strip() else None
        except YamlProblem as e:
            raise ConfigError(f"{key}: cannot parse value {_shown(raw)} ({e})") from None
        node = data
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{'.'.join(parts[: i + 1])}: is a value, not a section")
            node = child
        node[parts[-1]] = value
    return data


def load_config(name_or_path: str | None = None, overrides: list[str] = ()) -> Config:
    """The config of a bundled name or YAML path (defaults if None), with ``--set`` overrides."""
    data = _read_yaml(name_or_path) if name_or_path is not None else {}
    return Config.from_dict(apply_overrides(data, list(overrides)))


def resumed_config(run_dir: str | Path, overrides: list[str] = ()) -> Config:
    """The config a resumed run goes on with: the one ``RUN_DIR/latest.pt`` was trained with.

    The checkpoint holds the whole config, written atomically with the weights it belongs
    to; ``config.yaml`` is a copy for people to read. ``overrides`` (``--set key=value``)
    may change ``train.*`` keys, not the model.

    Raises:
        UserError: if there is no checkpoint to resume or it is damaged, or an override
            is bad or changes the model.
    """
    path = RunDirectory(run_dir).latest
    if not path.exists():
        raise ConfigError(f"{path}: no checkpoint to resume; start the run without --resume")
    saved = Config.from_dict(Checkpoint.load(path, mmap=True).config)
    config = Config.from_dict(apply_overrides(saved.to_dict(), list(overrides)))
    for key, value in config.to_dict()["model"].items():
        if value != getattr(saved.model, key):
            raise ConfigError(f"model.{key}: the model of a resumed run cannot change "
                              f"(it is {_shown(getattr(saved.model, key))})")
    return config
