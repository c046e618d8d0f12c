"""The Transformer's decoding state: :class:`TransformerDecoderState`, the key/value cache of
every decoder layer, whose rows may be at different steps.

Each layer's self-attention keys and values live in preallocated ``[R, heads, capacity, d]``
tensors; a step writes each row's new key and value at the row's own position (``lengths``)
in place, instead of growing the cache by a concatenation, and the capacity doubles when it
runs out. Rows at different steps (continuous batching: a request joins a running batch)
each attend to their own tokens only, through a mask over ``lengths``; when every row is at
the same step (a static batch) no mask is needed and the write is a slice. The encoder
memory's cross-attention keys and values are computed once per source.

A state is used once: :meth:`padless.models.transformer.Transformer.decode_step` writes into
the cache of the state it is given and returns the next one; go on from that.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["SelfCache", "TransformerDecoderState"]

INITIAL_CAPACITY = 16  # decoding steps a fresh cache holds before it grows


@dataclass(frozen=True)
class SelfCache:
    """One decoder layer's self-attention cache, for one step.

    Attributes:
        keys, values: ``[R, heads, capacity, d]``.
        lengths: ``[R]`` long, the tokens each row fed before this step.
        uniform: the common length when every row has fed as many (else None).
        mask: ``[R, 1, 1, T]`` bool over the first ``T = max(lengths) + 1`` positions, True
            at each row's own tokens and the new one (None when ``uniform``).
    """

    keys: Tensor
    values: Tensor
    lengths: Tensor
    uniform: int | None
    mask: Tensor | None

    def append(self, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Write the step's ``key``, ``value`` (``[R, heads, d]``) at each row's position;
        returns ``(keys, values, mask)`` to attend over (``[R, heads, T, d]``)."""
        if self.uniform is not None:
            t = self.uniform
            self.keys[:, :, t] = key
            self.values[:, :, t] = value
            return self.keys[:, :, : t + 1], self.values[:, :, : t + 1], None
        rows = torch.arange(len(self.lengths), device=self.lengths.device)
        self.keys[rows, :, self.lengths] = key
        self.values[rows, :, self.lengths] = value
        width = self.mask.shape[-1]
        return self.keys[:, :, :width], self.values[:, :, :width], self.mask


