"""The models the benchmarks compare padless's Transformer with: :func:`gru_like`."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from padless.models import build_model
from padless.training.config import load_config


def gru_like(n_parameters: int, vocab_size: int) -> nn.Module:
    """The ``chatbot`` GRU with the hidden size (a multiple of 32) closest in parameters."""
    config = load_config("chatbot").model

    def count(hidden: int) -> int:
        model = build_model(replace(config, embedding_size=hidden, hidden_size=hidden), vocab_size)
        return sum(p.numel() for p in model.parameters())

    hidden = min(range(64, 1025, 32), key=lambda h: abs(count(h) - n_parameters))
    torch.manual_seed(0)
    return build_model(replace(config, embedding_size=hidden, hidden_size=hidden), vocab_size)
