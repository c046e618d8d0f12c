"""``padless average RUN_DIR --best K`` (or ``--last K``): average kept checkpoints.

Writes ``RUN_DIR/averaged.pt`` (or ``--out``), which chat, translate, evaluate (and the
HTTP server) load with ``--checkpoint averaged``, and prints its validation loss beside the
best checkpoint's. The run must have kept checkpoints (``--set train.keep_best=K`` or
``train.keep_last=K`` when training). The work is :func:`padless.runs.averaging.average_run`.
"""

from __future__ import annotations

import argparse
import sys

from padless.commands.inputs import integer
from padless.runs.averaging import average_run
from padless.runs.directory import RunDirectory

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``padless average``."""
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory of `padless train`")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--best", type=integer(1), metavar="K",
                       help="the K kept checkpoints with the lowest validation loss")
    which.add_argument("--last", type=integer(1), metavar="K", help="the K most recent kept ones")
    parser.add_argument("--out", metavar="FILE.pt",
                        help="where to write it (default RUN_DIR/averaged.pt)")
    parser.add_argument("--data", metavar="DATA_DIR",
                        help="score on this prepared data's valid split (default: the run's)")


def run(args: argparse.Namespace) -> int:
    """Average and report; exit code 0. Too few kept checkpoints, a bad run directory or
    option raise ``UserError``, which ``padless.cli.main`` reports in one line (exit 2)."""
    result = average_run(args.run_dir, best=args.best, last=args.last, out=args.out,
                         data_dir=args.data)
    steps = ", ".join(f"{c.step} ({c.loss:.4f})" for c in result.inputs)
    print(f"averaged {len(result.inputs)} checkpoints, steps (valid loss): {steps}")
    if result.notice is not None:
        print(f"padless average: notice: {result.notice}", file=sys.stderr)
    if result.valid_loss is not None:
        line = f"valid loss per token: averaged {result.valid_loss:.4f}"
        if result.best_loss is not None:
            line += (f", best single checkpoint {result.best_loss:.4f} "
                     f"({result.valid_loss - result.best_loss:+.4f})")
        print(line)
    hint = ("; use it with --checkpoint averaged"
            if result.path == RunDirectory(args.run_dir).checkpoint("averaged") else "")
    print(f"wrote {result.path}{hint}")
    return 0
