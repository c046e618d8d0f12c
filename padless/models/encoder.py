"""Bidirectional GRU encoder over packed (never padded) source sequences.

The final states handed to the decoder come from *matching* layers: decoder layer ``l`` starts
from encoder layer ``l``'s forward and backward final states, merged. The PyTorch chatbot
tutorial instead initialises the decoder with ``encoder_hidden[:decoder.n_layers]``; ``nn.GRU``
orders its final states ``[layer0-fwd, layer0-bwd, layer1-fwd, layer1-bwd, ...]``, so with 2
layers the tutorial's decoder layer 0 starts from encoder layer 0's *forward* state, decoder
layer 1 from encoder layer 0's *backward* state, and the top encoder layer's final states are
never used.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

__all__ = ["MERGE_METHODS", "Encoder"]

MERGE_METHODS = ("sum", "project")


class Encoder(nn.Module):
    """Embedding -> bidirectional multi-layer GRU; directions merged to ``H``.

    Args:
        embedding: ``nn.Embedding(V, E)``, possibly shared with the decoder.
        hidden_size: ``H``, per direction and after merging.
        num_layers: GRU layers.
        dropout: dropout between GRU layers (none with one layer, as in the tutorial).
        embedding_dropout: dropout on the source embeddings (the tutorial has none).
        merge_directions: ``"sum"`` adds the forward and backward states (the tutorial);
            ``"project"`` concatenates them and maps ``2H -> H`` with a linear layer (``tanh``
            for the decoder's initial state).
    """

    def __init__(
        self,
        embedding: nn.Embedding,
        hidden_size: int,
        num_layers: int,
        dropout: float,
        merge_directions: str,
        embedding_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if merge_directions not in MERGE_METHODS:
            raise ValueError(
                f"Encoder: unknown merge_directions {merge_directions!r}; valid ones are "
                f"{', '.join(MERGE_METHODS)}"
            )
        self.embedding = embedding
        self.embedding_dropout = nn.Dropout(embedding_dropout)
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.merge_directions = merge_directions
        self.rnn = nn.GRU(
            embedding.embedding_dim,
            hidden_size,
            num_layers,
            dropout=0.0 if num_layers == 1 else dropout,
            bidirectional=True,
        )
        if merge_directions == "project":
            self.memory_proj = nn.Linear(2 * hidden_size, hidden_size)
            self.hidden_proj = nn.Linear(2 * hidden_size, hidden_size)

    def forward(self, src: Tensor, src_lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Encode a padded source batch.

        Args:
            src: ``[S, B]`` source ids (anything at pads: they are never read).
            src_lengths: ``[B]`` lengths (any device; packing wants them on CPU). A length of 0
                is allowed: that row gets zero memory and a zero final state.

        Returns:
            ``(memory [S, B, H], hidden [num_layers, B, H])``: ``memory`` is the merged top-layer
            outputs, exactly 0 at pads; ``hidden[l]`` merges layer ``l``'s final forward and
            backward states.
        """
        if src.dim() != 2 or src_lengths.shape != src.shape[1:]:
            raise ValueError(
                f"Encoder: src of shape {tuple(src.shape)} and src_lengths of shape "
                f"{tuple(src_lengths.shape)} do not fit; they must be [S, B] and [B]"
            )
        lengths = src_lengths.cpu()
        steps = src.shape[0]
        embedded = self.embedding_dropout(self.embedding(src))  # [S, B, E]
        # Packing needs lengths >= 1; an empty row reads one (pad) step and is zeroed below.
        packed = pack_padded_sequence(embedded, lengths.clamp(min=1), enforce_sorted=False)
        outputs, final = self.rnn(packed)
        # total_length keeps S even when every sequence is shorter than the padded source.
        outputs, _ = pad_packed_sequence(outputs, total_length=steps)  # [S, B, 2H], 0 at pads
        batch = src.shape[1]
        final = final.view(self.num_layers, 2, batch, self.hidden_size)  # (layer, direction)
        forward_out, backward_out = outputs.split(self.hidden_size, dim=-1)
        if self.merge_directions == "sum":
            memory = forward_out + backward_out
            hidden = final[:, 0] + final[:, 1]
        else:
            valid = torch.arange(steps).unsqueeze(1) < lengths.unsqueeze(0)  # [S, B]
            # The projection's bias would make pads non-zero; keep them exactly 0.
            memory = self.memory_proj(outputs) * valid.to(outputs.device).unsqueeze(-1)
            hidden = torch.tanh(self.hidden_proj(torch.cat((final[:, 0], final[:, 1]), dim=-1)))
        if bool((lengths == 0).any()):
            nonempty = (lengths > 0).to(memory.device)
            memory = memory * nonempty.unsqueeze(-1).to(memory.dtype)
            hidden = hidden * nonempty.unsqueeze(-1).to(hidden.dtype)
        return memory, hidden
