"""``ModelConfig``: the hyper-parameters of every architecture, one flat dataclass.

``arch`` picks the architecture (:func:`padless.models.build_model`); the other fields are
its sizes. Most fields serve both architectures; a few are for one only (said in their
description) and the other ignores them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from padless.models.attention import ATTENTION_METHODS
from padless.models.encoder import MERGE_METHODS
from padless.runtime.options import ConfigError, check_options, option
from padless.runtime.precision import Workload

__all__ = ["ARCHITECTURES", "DROPOUT_SCOPES", "ModelConfig"]

ARCHITECTURES = ("gru", "transformer")
DROPOUT_SCOPES = ("tutorial", "full")
NORM_POSITIONS = ("pre", "post")
ACTIVATIONS = ("relu", "gelu", "silu")
POSITIONS = ("sinusoidal", "sinusoidal_halves", "learned")
EMBEDDING_NORMS = ("none", "after_positions", "split")
# what may change between runs of one model (a fine-tune): regularisation, not weights
DROPOUT_KEYS = ("dropout", "dropout_scope", "attention_dropout", "activation_dropout")


@dataclass
class ModelConfig:
    """Hyper-parameters of a model; the defaults are the PyTorch chatbot tutorial's. Each
    field's help says what it is (``docs/training.md`` tabulates them).

    Raises:
        ConfigError: on a bad value, naming the field (``model.hidden_size: ...``).
    """

    arch: str = option("gru", "the architecture: gru (the tutorial's GRU + Luong attention) "
                       "or transformer (pad-free)", choices=ARCHITECTURES)
    embedding_size: int = option(500, "size of the token embeddings (transformer: must equal "
                                 "hidden_size)", minimum=1)
    hidden_size: int = option(500, "GRU: its size (per direction in the encoder) and the "
                              "attention's; transformer: the model size d_model", minimum=1)
    num_layers: int = option(2, "layers of the encoder and of the decoder", minimum=1)
    attention: str = option("dot", "GRU: Luong attention score", choices=ATTENTION_METHODS)
    dropout: float = option(0.1, "GRU: where dropout_scope says; transformer: on embeddings, "
                            "attention weights, residual branches and feed-forward "
                            "activations", minimum=0, maximum=1, open_max=True)
    dropout_scope: str = option(
        "tutorial", "GRU: tutorial (the decoder's embeddings and between GRU layers) or full "
        "(also the encoder's embeddings and the attentional states, as JoeyNMT's "
        "emb_dropout and hidden_dropout; a small corpus needs it)", choices=DROPOUT_SCOPES)
    merge_directions: str = option("sum", "GRU: how the encoder's two directions merge: sum "
                                   "(the tutorial) or project (linear 2H -> H)",
                                   choices=MERGE_METHODS)
    shared_embeddings: bool = option(True, "one embedding table for encoder and decoder (one "
                                     "joint vocabulary)")
    tie_output: bool = option(False, "the output projection's weight is the decoder "
                              "embedding (needs embedding_size == hidden_size)")
    num_heads: int = option(4, "transformer: attention heads; must divide hidden_size",
                            minimum=1)
    ffn_size: int | None = option(None, "transformer: inner size of the feed-forward layers "
                                  "(null: 4 * hidden_size)", minimum=1)
    # The Transformer's variants, for pretrained models (padless import); the defaults are
    # padless's own Transformer.
    norm_position: str = option(
        "pre", "transformer: pre (x + f(norm(x)), a final norm after each stack) or post "
        "(norm(x + f(x)), as BART and Marian)", choices=NORM_POSITIONS)
    activation: str = option("relu", "transformer: the feed-forward activation",
                             choices=ACTIVATIONS)
    positions: str = option(
        "sinusoidal", "transformer: sinusoidal (sines and cosines interleaved; any length), "
        "sinusoidal_halves (Marian's: the sines, then the cosines, in float32) or learned (a "
        "table of max_positions rows, BART's)", choices=POSITIONS)
    position_offset: int = option(0, "transformer: learned positions: the table's row for "
                                  "position 0 (BART: 2)", minimum=0)
    max_positions: int | None = option(None, "transformer: learned positions: the table's rows "
                                       "(null with sinusoids)", minimum=1)
    embedding_scale: bool = option(True, "transformer: token embeddings are multiplied by "
                                   "sqrt(hidden_size)")
    attention_dropout: float | None = option(
        None, "transformer: dropout on the attention weights (null: model.dropout)",
        minimum=0, maximum=1, open_max=True)
    activation_dropout: float | None = option(
        None, "transformer: dropout on the feed-forward activations (null: model.dropout)",
        minimum=0, maximum=1, open_max=True)
    embedding_norm: str = option(
        "none", "transformer: a layer norm on the embeddings: none, after_positions (on the "
        "sum of token and position embeddings, BART's) or split (BlenderbotSmall's: the "
        "encoder's after positions, the decoder's on its unscaled token embeddings before "
        "them)", choices=EMBEDDING_NORMS)

    def same_model(self, other: ModelConfig) -> bool:
        """Whether ``other`` builds the same model, with the same weights, as this config:
        they may differ in their dropout only (:data:`DROPOUT_KEYS`)."""
        return replace(self, **{k: getattr(other, k) for k in DROPOUT_KEYS}) == other

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
        check_options(self, "model")
        if self.tie_output and self.embedding_size != self.hidden_size:
            raise ConfigError(f"model.tie_output: needs embedding_size == hidden_size, got "
                              f"{self.embedding_size} and {self.hidden_size}")
        if self.arch != "transformer":
            return
        if self.embedding_size != self.hidden_size:
            raise ConfigError(f"model.embedding_size: must equal hidden_size for the "
                              f"transformer (its model size), got {self.embedding_size} and "
                              f"{self.hidden_size}")
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"model.num_heads: must divide hidden_size, got {self.num_heads} "
                              f"heads for hidden_size {self.hidden_size}")
        if (self.positions == "learned") != (self.max_positions is not None):
            raise ConfigError("model.max_positions: learned positions need a table size, "
                              f"sinusoids none (positions={self.positions}, max_positions="
                              f"{self.max_positions})")
        if self.max_positions is not None and self.position_offset >= self.max_positions:
            raise ConfigError(f"model.position_offset: must be below max_positions "
                              f"({self.max_positions}), got {self.position_offset}")
