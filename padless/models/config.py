"""``ModelConfig``: the hyper-parameters of every architecture, one flat dataclass.

``arch`` picks the architecture (:func:`padless.models.build_model`); the other fields are
its sizes. Fields an architecture does not use are ignored by it.
"""

from __future__ import annotations

from dataclasses import dataclass

from padless.models.attention import ATTENTION_METHODS
from padless.models.encoder import MERGE_METHODS

__all__ = ["ARCHITECTURES", "ModelConfig"]

ARCHITECTURES = ("gru",)


@dataclass
class ModelConfig:
    """Hyper-parameters of a model; the defaults are the PyTorch chatbot tutorial's.

    Attributes:
        arch: the architecture, one of :data:`ARCHITECTURES`.
        embedding_size: ``E``, size of the token embeddings.
        hidden_size: ``H``, GRU size (per direction in the encoder) and attention size.
        num_layers: GRU layers of the encoder and of the decoder.
        attention: Luong score, ``"dot"``, ``"general"`` or ``"concat"``.
        dropout: in ``[0, 1)``; on decoder embeddings and between GRU layers.
        merge_directions: ``"sum"`` (the tutorial) or ``"project"`` (linear ``2H -> H``).
        shared_embeddings: one embedding table for encoder and decoder (one joint vocabulary).
        tie_output: the output projection's weight is the decoder embedding (needs ``E == H``).

    Raises:
        ValueError: on a bad value, naming the field.
    """

    arch: str = "gru"
    embedding_size: int = 500
    hidden_size: int = 500
    num_layers: int = 2
    attention: str = "dot"
    dropout: float = 0.1
    merge_directions: str = "sum"
    shared_embeddings: bool = True
    tie_output: bool = False

    def __post_init__(self) -> None:
        for name in ("embedding_size", "hidden_size", "num_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ModelConfig.{name} must be a positive integer, got {value!r}")
        choices = {
            "arch": ARCHITECTURES, "attention": ATTENTION_METHODS,
            "merge_directions": MERGE_METHODS,
        }
        for name, valid in choices.items():
            if getattr(self, name) not in valid:
                raise ValueError(
                    f"ModelConfig.{name} must be one of {', '.join(valid)}, "
                    f"got {getattr(self, name)!r}"
                )
        dropout = self.dropout
        if isinstance(dropout, bool) or not isinstance(dropout, int | float):
            raise ValueError(f"ModelConfig.dropout must be a number in [0, 1), got {dropout!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"ModelConfig.dropout must be in [0, 1), got {dropout!r}")
        for name in ("shared_embeddings", "tie_output"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(
                    f"ModelConfig.{name} must be true or false, got {getattr(self, name)!r}"
                )
        if self.tie_output and self.embedding_size != self.hidden_size:
            raise ValueError(
                f"ModelConfig.tie_output needs embedding_size == hidden_size, got "
                f"{self.embedding_size} and {self.hidden_size}"
            )
