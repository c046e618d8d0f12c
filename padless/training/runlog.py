"""What a training run writes for its user: a CSV log, TensorBoard events, a loss-curve PNG.

Only the main process (rank 0) writes; the other ranks get a disabled :class:`RunLog`.
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass
from pathlib import Path

from padless.runs.directory import RunDirectory
from padless.runtime.files import atomic_write, write_text_atomic

__all__ = ["LOG_FIELDS", "LogWindow", "RunLog", "plot_losses", "shown_figures"]

LOG_FIELDS = (
    "kind", "step", "epoch", "lr", "loss", "ppl", "accuracy", "tokens", "tokens_per_s",
    "grad_norm", "elapsed_s", "precision", "time",
)


@dataclass
class LogWindow:
    """Sums over the training steps since the last ``train`` row of the log."""

    loss: float = 0.0
    tokens: int = 0
    time: float = 0.0
    grad_norm: float = 0.0  # the last step's

    def add(self, loss: float, tokens: int, seconds: float, grad_norm: float) -> None:
        self.loss += loss
        self.tokens += tokens
        self.time += seconds
        self.grad_norm = grad_norm


class RunLog:
    """Appends rows to ``RUN_DIR/log.csv`` and, if ``tensorboard`` imports, ``RUN_DIR/tb``.

    Rows have ``kind`` ``"train"`` (averages since the previous train row) or ``"valid"``.

    Args:
        run: the run directory.
        enabled: False on ranks other than 0: every method does nothing.
        resume_step: on ``--resume``, the checkpoint's step: rows logged after it by the
            interrupted process are dropped, since the resumed run logs those steps again.
            None starts a new log (a run that never reached a checkpoint leaves nothing).
    """

    def __init__(self, run: RunDirectory, *, enabled: bool,
                 resume_step: int | None = None) -> None:
        self.enabled = enabled
        self.path = run.log_file
        self._tb = None
        if not enabled:
            return
        if resume_step is None:
            self.path.unlink(missing_ok=True)
        elif self.path.exists():
            self._truncate_after(resume_step)
        new = not self.path.exists()
        self._file = open(self.path, "a", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._file, LOG_FIELDS)
        if new:
            self._writer.writeheader()
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            return
        self._tb = SummaryWriter(str(run.tensorboard_dir), purge_step=resume_step)

    def _truncate_after(self, step: int) -> None:
        """Keep the rows up to ``step``; a row that does not parse (a killed process's half
        row, a field someone made huge) is dropped, not a reason to stop."""
        rows = [row for row in read_rows(self.path) if _step(row) is not None
                and _step(row) <= step]
        out = io.StringIO()
        writer = csv.DictWriter(out, LOG_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        write_text_atomic(self.path, out.getvalue())

    def log(self, kind: str, step: int, **values: float | int | str | None) -> dict[str, str]:
        """Write one row (and its scalars to TensorBoard as ``kind/name``); return the row's
        cells as written (floats to 6 significant digits), so that a line shown to the user
        quotes the log rather than rounding the same float a second way."""
        row = {"kind": kind, "step": str(step), "time": f"{time.time():.3f}"}
        for name, value in values.items():
            row[name] = f"{value:.6g}" if isinstance(value, float) else str(value)
        if not self.enabled:
            return row
        try:
            self._writer.writerow(row)
            self._file.flush()
        except OSError as e:  # a full disk: name the file (a write's error names none)
            raise OSError(e.errno, e.strerror, str(self.path)) from None
        if self._tb is not None:
            for name, value in values.items():
                if isinstance(value, int | float) and name not in ("epoch", "elapsed_s"):
                    self._tb.add_scalar(f"{kind}/{name}", value, step)
        return row

    def close(self) -> None:
        """Flush and close the files."""
        if not self.enabled:
            return
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def shown_figures(row: dict[str, str]) -> dict[str, str]:
    """A ``train`` row's loss and speed as the progress bar and the log line show them:
    rounded from the row's own cells, so that what is shown always agrees with log.csv
    (rounding the unrounded float instead can differ in the last digit: 13,251 against a
    logged 13250.5)."""
    return {"loss": f"{float(row['loss']):.3f}", "tok_s": f"{float(row['tokens_per_s']):,.0f}"}


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a ``log.csv``, by its header; a line that does not parse (a killed
    process's half row, a field someone made larger than ``csv``'s limit) is left out, not a
    reason to stop: the log is a record, never an input training depends on."""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    header = next(csv.reader(lines[:1]), [])
    rows = []
    for line in lines[1:]:
        try:
            rows.append(dict(zip(header, next(csv.reader([line])), strict=False)))
        except (csv.Error, StopIteration):
            continue
    return rows


def _step(row: dict[str, str | None]) -> int | None:
    """The step of a log row; None for a row a killed process left half written."""
    try:
        return int(row.get("step") or "")
    except ValueError:
        return None


def plot_losses(csv_path: Path, png_path: Path) -> bool:
    """Plot training and validation loss (and validation accuracy) against steps.

    Uses matplotlib's Agg canvas directly, so no display and no global backend switch.
    Returns False when the log has nothing to plot.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    series: dict[str, tuple[list[int], list[float]]] = {
        "train": ([], []), "valid": ([], []), "accuracy": ([], []),
    }
    for row in read_rows(csv_path):
        step = _step(row)
        try:
            if step is not None and row["loss"] and row["kind"] in ("train", "valid"):
                series[row["kind"]][1].append(float(row["loss"]))
                series[row["kind"]][0].append(step)
            if step is not None and row["kind"] == "valid" and row["accuracy"]:
                series["accuracy"][1].append(float(row["accuracy"]))
                series["accuracy"][0].append(step)
        except (KeyError, TypeError, ValueError):  # a half-written row: the plot is a picture
            continue
    if not series["train"][0] and not series["valid"][0]:
        return False
    has_accuracy = bool(series["accuracy"][0])
    fig = Figure(figsize=(8, 6 if has_accuracy else 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2 if has_accuracy else 1, 1, sharex=True, squeeze=False)[:, 0]
    ax = axes[0]
    ax.plot(*series["train"], label="train (objective, with any label smoothing)", linewidth=1)
    ax.plot(*series["valid"], "o-", label="validation (cross-entropy)")
    ax.set_ylabel("loss (nats / real token)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    if has_accuracy:
        axes[1].plot(*series["accuracy"], "s-", color="tab:green", label="validation")
        axes[1].set_ylabel("token accuracy")
        axes[1].grid(True, alpha=0.3)
        axes[1].legend()
    axes[-1].set_xlabel("optimiser step")
    atomic_write(png_path, lambda f: fig.savefig(f, dpi=100, format="png"))
    return True
