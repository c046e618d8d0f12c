"""Luong attention (``dot``, ``general``, ``concat``) over a padded source, for many steps at once.

Luong attention reads the decoder RNN's output *after* the RNN step, so the queries of all
target steps can be scored in one batched matmul once the RNN has run over the whole target
(teacher forcing); a single decoding step is the special case ``T == 1``.

Source padding is masked: pad scores are filled with ``torch.finfo(dtype).min`` before the
softmax and the weights are then set to exactly 0 at pads. A source row with no valid position
at all gets all-zero weights (and a zero context) instead of the NaN a ``-inf`` fill gives.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["ATTENTION_METHODS", "LuongAttention"]

ATTENTION_METHODS = ("dot", "general", "concat")


class LuongAttention(nn.Module):
    """Luong et al. (2015) global attention.

    Scores between a query ``h_t`` (decoder RNN output) and a source state ``h_s``:

    - ``dot``: ``h_t . h_s``
    - ``general``: ``h_t . (W h_s)``
    - ``concat``: ``v . tanh(W [h_t; h_s] + b)``

    Args:
        method: one of ``ATTENTION_METHODS``.
        hidden_size: ``H``, the size of queries and source states.
    """

    def __init__(self, method: str, hidden_size: int) -> None:
        super().__init__()
        if method not in ATTENTION_METHODS:
            raise ValueError(
                f"LuongAttention: unknown method {method!r}; valid ones are "
                f"{', '.join(ATTENTION_METHODS)}"
            )
        self.method = method
        if method == "general":
            # The tutorial's nn.Linear(H, H) also has a bias b, but h_t . b is the same for every
            # source position and cancels in the softmax, so it is left out.
            self.weight = nn.Linear(hidden_size, hidden_size, bias=False)
        elif method == "concat":
            # W [h_t; h_s] split as W_q h_t + W_k h_s, so the [T, S] grid only sums two projections.
            self.query_proj = nn.Linear(hidden_size, hidden_size, bias=True)
            self.key_proj = nn.Linear(hidden_size, hidden_size, bias=False)
            self.v = nn.Parameter(torch.empty(hidden_size).uniform_(-0.1, 0.1))

    def scores(self, query: Tensor, memory: Tensor) -> Tensor:
        """Unmasked attention scores.

        Args:
            query: ``[T, B, H]`` decoder RNN outputs.
            memory: ``[S, B, H]`` encoder outputs.

        Returns:
            ``[B, T, S]`` scores.
        """
        q = query.transpose(0, 1)  # [B, T, H]
        if self.method == "dot":
            return torch.bmm(q, memory.permute(1, 2, 0))
        if self.method == "general":
            # h_t . (W h_s) == (W^T h_t) . h_s: transform the T queries, not the S states,
            # which is cheaper when decoding one step at a time.
            return torch.bmm(q @ self.weight.weight, memory.permute(1, 2, 0))
        keys = self.key_proj(memory).transpose(0, 1)  # [B, S, H]
        energy = torch.tanh(self.query_proj(q).unsqueeze(2) + keys.unsqueeze(1))  # [B, T, S, H]
        return energy @ self.v.to(energy.dtype)

    def forward(self, query: Tensor, memory: Tensor, src_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Attend from every query step to the valid source positions.

        Args:
            query: ``[T, B, H]`` decoder RNN outputs.
            memory: ``[S, B, H]`` encoder outputs.
            src_mask: ``[S, B]`` bool, True at real source tokens.

        Returns:
            ``(context [T, B, H], weights [B, T, S])``; weights are exactly 0 at pads and each
            row sums to 1 (0 for a source without any valid position).
        """
        if src_mask.shape != memory.shape[:2]:
            raise ValueError(
                f"LuongAttention: src_mask of shape {tuple(src_mask.shape)} does not match "
                f"memory of shape {tuple(memory.shape)}; src_mask must be [S, B]"
            )
        scores = self.scores(query, memory)
        valid = src_mask.t().unsqueeze(1)  # [B, 1, S]
        scores = scores.masked_fill(~valid, torch.finfo(scores.dtype).min)
        # A row that is all fill value softmaxes to uniform; zeroing pads afterwards makes its
        # weights 0 (no NaN) and keeps the pad weights of every other row exactly 0.
        weights = torch.softmax(scores, dim=-1).masked_fill(~valid, 0.0)
        context = torch.bmm(weights.to(memory.dtype), memory.transpose(0, 1))  # [B, T, H]
        return context.transpose(0, 1), weights
