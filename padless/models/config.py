"""``ModelConfig``: the hyper-parameters of every architecture, one flat dataclass.

``arch`` picks the architecture (:func:`padless.models.build_model`); the other fields are
its sizes. Most fields serve both architectures; a few are for one only (said in their
description) and the other ignores them.
"""

from __future__ import annotations

from dataclasses import dataclass

from padless.models.attention import ATTENTION_METHODS
from padless.models.encoder import MERGE_METHODS
from padless.runtime.precision import Workload

__all__ = ["ARCHITECTURES", "DROPOUT_SCOPES", "ModelConfig"]

ARCHITECTURES = ("gru", "transformer")
DROPOUT_SCOPES = ("tutorial", "full")


@dataclass
class ModelConfig:
    """Hyper-parameters of a model; the defaults are the PyTorch chatbot tutorial's.

    Attributes:
        arch: the architecture, one of :data:`ARCHITECTURES`: ``"gru"`` (the tutorial's
            GRU + Luong attention, :mod:`padless.models.seq2seq`) or ``"transformer"``
            (:mod:`padless.models.transformer`).
        embedding_size: ``E``, size of the token embeddings. Transformer: must equal
            ``hidden_size``.
        hidden_size: ``H``. GRU: GRU size (per direction in the encoder) and attention size.
            Transformer: the model size ``d_model``.
        num_layers: layers of the encoder and of the decoder (GRU or Transformer layers).
        attention: GRU only: Luong score, ``"dot"``, ``"general"`` or ``"concat"``.
        dropout: in ``[0, 1)``. GRU: where ``dropout_scope`` says. Transformer: on
            embeddings, attention weights, residual branches and feed-forward activations.
        dropout_scope: GRU only: ``"tutorial"``, dropout on the decoder's embeddings and
            between GRU layers, as in the tutorial; ``"full"``, also on the encoder's
            embeddings and on the attentional states before the output layer (as JoeyNMT's
            ``emb_dropout`` and ``hidden_dropout``), which a small corpus needs.
        merge_directions: GRU only: ``"sum"`` (the tutorial) or ``"project"`` (linear
            ``2H -> H``).
        shared_embeddings: one embedding table for encoder and decoder (one joint vocabulary).
        tie_output: the output projection's weight is the decoder embedding (needs ``E == H``).
        num_heads: Transformer only: attention heads; must divide ``hidden_size``.
        ffn_size: Transformer only: inner size of the feed-forward layers; null means
            ``4 * hidden_size``.

    Raises:
        ValueError: on a bad value, naming the field.
    """

    arch: str = "gru"
    embedding_size: int = 500
    hidden_size: int = 500
    num_layers: int = 2
    attention: str = "dot"
    dropout: float = 0.1
    dropout_scope: str = "tutorial"
    merge_directions: str = "sum"
    shared_embeddings: bool = True
    tie_output: bool = False
    num_heads: int = 4
    ffn_size: int | None = None

    @property
    def transformer_ffn_size(self) -> int:
        """The Transformer's feed-forward size: ``ffn_size``, or ``4 * hidden_size``."""
        return 4 * self.hidden_size if self.ffn_size is None else self.ffn_size

    def workload(self, rows: int, *, training: bool) -> Workload:
        """The matrix shapes that decide this model's precision on a CPU
        (:func:`padless.runtime.precision.choose_precision`): ``rows`` tokens through its
        widest layer (the Transformer's feed-forward, the GRU's ``2H -> H`` attentional layer).
        """
        if self.arch == "transformer":
            return Workload(rows, self.hidden_size, self.transformer_ffn_size, training)
        return Workload(rows, 2 * self.hidden_size, self.hidden_size, training)

    def __post_init__(self) -> None:
        for name in ("embedding_size", "hidden_size", "num_layers", "num_heads", "ffn_size"):
            value = getattr(self, name)
            if value is None and name == "ffn_size":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ModelConfig.{name} must be a positive integer, got {value!r}")
        choices = {
            "arch": ARCHITECTURES, "attention": ATTENTION_METHODS,
            "merge_directions": MERGE_METHODS, "dropout_scope": DROPOUT_SCOPES,
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
        if self.arch == "transformer":
            self._check_transformer()

    def _check_transformer(self) -> None:
        if self.embedding_size != self.hidden_size:
            raise ValueError(
                f"ModelConfig.embedding_size must equal hidden_size for the transformer (its "
                f"model size), got {self.embedding_size} and {self.hidden_size}"
            )
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"ModelConfig.num_heads must divide hidden_size, got {self.num_heads} heads "
                f"for hidden_size {self.hidden_size}"
            )
