"""Checkpoints: tensors and plain types only, written atomically, read with ``weights_only``.

A run directory holds ``latest.pt`` (the newest state, to resume from) and ``best.pt`` (the
lowest validation loss), both full training states, plus ``text/`` (the TextProcessor, whose
vocabulary and settings the checkpoints also record) and ``config.yaml``. A checkpoint is
a dict of plain Python values and tensors, so ``torch.load(path, weights_only=True)`` reads
it without unpickling any object: loading a checkpoint from someone else cannot run their
code.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import torch

from padless.config import Config
from padless.model import Seq2Seq
from padless.text import TextProcessor

__all__ = [
    "CHECKPOINT_FORMAT",
    "checkpoint_path",
    "get_rng_state",
    "load_checkpoint",
    "load_model",
    "save_checkpoint",
    "read_run_info",
    "set_rng_state",
    "write_run_info",
]

CHECKPOINT_FORMAT = "padless-checkpoint"
CHECKPOINT_VERSION = 1
TEXT_DIR = "text"  # the TextProcessor, inside the run directory
RUN_INFO = "run.json"  # facts about the run that are not config: where its data lives


def checkpoint_path(run_dir: str | os.PathLike, which: str = "latest") -> Path:
    """``RUN_DIR/latest.pt`` or ``RUN_DIR/best.pt``."""
    if which not in ("latest", "best"):
        raise ValueError(f"checkpoint: which must be 'latest' or 'best', got {which!r}")
    return Path(run_dir) / f"{which}.pt"


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: a reader sees the old file or the new one.

    The temporary file lives in the same directory (``os.replace`` is only atomic within one
    file system) and is fsynced before the rename, and the directory after it, so a crash
    or power loss never leaves a truncated checkpoint under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_checkpoint(
    path: str | os.PathLike, map_location: torch.device | str | None = "cpu"
) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``.

    Raises:
        ValueError: naming the file if it is missing or not a padless checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # a truncated zip, a pickled object, ...: name the file
        raise ValueError(f"{path}: cannot read the checkpoint ({e})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a padless checkpoint")
    if state.get("version") != CHECKPOINT_VERSION:
        raise ValueError(
            f"{path}: checkpoint version {state.get('version')}, this padless reads "
            f"version {CHECKPOINT_VERSION}"
        )
    return state


def write_run_info(run_dir: str | os.PathLike, **info: str) -> None:
    """Record plain facts about a run (``data_dir=...``) in ``RUN_DIR/run.json``."""
    path = Path(run_dir) / RUN_INFO
    path.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_run_info(run_dir: str | os.PathLike) -> dict[str, str]:
    """What :func:`write_run_info` recorded; empty for a run without ``run.json``."""
    path = Path(run_dir) / RUN_INFO
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(info, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return info


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


def load_model(
    run_dir: str | os.PathLike,
    which: str = "best",
    device: torch.device | str | None = None,
) -> tuple[Seq2Seq, TextProcessor, Config]:
    """The trained model (in eval mode), its TextProcessor and config, from a run directory.

    Args:
        run_dir: the ``--out`` directory of ``padless train``.
        which: ``"best"`` (lowest validation loss) or ``"latest"``.
        device: where to put the model; default CUDA when available, else CPU.

    Raises:
        ValueError: naming the file that is missing or does not match the run.
    """
    path = checkpoint_path(run_dir, which)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    state = load_checkpoint(path, map_location=device)
    config = Config.from_dict(state["config"])
    text = TextProcessor.load(Path(run_dir) / TEXT_DIR)
    settings = {"normalize": text.normalize, "tokenizer": text.tokenizer.name}
    if text.vocab.to_dict() != state["vocab"] or state["text"] != settings:
        raise ValueError(
            f"{path}: the vocabulary or text settings in the checkpoint differ from "
            f"{Path(run_dir) / TEXT_DIR}"
        )
    model = Seq2Seq(config.model, state["vocab_size"], pad_id=state["pad_id"])
    model.load_state_dict(state["model"])
    return model.to(device).eval(), text, config
