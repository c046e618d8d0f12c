"""What keeps a run from losing or mixing work, and from running away.

- :func:`run_directory_lock`: one ``padless train`` per run directory (rank 0 holds the
  lock for the whole run); it first removes the temporary files a killed run left there.
- :func:`usable_pairs`: pairs longer than ``train.max_length`` tokens on a side are left
  out (one runaway pair can take minutes per step and all the memory, and a step cannot be
  interrupted), and a split with nothing to train on is refused.
- :class:`DivergenceGuard`: a run whose gradient stays inf/NaN stops with a ``UserError``
  instead of going on without updates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from padless.data.batch import IdPair
from padless.runtime.errors import UserError
from padless.runtime.files import remove_temporaries
from padless.runtime.lock import exclusive_lock

__all__ = ["MAX_SKIPPED_STEPS", "DivergenceGuard", "run_directory_lock", "usable_pairs"]

# Consecutive steps whose gradient is inf/NaN (the update is skipped) before the run stops as
# diverged: one bad batch is skipped, but weights that became inf/NaN give nothing else.
MAX_SKIPPED_STEPS = 10

Say = Callable[[str], object]


@contextmanager
def run_directory_lock(run_dir: Path, say: Say) -> Iterator[None]:
    """Hold ``RUN_DIR/.lock``; first remove what killed writes left in ``run_dir``.

    Raises:
        UserError: if another process holds it (the message names its pid).
    """
    with exclusive_lock(run_dir / ".lock", f"run directory {run_dir}", "padless train"):
        removed = [name for directory in (run_dir, *sorted(run_dir.glob("*/")))
                   for name in remove_temporaries(directory)]
        if removed:
            say(f"removed {len(removed)} temporary file(s) an interrupted run left in "
                f"{run_dir}: {', '.join(removed)}")
        yield


def usable_pairs(
    splits: dict[str, list[IdPair]],
    max_length: int | None,
    processes: int,
    say: Say,
    data_dir: str | Path | None = None,
) -> tuple[list[IdPair], list[IdPair]]:
    """The training and validation pairs with at most ``max_length`` tokens a side.

    The others are left out, with a notice (None: no cap).

    Raises:
        UserError: if fewer training pairs are left than there are processes.
    """
    kept = {}
    for name in ("train", "valid"):
        pairs = splits.get(name, [])
        kept[name] = [p for p in pairs if max_length is None or max(map(len, p)) <= max_length]
        if len(kept[name]) < len(pairs):
            say(f"left out {len(pairs) - len(kept[name])} {name} pairs longer than "
                f"{max_length} tokens (train.max_length)")
    if len(kept["train"]) < processes:
        where = f" of {data_dir}" if data_dir is not None else ""
        if not splits["train"]:
            raise UserError(f"the training split{where} is empty: nothing to train on; "
                            "prepare the data again")
        raise UserError(
            f"the training split{where} has {len(kept['train'])} usable pairs "
            f"({len(splits['train'])} in all, train.max_length={max_length}) for {processes} "
            "process(es): raise train.max_length, or prepare more data"
        )
    return kept["train"], kept["valid"]


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
