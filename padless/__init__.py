"""padless: padding that costs nothing in seq2seq training.

The library part (this namespace) is :mod:`padless.masking` and :mod:`padless.losses`;
the chatbot/translator application lives in the other modules and the ``padless`` command.

The names below load on first use (PEP 562), so ``import padless.cli`` does not import
torch: the command sets up torch's threads before torch starts
(:mod:`padless.runtime.threads`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "REDUCTIONS": "padless.losses",
    "LossOutput": "padless.losses",
    "lengths_to_mask": "padless.masking",
    "masked_cross_entropy": "padless.losses",
    "masked_linear_cross_entropy": "padless.losses",
    "masked_nll_loss": "padless.losses",
    "pad_batch": "padless.masking",
}
__all__ = [
    "REDUCTIONS",
    "LossOutput",
    "lengths_to_mask",
    "masked_cross_entropy",
    "masked_linear_cross_entropy",
    "masked_nll_loss",
    "pad_batch",
]

if TYPE_CHECKING:  # what static tools see; at run time __getattr__ imports on first use
    from padless.losses import (
        REDUCTIONS,
        LossOutput,
        masked_cross_entropy,
        masked_linear_cross_entropy,
        masked_nll_loss,
    )
    from padless.masking import lengths_to_mask, pad_batch


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'padless' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
