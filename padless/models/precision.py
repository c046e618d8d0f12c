"""A trained model set up to decode in the precision chosen for its device: :func:`for_decoding`.

Decoding casts the weights (bf16 or fp16 matmuls with no per-call casts, and half the memory
traffic); log-probabilities are still computed in float32 (``decode_step``). Training runs
under autocast instead (:mod:`padless.training.step`).
"""

from __future__ import annotations

from padless.models.base import EncoderDecoder
from padless.runtime.precision import Precision, choose_precision

__all__ = ["for_decoding"]


def for_decoding(model: EncoderDecoder, requested: str = "auto", rows: int = 1) -> Precision:
    """Choose the precision to decode with ``model`` on its device, ``rows`` sentences at a
    time (:func:`padless.runtime.precision.choose_precision`), and cast the model to it in
    place; returns the choice (its ``describe()`` is the line to show the user).

    Raises:
        UserError: an unknown precision, or fp16 asked for on a CPU.
    """
    workload = model.config.workload(max(1, rows), training=False)
    chosen = choose_precision(requested, model.device, workload)
    model.to(chosen.dtype)
    return chosen
