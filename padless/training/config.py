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
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from padless.models.config import DROPOUT_KEYS, ModelConfig
from padless.runs.checkpoint import Checkpoint
from padless.runs.directory import RunDirectory
from padless.runtime.devices import check_device_name
from padless.runtime.errors import UserError
from padless.runtime.files import read_utf8
from padless.runtime.options import ConfigError, check_options, option, options_from_dict, shown
from padless.runtime.yaml_text import YamlProblem, load_yaml

__all__ = [
    "Config",
    "TrainConfig",
    "apply_overrides",
    "bundled_configs",
    "load_config",
    "resumed_config",
]


@dataclass
class TrainConfig:
    """How to train. Steps are optimiser steps (one step = ``accumulate`` micro-batches).

    A micro-batch is ``batch_size`` pairs or at most ``max_tokens`` padded tokens (exactly one
    of the two). Both are global: under ``torchrun`` each micro-batch is split over the
    processes, so N processes see the same batches as one. Each field's help says what it is
    (``docs/training.md`` tabulates them).
    """

    batch_size: int | None = option(64, "pairs per micro-batch (or set max_tokens and make "
                                    "this null)", minimum=1)
    max_tokens: int | None = option(None, "padded tokens per micro-batch, at most (pairs of "
                                    "similar lengths together)", minimum=1)
    accumulate: int = option(1, "micro-batches per optimiser step", flag="--accumulate",
                             metavar="K", minimum=1)
    lr: float = option(1e-4, "learning rate", minimum=0, open_min=True)
    decoder_lr_ratio: float = option(5.0, "the decoder's learning rate over the encoder's "
                                     "(the tutorial's 5)", minimum=0, open_min=True)
    betas: tuple[float, float] = option((0.9, 0.999), "Adam's betas", minimum=0, maximum=1,
                                        open_max=True)
    weight_decay: float = option(0.0, "AdamW's weight decay", minimum=0)
    clip: float | None = option(50.0, "largest gradient norm (null: no clipping)", minimum=0,
                                open_min=True)
    warmup_steps: int = option(0, "linear warm-up from 0 to lr over this many steps",
                               minimum=0)
    decay: Literal["constant", "linear", "cosine", "inverse_sqrt"] = option(
        "constant", "the learning rate's schedule after the warm-up")
    min_lr_ratio: float = option(0.0, "linear and cosine decay end at lr * min_lr_ratio ...",
                                 minimum=0, maximum=1)
    decay_steps: int | None = option(None, "... at this step (null: max_steps; then a resumed "
                                     "run with a larger --max-steps stretches the rest of the "
                                     "schedule)", minimum=1)
    teacher_forcing_ratio: float = option(1.0, "GRU: the share of batches (or tokens) fed the "
                                          "reference instead of the model's own guess",
                                          minimum=0, maximum=1)
    teacher_forcing: Literal["batch", "token"] = option(
        "batch", "GRU: teacher forcing decided per batch (the tutorial) or per token")
    label_smoothing: float = option(0.0, "label smoothing of the loss", minimum=0, maximum=1)
    word_dropout: float = option(0.0, "each real source token and decoder input is <unk> "
                                 "with this probability (a regulariser for small corpora)",
                                 minimum=0, maximum=1)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = option(
        "auto", "what to train in: auto picks bf16 or fp16 where this device runs it fast, "
        "else fp32; bf16 and fp16 under autocast, fp16 (CUDA only) with a gradient scaler",
        flag="--precision")
    max_steps: int = option(10000, "total optimiser steps (counts resumed steps too)",
                            flag="--max-steps", minimum=1)
    max_time: float | None = option(None, "stop after this many minutes of training in this "
                                    "invocation, then validate and save (null: no limit)",
                                    flag="--max-time", metavar="MINUTES", minimum=0,
                                    open_min=True)
    valid_every: int | Literal["auto"] = option(
        500, "steps between validations and latest checkpoints (auto: half an epoch, within "
        "50 to 500 steps)", minimum=1)
    log_every: int = option(50, "steps between log rows", minimum=1)
    patience: int | None = option(None, "stop after this many validations without a new best "
                                  "(null: never)", minimum=1)
    plateau_factor: float | None = option(
        None, "multiply the learning rate by this at every validation without a new best "
        "(null: never)", minimum=0, maximum=1, open_min=True, open_max=True)
    ema_decay: float | None = option(
        None, "validate, save and decode with the moving average of the weights at this "
        "decay (null: the weights themselves)", minimum=0, maximum=1, open_min=True,
        open_max=True)
    keep_best: int = option(0, "keep the weights of the K best validations (padless average "
                            "--best)", minimum=0)
    keep_last: int = option(0, "... and of the K most recent ones (padless average --last)",
                            minimum=0)
    seed: int = option(0, "seed of the weights, the data order and the random draws",
                       minimum=0, maximum=2**31 - 1)
    device: str = option("auto", "auto (cuda when available), cpu, cuda, cuda:1, ...")
    max_length: int | None = option(1000, "pairs with more tokens than this on a side are "
                                    "left out of training and validation (a guard: one "
                                    "runaway pair can take minutes and all the memory); null: "
                                    "no limit", minimum=1)

    def __post_init__(self) -> None:
        check_options(self, "train")
        if (self.batch_size is None) == (self.max_tokens is None):
            raise ConfigError(
                "train.batch_size / train.max_tokens: set exactly one of them "
                f"(got batch_size={self.batch_size}, max_tokens={self.max_tokens}); "
                "set the other to null"
            )
        try:
            check_device_name(self.device)
        except UserError as e:
            raise ConfigError(f"train.device: {e}") from None

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
        return options_from_dict(cls, data)

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


def bundled_configs() -> list[str]:
    """Names of the configs shipped in ``padless/training/configs`` (``--config NAME``)."""
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
                f"--set {shown(item)}: expected key=value, e.g. model.hidden_size=256")
        try:
            value = load_yaml(raw) if raw.strip() else None
        except YamlProblem as e:
            raise ConfigError(f"{key}: cannot parse value {shown(raw)} ({e})") from None
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


def fine_tune_config(model: ModelConfig, name_or_path: str = "finetune",
                     overrides: list[str] = ()) -> Config:
    """The config of a run that starts from another's weights (``train --init-from``): that
    run's ``model`` (its dropout may change), and the training settings of a bundled name
    or YAML path (default ``finetune``) with ``--set`` overrides.

    Raises:
        ConfigError: a model setting (from the file or ``--set``) other than the run's.
    """
    data = apply_overrides(_read_yaml(name_or_path), list(overrides))
    given = data.get("model") if isinstance(data.get("model"), dict) else {}
    own = asdict(model)
    for key, value in given.items():
        if key in own and key not in DROPOUT_KEYS and value != own[key]:
            raise ConfigError(f"model.{key}: {shown(value)}, but the model started from has "
                              f"{shown(own[key])}; a fine-tune keeps its model (only its "
                              "dropout may change)")
    data["model"] = {**own, **given}  # an unknown key is refused by name
    return Config.from_dict(data)


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
                              f"(it is {shown(getattr(saved.model, key))})")
    return config
