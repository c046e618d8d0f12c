"""``padless demo``: the seed document's worked example, done with padless."""

from __future__ import annotations

import argparse

import torch

from padless.losses import masked_cross_entropy, masked_nll_loss
from padless.masking import lengths_to_mask, pad_batch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``padless demo`` takes no options."""


def run(args: argparse.Namespace) -> int:
    """Reproduce the seed's example, then show the reductions on the same batch."""
    targets = [[1, 2], [1, 2, 3], [1]]
    padded, lengths = pad_batch(targets)
    mask = lengths_to_mask(lengths)
    print("targets (time-major [T, B]):\n", padded)
    print("valid mask:\n", mask.int())

    outputs1 = torch.tensor([[0.2, 0.1, 0.7], [0.3, 0.6, 0.1], [0.4, 0.5, 0.1]])
    loss, n = masked_nll_loss(outputs1.log(), padded[0], mask[0])
    print(f"\nseed maskNLLLoss on step 0: loss={loss.item():.4f}, n_tokens={n}")
    print("(the seed document prints (tensor(1.1689), 3))")

    torch.manual_seed(0)
    logits = torch.randn(*padded.shape, 4)
    logits[~mask] = float("nan")  # garbage at pads never counts
    print("\nreductions of a random [T, B, V] batch with NaN at every pad position:")
    for reduction in ("mean", "sum", "sequence", "timestep"):
        loss, n = masked_cross_entropy(logits, padded, mask, reduction=reduction)
        print(f"  {reduction:<9} loss={loss.item():.4f}  n_tokens={n}")
    return 0
