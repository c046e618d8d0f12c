"""Packed tokens: the real tokens of a padded batch as the rows of one ``[N, F]`` tensor.

A pad-free model computes every position-wise step (embeddings, projections, feed-forward
layers, norms) on the ``N`` real tokens only. Attention is the one step that needs to know
which tokens belong to which sequence: :meth:`Packing.to_blocks` scatters packed rows into
padded per-sequence blocks ``[B, L, F]`` (zeros at pads) and :meth:`Packing.from_blocks`
gathers the real rows back.

The row order of a packing is the order of ``ids[valid_mask]`` in the batch's own layout
(time-major ``[L, B]`` by default), so the rows of a packed target line up with
``Batch.real_targets()``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Packing"]


@dataclass(frozen=True)
class Packing:
    """Where the ``N`` real tokens of a right-padded batch of ``B`` sequences sit.

    Attributes:
        sequence: ``[N]`` long, the sequence (batch column) of each real token.
        position: ``[N]`` long, its position in that sequence (0 for the first token).
        valid_mask: ``[B, L]`` bool, batch-major, True at real tokens; a prefix of each row
            (right padding), which is what lets causal attention alone keep a decoder's real
            queries away from its pads.
    """

    sequence: Tensor
    position: Tensor
    valid_mask: Tensor

    @classmethod
    def from_mask(cls, valid_mask: Tensor, *, batch_first: bool = False) -> Packing:
        """The packing of a valid mask ``[L, B]`` (``[B, L]`` with ``batch_first``).

        Raises:
            ValueError: if the mask is not 2-D or is not right padding (a pad before a real
                token of the same sequence).
        """
        if valid_mask.dim() != 2 or valid_mask.dtype != torch.bool:
            raise ValueError(
                f"Packing: the valid mask must be a 2-D bool tensor, got shape "
                f"{tuple(valid_mask.shape)} and dtype {valid_mask.dtype}"
            )
        batch_major = valid_mask if batch_first else valid_mask.t()
        lengths = batch_major.sum(dim=1)
        steps = torch.arange(batch_major.shape[1], device=valid_mask.device)
        if not torch.equal(batch_major, steps.unsqueeze(0) < lengths.unsqueeze(1)):
            raise ValueError(
                "Packing: the valid mask is not right padding (each sequence must be a run of "
                "real tokens followed only by pads)"
            )
        first, second = valid_mask.nonzero(as_tuple=True)  # in the batch's own layout order
        sequence, position = (first, second) if batch_first else (second, first)
        return cls(sequence, position, batch_major)

    @classmethod
    def from_lengths(cls, lengths: Tensor, max_len: int, device: torch.device) -> Packing:
        """The packing of time-major ``[max_len, B]`` sequences of ``lengths`` (any device)."""
        steps = torch.arange(max_len, device=device)
        mask = steps.unsqueeze(1) < lengths.to(device).unsqueeze(0)  # [L, B]
        return cls.from_mask(mask)

    @property
    def n_tokens(self) -> int:
        """``N``, the number of real tokens."""
        return self.sequence.numel()

    @property
    def batch_size(self) -> int:
        return self.valid_mask.shape[0]

    @property
    def length(self) -> int:
        """``L``, the padded length."""
        return self.valid_mask.shape[1]

    @property
    def key_mask(self) -> Tensor:
        """``[B, 1, 1, L]`` bool, True at real tokens: an attention mask over these keys."""
        return self.valid_mask[:, None, None, :]

    def to_blocks(self, rows: Tensor) -> Tensor:
        """Scatter packed ``rows [N, *F]`` into padded blocks ``[B, L, *F]``, zeros at pads."""
        blocks = rows.new_zeros(self.batch_size, self.length, *rows.shape[1:])
        return blocks.index_put((self.sequence, self.position), rows)

    def from_blocks(self, blocks: Tensor) -> Tensor:
        """Gather the real rows ``[N, *F]`` of padded blocks ``[B, L, *F]`` (any strides)."""
        return blocks[self.sequence, self.position]
