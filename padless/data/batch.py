"""The ``Batch``: one padded mini-batch of (source, target) pairs that owns its masks.

Every batch in padless (training, validation, evaluation, benchmarks) is built here, by
:meth:`Batch.from_pairs` or :meth:`Batch.from_padded` (a token store's rows), most often
through :func:`padless.data.loader.make_batches`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from padless.data.vocabulary import Specials
from padless.masking import lengths_to_mask, pad_batch

__all__ = ["Batch", "IdPair"]

IdPair = tuple[list[int], list[int]]  # (source ids, target ids), without BOS/EOS


@dataclass(frozen=True)
class Batch:
    """A padded batch of ``B`` pairs, time-major (``[L, B]``) unless ``batch_first``.

    The target is shifted here, once: ``tgt_in = BOS y_1 .. y_n`` feeds the decoder and
    ``tgt_out = y_1 .. y_n EOS`` is what it must predict; both have length ``n + 1``.

    Attributes:
        src: ``[S, B]`` source ids, PAD beyond each length.
        src_lengths: ``[B]`` source lengths (always on CPU, as packing wants).
        src_mask: ``[S, B]`` valid mask (True at real source tokens).
        tgt_in: ``[T, B]`` decoder inputs.
        tgt_out: ``[T, B]`` decoder targets.
        tgt_mask: ``[T, B]`` valid mask of ``tgt_out``.
        n_tokens: number of real target tokens (``tgt_mask.sum()``, EOS included).
        batch_first: layout of every ``[L, B]`` tensor above (``[B, L]`` if True).
    """

    src: torch.Tensor
    src_lengths: torch.Tensor
    src_mask: torch.Tensor
    tgt_in: torch.Tensor
    tgt_out: torch.Tensor
    tgt_mask: torch.Tensor
    n_tokens: int
    batch_first: bool = False

    @classmethod
    def from_pairs(
        cls,
        pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
        *,
        specials: Specials = Specials(),  # noqa: B008 (frozen)
        batch_first: bool = False,
    ) -> Batch:
        """Build a batch from ``(source ids, target ids)`` pairs (no BOS/EOS in them); the
        decoder's input starts with ``specials.bos``, its output ends with ``specials.eos``.

        Raises:
            ValueError: on an empty batch or an empty source (there is nothing to encode).
        """
        if not pairs:
            raise ValueError("Batch.from_pairs: the batch is empty")
        for i, (src, _) in enumerate(pairs):
            if len(src) == 0:
                raise ValueError(f"Batch.from_pairs: the source of pair {i} is empty")
        src, src_lengths = pad_batch([s for s, _ in pairs], specials.pad, batch_first=True)
        tgt, tgt_lengths = pad_batch([t for _, t in pairs], specials.pad, batch_first=True)
        return cls.from_padded(src, src_lengths, tgt, tgt_lengths, specials=specials,
                               batch_first=batch_first)

    @classmethod
    def from_padded(
        cls,
        src: torch.Tensor,
        src_lengths: torch.Tensor,
        tgt: torch.Tensor,
        tgt_lengths: torch.Tensor,
        *,
        specials: Specials = Specials(),  # noqa: B008 (frozen)
        batch_first: bool = False,
    ) -> Batch:
        """Build a batch from padded rows: ``src`` ``[B, S]`` and ``tgt`` ``[B, T]`` (long,
        PAD beyond ``src_lengths`` / ``tgt_lengths``, ``[B]`` each, no BOS/EOS), as
        :meth:`padless.data.store.TokenSplit.batch` gathers them from the store."""
        rows = torch.arange(len(tgt_lengths))
        tgt_in = torch.cat([tgt.new_full((len(tgt), 1), specials.bos), tgt], dim=1)  # [B, T+1]
        tgt_out = torch.cat([tgt, tgt.new_full((len(tgt), 1), specials.pad)], dim=1)
        tgt_out[rows, tgt_lengths] = specials.eos
        src_lengths, tgt_lengths = src_lengths.cpu(), tgt_lengths + 1  # EOS counted

        def layout(x: torch.Tensor) -> torch.Tensor:
            return x if batch_first else x.t().contiguous()

        return cls(
            src=layout(src),
            src_lengths=src_lengths,
            src_mask=lengths_to_mask(src_lengths, batch_first=batch_first),
            tgt_in=layout(tgt_in),
            tgt_out=layout(tgt_out),
            tgt_mask=lengths_to_mask(tgt_lengths, batch_first=batch_first),
            n_tokens=int(tgt_lengths.sum()),
            batch_first=batch_first,
        )

    def __len__(self) -> int:
        return self.src_lengths.numel()

    @property
    def tgt_lengths(self) -> torch.Tensor:
        """``[B]`` target lengths (EOS included), on the mask's device."""
        return self.tgt_mask.sum(dim=1 if self.batch_first else 0)

    def real_targets(self) -> torch.Tensor:
        """``[n_tokens]`` target ids of the real tokens, in ``tgt_mask`` order.

        That order (row-major over the batch's own layout) is the order of the rows of
        ``model.target_states(batch)``.
        """
        return self.tgt_out[self.tgt_mask]

    def with_word_dropout(self, rate: float, unk_id: int) -> Batch:
        """A copy whose real source tokens and decoder inputs are each UNK with prob ``rate``.

        Word dropout (Gal & Ghahramani 2016; Sennrich & Zhang 2019 for small corpora): the
        model cannot lean on any one word, which regularises it where dropout on activations
        is not enough. BOS (the first decoder input), pads and the targets are never changed,
        so the loss still scores every real target token. Draws from torch's global RNG.
        """
        if rate == 0.0:
            return self
        first = self.tgt_in.new_zeros(self.tgt_in.shape, dtype=torch.bool)
        first[(slice(None), 0) if self.batch_first else 0] = True
        tgt_inputs = self.tgt_mask & ~first  # decoder inputs y_1 .. y_n

        def dropped(ids: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
            drop = where & (torch.rand(ids.shape, device=ids.device) < rate)
            return ids.masked_fill(drop, unk_id)

        return replace(self, src=dropped(self.src, self.src_mask),
                       tgt_in=dropped(self.tgt_in, tgt_inputs))

    def to(self, device: torch.device | str) -> Batch:
        """A copy on ``device``; ``src_lengths`` stays on CPU."""
        return replace(
            self,
            src=self.src.to(device, non_blocking=True),
            src_mask=self.src_mask.to(device, non_blocking=True),
            tgt_in=self.tgt_in.to(device, non_blocking=True),
            tgt_out=self.tgt_out.to(device, non_blocking=True),
            tgt_mask=self.tgt_mask.to(device, non_blocking=True),
        )
