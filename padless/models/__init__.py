"""Seq2seq architectures behind one interface (:class:`padless.models.base.EncoderDecoder`).

:func:`build_model` turns a :class:`ModelConfig` into the model its ``arch`` names.
"""

from __future__ import annotations

from padless.data.vocabulary import Specials
from padless.models.base import DecoderState, EncoderDecoder
from padless.models.config import ARCHITECTURES, ModelConfig

__all__ = [
    "ARCHITECTURES",
    "DecoderState",
    "EncoderDecoder",
    "ModelConfig",
    "build_model",
    "parameter_count",
]


def build_model(config: ModelConfig, vocab_size: int,
                specials: Specials = Specials()) -> EncoderDecoder:  # noqa: B008 (frozen)
    """A freshly initialised model of ``config.arch`` over a ``vocab_size`` vocabulary with
    the special ids ``specials`` (padless's own by default)."""
    from padless.models.seq2seq import Seq2Seq
    from padless.models.transformer import Transformer

    builders = {"gru": Seq2Seq, "transformer": Transformer}
    return builders[config.arch](config, vocab_size, specials)


def parameter_count(config: ModelConfig, vocab_size: int) -> int:
    """The parameters :func:`build_model` would give the model, counted without allocating
    them (built on PyTorch's ``meta`` device): a size check before the real build."""
    import torch

    with torch.device("meta"):
        model = build_model(config, vocab_size)
    return sum(p.numel() for p in model.parameters())
