"""A trained model from a run directory, ready to decode: :func:`load_model`."""

from __future__ import annotations

import os

import torch

from padless.data.text import TextProcessor
from padless.models import EncoderDecoder, ModelConfig
from padless.runs.checkpoint import Checkpoint
from padless.runs.directory import RunDirectory
from padless.runtime.devices import resolve_device
from padless.runtime.errors import UserError

__all__ = ["load_model"]


def load_model(
    run_dir: str | os.PathLike,
    which: str = "best",
    device: torch.device | str | None = None,
) -> tuple[EncoderDecoder, TextProcessor, ModelConfig]:
    """The trained model (in eval mode, with its decoding weights: the moving average when
    the run kept one), its TextProcessor and its config, from a run directory.

    Args:
        run_dir: the ``--out`` directory of ``padless train``.
        which: ``"best"`` (lowest validation loss), ``"latest"`` or ``"averaged"``
            (:data:`padless.runs.directory.CHECKPOINT_NAMES`).
        device: where to put the model; default CUDA when available, else CPU.

    Raises:
        UserError: naming the file that is missing or does not match the run.
    """
    run = RunDirectory(run_dir)
    path = run.checkpoint(which)
    device = resolve_device("auto" if device is None else str(device))
    checkpoint = Checkpoint.load(path, map_location=device)
    text = TextProcessor.load(run.text_dir)
    checkpoint.check_text(text, path)
    try:
        model = checkpoint.build_model(device)
    except UserError as e:
        raise UserError(f"{path}: {e}") from None
    return model, text, checkpoint.model_config()
