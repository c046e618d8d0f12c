"""Luong attention decoder: GRU, then attention, then ``tanh(W_c [rnn_out; context])``.

The decoder stops *before* the vocabulary projection: :meth:`Decoder.forward` returns the
attentional states ``[T, B, H]`` and :attr:`Decoder.out` (``nn.Linear(H, V)``) is applied by the
caller, so training projects real target tokens only (``masked_linear_cross_entropy``) and
decoding projects one step.

It runs any number of steps in one call. Under teacher forcing the whole ``tgt_in`` goes in at
once: the GRU is causal (its output at step ``t`` depends on inputs ``<= t`` only), so the pads
after a sequence's end change nothing at that sequence's real steps, and Luong attention follows
the RNN, so all steps attend in one batched matmul. This equals running one step at a time.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from padless.models.attention import LuongAttention

__all__ = ["Decoder"]


class Decoder(nn.Module):
    """Embedding -> dropout -> GRU -> Luong attention -> ``tanh(Linear [rnn_out; context])``.

    Args:
        embedding: ``nn.Embedding(V, E)``, possibly shared with the encoder.
        hidden_size: ``H``.
        num_layers: GRU layers (the same as the encoder's, layer ``l`` starts from its layer ``l``).
        attention: Luong attention method, ``"dot"``, ``"general"`` or ``"concat"``.
        dropout: dropout on the embeddings and between GRU layers (none between layers with
            one layer, as in the tutorial).
        tie_output: share :attr:`out`'s weight with the embedding (needs ``E == H``).
        output_dropout: dropout on the attentional states before :attr:`out` (the tutorial
            has none).

    Attributes:
        out: ``nn.Linear(H, V)``, the output projection to the vocabulary.
    """

    def __init__(
        self,
        embedding: nn.Embedding,
        hidden_size: int,
        num_layers: int,
        attention: str,
        dropout: float,
        tie_output: bool,
        output_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        vocab_size, embedding_size = embedding.weight.shape
        if tie_output and embedding_size != hidden_size:
            raise ValueError(
                f"Decoder: tie_output needs embedding_size == hidden_size, got "
                f"{embedding_size} and {hidden_size}"
            )
        self.embedding = embedding
        self.num_layers = num_layers
        self.embedding_dropout = nn.Dropout(dropout)
        self.rnn = nn.GRU(
            embedding_size, hidden_size, num_layers, dropout=0.0 if num_layers == 1 else dropout
        )
        self.attention = LuongAttention(attention, hidden_size)
        self.concat = nn.Linear(2 * hidden_size, hidden_size)
        self.output_dropout = nn.Dropout(output_dropout)
        self.out = nn.Linear(hidden_size, vocab_size)
        if tie_output:
            self.out.weight = embedding.weight

    def forward(
        self, tgt_in: Tensor, hidden: Tensor, memory: Tensor, src_mask: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Run the decoder over ``T`` input steps (``T == 1`` when decoding).

        Args:
            tgt_in: ``[T, B]`` input ids (BOS then the previous tokens).
            hidden: ``[num_layers, B, H]`` GRU state before the first step.
            memory: ``[S, B, H]`` encoder outputs.
            src_mask: ``[S, B]`` bool, True at real source tokens.

        Returns:
            ``(states [T, B, H], hidden [num_layers, B, H], attention [B, T, S])``: the
            attentional states ``tanh(W_c [rnn_out; context])`` to feed :attr:`out`, the GRU
            state after the last step, and the attention weights.
        """
        embedded = self.embedding_dropout(self.embedding(tgt_in))  # [T, B, E]
        rnn_out, hidden = self.rnn(embedded, hidden)  # [T, B, H]
        context, weights = self.attention(rnn_out, memory, src_mask)  # [T, B, H], [B, T, S]
        states = torch.tanh(self.concat(torch.cat((rnn_out, context), dim=-1)))
        states = self.output_dropout(states)
        return states, hidden, weights