@dataclass(frozen=True)
class TransformerDecoderState:
    """The decoding state of ``R`` rows (hypotheses).

    Attributes:
        keys, values: per decoder layer, ``[R, heads, capacity, d]``: the self-attention keys
            and values of the tokens fed so far (row ``r``'s first ``lengths[r]``).
        lengths: ``[R]`` long, the tokens each row has fed.
        memory: per decoder layer, ``[2, R, heads, S, d]``: cross-attention keys and values
            of the encoder memory (zeros at source pads).
        key_mask: ``[R, 1, 1, S]`` bool, True at real source tokens.
        sources: ``[R]`` long, the source sentence each row decodes; rows with the same
            source hold the same ``memory``, so :meth:`select` copies it only when the rows'
            sources change (not when beam search reorders the beams of each sentence).
        uniform: the common length when every row has fed as many tokens, else None.
    """

    keys: tuple[Tensor, ...]
    values: tuple[Tensor, ...]
    lengths: Tensor
    memory: tuple[Tensor, ...]
    key_mask: Tensor
    sources: Tensor
    uniform: int | None = 0

    @classmethod
    def start(
        cls, memory: tuple[Tensor, ...], key_mask: Tensor, heads: int, size: int
    ) -> TransformerDecoderState:
        """The state before the first step, for ``memory`` (one entry per layer)."""
        rows = key_mask.shape[0]
        template = memory[0]
        empty = [
            template.new_zeros(rows, heads, INITIAL_CAPACITY, size // heads)
            for _ in range(2 * len(memory))
        ]
        lengths = torch.zeros(rows, dtype=torch.long, device=key_mask.device)
        return cls(
            tuple(empty[::2]),
            tuple(empty[1::2]),
            lengths,
            memory,
            key_mask,
            torch.arange(rows, device=key_mask.device),
        )

    @property
    def steps(self) -> int:
        """The most tokens any row has fed."""
        return int(self.lengths.max()) if self.lengths.numel() else 0

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]

    def caches(self) -> list[SelfCache]:
        """Every layer's cache for the next step (the capacity grown first if needed)."""
        state = self
        needed = (self.uniform if self.uniform is not None else self.steps) + 1
        keys, values = list(state.keys), list(state.values)
        if needed > self.capacity:
            extra = max(self.capacity, needed - self.capacity)
            keys = [F.pad(k, (0, 0, 0, extra)) for k in keys]
            values = [F.pad(v, (0, 0, 0, extra)) for v in values]
        mask = None
        if self.uniform is None:
            width = self.steps + 1
            positions = torch.arange(width, device=self.lengths.device)
            mask = (positions <= self.lengths.unsqueeze(1))[:, None, None, :]
        return [
            SelfCache(k, v, self.lengths, self.uniform, mask)
            for k, v in zip(keys, values, strict=True)
        ]

    def advanced(self, caches: list[SelfCache]) -> TransformerDecoderState:
        """The state after the step that wrote into ``caches``: one more token per row."""
        uniform = None if self.uniform is None else self.uniform + 1
        return TransformerDecoderState(
            tuple(c.keys for c in caches),
            tuple(c.values for c in caches),
            self.lengths + 1,
            self.memory,
            self.key_mask,
            self.sources,
            uniform,
        )

    def select(self, rows: Tensor) -> TransformerDecoderState:
        """The state of ``rows`` (see :class:`padless.models.base.DecoderState`)."""
        sources = self.sources.index_select(0, rows)
        memory, key_mask = self.memory, self.key_mask
        if not torch.equal(sources, self.sources):
            memory = tuple(kv.index_select(1, rows) for kv in memory)
            key_mask = key_mask.index_select(0, rows)
        lengths = self.lengths.index_select(0, rows)
        return TransformerDecoderState(
            tuple(k.index_select(0, rows) for k in self.keys),
            tuple(v.index_select(0, rows) for v in self.values),
            lengths,
            memory,
            key_mask,
            sources,
            self.uniform if self.uniform is not None else _uniform(lengths),
        )

    def concat(self, other: TransformerDecoderState) -> TransformerDecoderState:
        """The rows of ``self`` followed by the rows of ``other`` (continuous batching).

        The caches are padded to the larger capacity and the encoder memories to the longer
        source (zeros, masked out), so every row attends exactly as before; ``other``'s
        source numbers are shifted past ``self``'s so they stay distinct.
        """
        capacity = max(self.capacity, other.capacity)
        source_length = max(self.key_mask.shape[-1], other.key_mask.shape[-1])

        def cache(a: Tensor, b: Tensor) -> Tensor:
            return torch.cat(
                [
                    F.pad(a, (0, 0, 0, capacity - a.shape[2])),
                    F.pad(b, (0, 0, 0, capacity - b.shape[2])),
                ]
            )

        def memory(a: Tensor, b: Tensor) -> Tensor:
            return torch.cat(
                [
                    F.pad(a, (0, 0, 0, source_length - a.shape[3])),
                    F.pad(b, (0, 0, 0, source_length - b.shape[3])),
                ],
                dim=1,
            )

        key_mask = torch.cat(
            [
                F.pad(m, (0, source_length - m.shape[-1]), value=False)
                for m in (self.key_mask, other.key_mask)
            ]
        )
        shift = int(self.sources.max()) + 1 if self.sources.numel() else 0
        lengths = torch.cat([self.lengths, other.lengths])
        return TransformerDecoderState(
            tuple(cache(a, b) for a, b in zip(self.keys, other.keys, strict=True)),
            tuple(cache(a, b) for a, b in zip(self.values, other.values, strict=True)),
            lengths,
            tuple(memory(a, b) for a, b in zip(self.memory, other.memory, strict=True)),
            key_mask,
            torch.cat([self.sources, other.sources + shift]),
            _uniform(lengths),
        )


def _uniform(lengths: Tensor) -> int | None:
    """The common length of ``lengths``, or None if they differ."""
    if not lengths.numel():
        return 0
    low, high = int(lengths.min()), int(lengths.max())
    return low if low == high else None
