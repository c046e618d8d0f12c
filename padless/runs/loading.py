"""A trained model from a run directory, ready to decode: :func:`load_model`, and
:func:`load_for_decoding` (set up for its device, alone or in an ensemble)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from padless.data.text import TextProcessor
from padless.models import EncoderDecoder, ModelConfig
from padless.models.decoding_setup import Decoding, for_decoding
from padless.models.ensemble import Ensemble
from padless.runs.checkpoint import Checkpoint, text_settings
from padless.runs.directory import RunDirectory
from padless.runtime.devices import resolve_device
from padless.runtime.errors import UserError

__all__ = ["load_for_decoding", "load_model"]


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


def load_for_decoding(
    run_dir: str | os.PathLike,
    which: str = "best",
    device: torch.device | str | None = None,
    *,
    precision: str = "auto",
    quantization: str | None = None,
    ensemble: Sequence[str | os.PathLike] = (),
) -> tuple[EncoderDecoder, TextProcessor, ModelConfig, Decoding]:
    """The run's model set up to decode (:func:`padless.models.decoding_setup.for_decoding`), or
    with ``ensemble`` runs the :class:`~padless.models.ensemble.Ensemble` of all of them
    (each's ``which`` checkpoint, set up alike); its TextProcessor, the run's config and how
    the run's own model was set up.

    Raises:
        UserError: what :func:`load_model` and ``for_decoding`` refuse, for any of the runs,
            or an ensemble run of another vocabulary or text pipeline than ``run_dir``'s.
    """
    model, text, config = load_model(run_dir, which, device)
    decoding = for_decoding(model, precision, quantization)
    members = [decoding.model]
    for other in ensemble:
        member, member_text, _ = load_model(other, which, device)
        if member_text.vocab != text.vocab or text_settings(member_text) != text_settings(text):
            raise UserError(f"--ensemble {other}: its vocabulary or text pipeline is not "
                            f"{run_dir}'s; an ensemble's runs must share one")
        members.append(for_decoding(member, precision, quantization).model)
    return (decoding.model if len(members) == 1 else Ensemble(members)), text, config, decoding
