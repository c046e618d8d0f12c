"""What keeps a run from running away: :class:`DivergenceGuard`, which stops with a
``UserError`` a run whose gradient stays inf/NaN instead of going on without updates.
"""

from __future__ import annotations

from pathlib import Path

from padless.runtime.errors import UserError

__all__ = ["MAX_SKIPPED_STEPS", "DivergenceGuard"]

# Consecutive steps whose gradient is inf/NaN (the update is skipped) before the run stops as
# diverged: one bad batch is skipped, but weights that became inf/NaN give nothing else.
MAX_SKIPPED_STEPS = 10


class DivergenceGuard:
    """Counts consecutive steps without an update; too many means the run diverged."""

    def __init__(self, limit: int = MAX_SKIPPED_STEPS) -> None:
        self.limit = limit
        self.skipped = 0

    def update(self, updated: bool, step: int, lr: float, run_dir: Path) -> None:
        """Record whether ``step`` updated the weights.

        Raises:
            UserError: on the ``limit``-th skipped step in a row.
        """
        self.skipped = 0 if updated else self.skipped + 1
        if self.skipped >= self.limit:
            raise UserError(
                f"training diverged: the gradient was inf/NaN for {self.skipped} steps in a row "
                f"(up to step {step}), so the weights stopped changing; the learning rate "
                f"(train.lr={lr:g}) is probably too high: lower it and train again (the "
                f"checkpoints already in {run_dir} are kept)"
            )
