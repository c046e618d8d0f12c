"""The exponential moving average of the weights (``train.ema_decay``), :class:`EMA`: what
validation scores, what checkpoints hold as ``ema_weights`` and what every command decodes
with. (Not to be confused with ``padless average``, the mean of kept checkpoints.)

On a small corpus the weights at any one step sit somewhere noisy around a good point; their
running average sits nearer to it (Polyak averaging; fairseq's ``--ema-decay``, timm's
``ModelEmaV2``). The decay warms up as in TensorFlow's ``ExponentialMovingAverage``:
``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so the average follows the fast
changes of the first steps instead of dragging the random initial weights along for
``1 / (1 - decay)`` steps.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["EMA"]


class EMA:
    """The moving average of ``model``'s floating-point parameters and buffers.

    Args:
        model: the model being trained; the average starts as a copy of its weights.
        decay: the largest weight of the old average at an update, in ``(0, 1)``.
        updates: updates already made (a resumed run: its step), for the warm-up.
        saved: a ``state_dict`` holding the average so far (a resumed run's); None starts
            from the model's weights.
    """

    def __init__(self, model: nn.Module, decay: float, updates: int = 0,
                 saved: dict[str, torch.Tensor] | None = None) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA: decay must be in (0, 1), got {decay}")
        self.model = model
        self.decay = decay
        self.updates = updates
        self._live = {name: t for name, t in model.state_dict(keep_vars=True).items()
                      if t.is_floating_point()}
        self.average = {name: t.detach().clone() for name, t in self._live.items()}
        if saved is not None:
            self.load_state_dict(saved)

    @torch.no_grad()
    def update(self) -> None:
        """Fold the model's current weights in (after each optimiser step)."""
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        live = [t.detach() for t in self._live.values()]
        torch._foreach_lerp_(list(self.average.values()), live, 1.0 - decay)
        self.updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The model's ``state_dict`` with the averaged weights (copies)."""
        state = self.model.state_dict()
        return {name: self.average[name].clone() if name in self.average else t
                for name, t in state.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Take the averaged weights from a ``state_dict`` of the model (a resumed run's)."""
        missing = sorted(set(self.average) - set(state))
        if missing:
            raise ValueError(f"EMA: the weights lack {', '.join(missing[:3])}")
        with torch.no_grad():
            for name, average in self.average.items():
                average.copy_(state[name])

    @contextmanager
    def applied(self) -> Iterator[None]:
        """Inside the block the model holds the averaged weights; its own come back after."""
        live = [t.detach() for t in self._live.values()]
        kept = [t.clone() for t in live]
        with torch.no_grad():
            torch._foreach_copy_(live, list(self.average.values()))
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(live, kept)
