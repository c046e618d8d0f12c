"""``padless train``: train the seq2seq model on a prepared dataset.

::

    padless train --data DATA_DIR --out RUN_DIR [--config chatbot|tutorial|FILE]
                  [--set key=value ...] [--max-steps N] [--max-time MINUTES]
                  [--accumulate K] [--precision auto|fp32|bf16|fp16] [--resume]

Runs unchanged under ``torchrun --nproc_per_node=N -m padless train ...``. The work is
:func:`padless.training.trainer.train`; this module resolves the config and the data.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from padless.commands.options import add_option_arguments
from padless.data.dataset import PreparedData
from padless.runs.checkpoint import Checkpoint
from padless.runs.directory import RunDirectory
from padless.runs.info import check_for_training
from padless.runtime.options import ConfigError, knobs
from padless.training.config import (
    Config,
    TrainConfig,
    bundled_configs,
    fine_tune_config,
    load_config,
    resumed_config,
)
from padless.training.trainer import TrainResult, train

__all__ = ["add_arguments", "describe_result", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``padless train``."""
    parser.add_argument("--data", required=True, metavar="DATA_DIR",
                        help="a directory written by `padless prepare`")
    parser.add_argument("--out", required=True, metavar="RUN_DIR",
                        help="run directory: checkpoints, logs, config.yaml, loss.png")
    parser.add_argument("--config", metavar="NAME|FILE",
                        help=f"bundled config ({', '.join(bundled_configs())}) or a YAML file "
                             "(default: chatbot; with --init-from: finetune; with --resume: "
                             "the run's own config.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set model.hidden_size=256 "
                             "--set train.lr=3e-4 (repeatable)")
    add_option_arguments(parser, TrainConfig, overrides="train")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its latest checkpoint, with "
                             "the config it holds (--set may change train.* keys)")
    parser.add_argument("--init-from", metavar="RUN_DIR",
                        help="start from that run's weights (its best.pt) and model, with a "
                             "fresh optimiser, schedule and step count: fine-tune a trained or "
                             "imported model (prepare --data with --text-from RUN_DIR)")


def _resolve_config(args: argparse.Namespace, run_dir: Path,
                    start: Checkpoint | None) -> Config:
    """The run's config: a bundled/file config (new run), the model of the run it starts
    from with a training config (--init-from), or the checkpoint's (--resume)."""
    overrides = list(args.set) + [f"train.{name}={getattr(args, name)}"
                                  for name, knob in knobs(TrainConfig)
                                  if knob.flag is not None and getattr(args, name) is not None]
    check_for_training(RunDirectory(run_dir), resume=args.resume)  # before loading the data
    if start is not None:
        return fine_tune_config(start.model_config(), args.config or "finetune", overrides)
    if not args.resume:
        return load_config(args.config or "chatbot", overrides)
    if args.config is not None:
        raise ConfigError("--config: a resumed run keeps the config of its checkpoint; use --set")
    return resumed_config(run_dir, overrides)


def run(args: argparse.Namespace) -> int:
    """Train; the exit code is 0, or ``128 + signal`` if a signal stopped it.

    A bad config, dataset, run directory or checkpoint raises ``UserError`` (``ConfigError``),
    which ``padless.cli.main`` reports in one line (exit 2).
    """
    run_dir = Path(args.out)
    start = None
    if args.init_from is not None:
        if args.resume:
            raise ConfigError("--init-from starts a new run from another run's weights and "
                              "--resume goes on with this one: give one of them")
        start = Checkpoint.load(RunDirectory(args.init_from).best, mmap=True)
    config = _resolve_config(args, run_dir, start)
    data = PreparedData.load(args.data)
    result = train(config, data.text, data.splits, run_dir, resume=args.resume,
                   data_dir=args.data, init_from=args.init_from)
    if result.main_process:  # under torchrun: once, not once per process
        print(describe_result(result, run_dir))
    return result.exit_code


def describe_result(result: TrainResult, run_dir: Path) -> str:
    """One line on how a run ended."""
    best = "n/a" if result.best_valid_loss is None else f"{result.best_valid_loss:.4f}"
    return (f"stopped at step {result.step} ({result.stop_reason}); best valid loss {best}; "
            f"run directory {run_dir}")
