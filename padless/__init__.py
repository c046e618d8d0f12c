"""padless: padding that costs nothing in seq2seq training.

The library part (this namespace) is :mod:`padless.masking` and :mod:`padless.losses`;
the chatbot/translator application lives in the other modules and the ``padless`` command.
"""

from padless.losses import (
    REDUCTIONS,
    LossOutput,
    masked_cross_entropy,
    masked_linear_cross_entropy,
    masked_nll_loss,
)
from padless.masking import lengths_to_mask, pad_batch

__version__ = "0.1.0"

__all__ = [
    "REDUCTIONS",
    "LossOutput",
    "lengths_to_mask",
    "masked_cross_entropy",
    "masked_linear_cross_entropy",
    "masked_nll_loss",
    "pad_batch",
]
