"""Padding and masks for variable-length batches.

Layout convention: time-major ``[L, B]`` by default (what ``nn.GRU`` and the PyTorch
chatbot tutorial use), batch-major ``[B, L]`` with ``batch_first=True``.

A *valid mask* is True at real tokens and False at padding. PyTorch APIs that want the
opposite (``key_padding_mask`` in ``nn.MultiheadAttention``) take ``~valid_mask``.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import torch
from torch.nn.utils.rnn import pad_sequence

__all__ = ["pad_batch", "lengths_to_mask"]


def pad_batch(
    seqs: Sequence[Sequence[int] | torch.Tensor],
    pad_id: int = 0,
    batch_first: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad a batch of token-id sequences to a rectangle.

    The successor of the tutorial's ``zeroPadding``: for ``[[1, 2], [1, 2, 3], [1]]`` it
    returns ``[[1, 1, 1], [2, 2, 0], [0, 3, 0]]`` (time-major).

    Args:
        seqs: ``B`` sequences, each a list of ints or a 1-D integer tensor. Empty
            sequences are allowed (length 0); floats are refused, never truncated.
        pad_id: id written at padded positions.
        batch_first: return ``[B, L]`` instead of ``[L, B]``.

    Returns:
        ``(padded, lengths)``: ``padded`` is a LongTensor ``[L, B]`` (or ``[B, L]``) with
        ``L = max(lengths)``, on the device of the input tensors (CPU for lists);
        ``lengths`` is a CPU LongTensor ``[B]``, as ``pack_padded_sequence`` wants.

    Raises:
        ValueError: on an empty batch, or a sequence that is not 1-D or not integer ids.
    """
    if len(seqs) == 0:
        raise ValueError("pad_batch: the batch is empty; it needs at least one sequence")
    tensors = []
    for i, seq in enumerate(seqs):
        if isinstance(seq, torch.Tensor):
            t = seq
        else:
            # No dtype here: torch.long would silently truncate 1.5 to 1.
            items = list(seq)
            try:
                t = torch.as_tensor(items) if items else torch.zeros(0, dtype=torch.long)
            except (TypeError, ValueError, RuntimeError) as e:
                raise ValueError(
                    f"pad_batch: sequence {i} is not a list of token ids ({e})") from None
        if t.dim() != 1:
            raise ValueError(
                f"pad_batch: sequence {i} has shape {tuple(t.shape)}; each must be 1-D"
            )
        if t.dtype.is_floating_point or t.dtype == torch.bool:
            raise ValueError(f"pad_batch: sequence {i} has dtype {t.dtype}; token ids are integers")
        tensors.append(t.long())
    lengths = torch.tensor([t.numel() for t in tensors], dtype=torch.long)
    padded = pad_sequence(tensors, batch_first=batch_first, padding_value=pad_id)
    return padded, lengths


def lengths_to_mask(
    lengths: torch.Tensor | Sequence[int],
    max_len: int | None = None,
    batch_first: bool = False,
) -> torch.Tensor:
    """Valid mask from sequence lengths: True at real tokens.

    The successor of the tutorial's ``binaryMatrix``, computed from lengths rather than by
    comparing ids with PAD (so a real token whose id happens to equal PAD stays valid).

    Args:
        lengths: ``[B]`` non-negative lengths (tensor on any device, or a list).
        max_len: mask length ``L``, a non-negative int; defaults to ``max(lengths)`` (0 for
            an empty batch).
        batch_first: return ``[B, L]`` instead of ``[L, B]``.

    Returns:
        BoolTensor ``[L, B]`` (or ``[B, L]``) on the device of ``lengths``.

    Raises:
        ValueError: on a negative length, a length above ``max_len``, a ``max_len`` that is
            not a non-negative int, or lengths that are not a 1-D integer sequence.
    """
    if not isinstance(lengths, torch.Tensor) and len(lengths) == 0:
        lengths = torch.zeros(0, dtype=torch.long)  # as_tensor([]) would be float32
    lengths = torch.as_tensor(lengths)
    if max_len is not None:
        try:
            if isinstance(max_len, bool) or isinstance(max_len, torch.Tensor) and (
                    max_len.dtype.is_floating_point):
                raise TypeError
            max_len = operator.index(max_len)  # ints, numpy and 0-d tensor integers
        except TypeError:
            raise ValueError(f"lengths_to_mask: max_len must be an int, got {max_len!r}") from None
        if max_len < 0:
            raise ValueError(f"lengths_to_mask: max_len must be >= 0, got {max_len}")
    if lengths.dim() != 1:
        raise ValueError(
            f"lengths_to_mask: lengths must be 1-D [B], got shape {tuple(lengths.shape)}"
        )
    if lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        raise ValueError(f"lengths_to_mask: lengths must be integers, got {lengths.dtype}")
    if lengths.numel() and int(lengths.min()) < 0:
        raise ValueError(
            f"lengths_to_mask: negative length {int(lengths.min())} in {lengths.tolist()}"
        )
    longest = int(lengths.max()) if lengths.numel() else 0
    if max_len is None:
        max_len = longest
    elif longest > max_len:
        raise ValueError(f"lengths_to_mask: length {longest} is above max_len={max_len}")
    steps = torch.arange(max_len, device=lengths.device)
    mask = steps.unsqueeze(0) < lengths.unsqueeze(1)  # [B, L]
    return mask if batch_first else mask.t()
