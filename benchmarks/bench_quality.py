"""Validation loss against training time: the bundled configs next to the tutorial's
algorithm, on the tutorial's trimming of chitchat and on a longer-sentence set.

Candidates: ``tutorial-algorithm`` (the PyTorch tutorial's own training, from
``bench_train.py``: random batches, per-step loss, its model) and every bundled config
(``padless/training/configs/*.yaml``, so a config added there becomes a candidate), each
trained by padless's :class:`~padless.training.trainer.Trainer` as ``padless train`` would:
its own validations, plateau schedule, early stopping. Candidates train in turns of
``--slice-seconds`` in one process (the order rotating) until each has had ``--minutes`` of
training or stopped; every ``--eval-every`` seconds of its training time, each is scored on
the same validation pairs (per-token loss over real target tokens with EOS, fp32, dropout
off). Training time counts optimiser steps (batches included), not the validations.

Data sets: ``tutorial`` (``--normalize tutorial --max-length 10 --min-count 3
--drop-unk-pairs``, ~15k training pairs), ``long`` (``--max-length 30 --min-count 3``,
~85k pairs) and ``quickstart`` (``--max-length 20 --min-count 3``, what ``padless
quickstart`` trains on), prepared into ``benchmarks/data`` when missing; and ``enfr``, the
LibreOffice English-French translation corpus (``benchmarks/libreoffice_corpus.py``; the
docs/data.md says how to build ``benchmarks/data/enfr``). Each set of ``--datasets`` writes its own
RESULTS.md section and PNG, so runs on different data sets can go side by side.

Goals: on ``tutorial``, the default config's best validation loss is at least 0.3 nats below
the tutorial algorithm's at the end; every padless run stops, or adapts its schedule, before
its validation loss rises more than 0.1 above its best.

    python -m benchmarks.bench_quality                        # 2 x 10 min per candidate
    python -m benchmarks.bench_quality --datasets tutorial --candidates chatbot tutorial-algorithm
    python -m benchmarks.bench_quality --quick                # smoke run, nothing written
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from benchmarks.data import load_data
from benchmarks.machine import choose_device
from benchmarks.results import publish
from benchmarks.tutorial import make_tutorial
from padless.data.dataset import PreparedData
from padless.models.scoring import corpus_scores
from padless.runs.directory import RunDirectory
from padless.training.config import bundled_configs, load_config
from padless.training.distributed import World
from padless.training.signals import StopSignals
from padless.training.trainer import Trainer

DATASETS = {  # name -> (directory under benchmarks/data, `padless prepare chitchat` options)
    "tutorial": ("chitchat-tutorial",
                 "--normalize tutorial --max-length 10 --min-count 3 --drop-unk-pairs"),
    "long": ("chitchat-max30", "--max-length 30 --min-count 3"),
    "quickstart": ("chitchat-quickstart", "--max-length 20 --min-count 3"),
    "enfr": ("enfr", None),  # built by hand: see docs/data.md, "A translation corpus"
}
TUTORIAL = "tutorial-algorithm"
DEFAULT_CONFIG = "chatbot"
RISE_LIMIT, MARGIN = 0.1, 0.3


@dataclass
class Run:
    """One candidate on one data set: how to train a slice, how to score, what it did."""

    name: str
    train_for: Callable[[float], None]  # train for about this many seconds
    trained: Callable[[], float]  # training seconds so far
    valid_loss: Callable[[], float]
    steps: Callable[[], int]
    stopped: str | None = None  # why a padless run ended early (early_stopping)
    finish: Callable[[], None] = lambda: None  # write the run's final files
    curve: list[tuple[float, float]] = field(default_factory=list)  # (minutes, loss)
    last_eval: float = -math.inf

    def best(self) -> float:
        return min(loss for _, loss in self.curve)

    def max_rise(self) -> float:
        """Largest rise of the validation loss above its best so far."""
        best, rise = math.inf, 0.0
        for _, loss in self.curve:
            best = min(best, loss)
            rise = max(rise, loss - best)
        return rise


def tutorial_run(data: PreparedData, valid: list, device: torch.device, seed: int) -> Run:
    candidate = make_tutorial(data.splits["train"], valid, len(data.vocab), device, seed)
    batches = [list(range(i, min(i + 64, len(valid)))) for i in range(0, len(valid), 64)]
    order = sorted(range(len(valid)), key=lambda i: (len(valid[i][0]), len(valid[i][1])))
    batches = [[order[i] for i in b] for b in batches]  # similar lengths together
    return Run(TUTORIAL, candidate.train_for, lambda: candidate.train_seconds,
               lambda: candidate.evaluate(batches), lambda: candidate.steps)


class SlicedTrainer(Trainer):
    """The real training loop (:meth:`Trainer.run`), paused after a slice of wall time so
    the candidates can race in turns; it finishes (validates and saves) only at the end."""

    slice_end = math.inf

    def stop_reason(self, signals: StopSignals) -> str | None:
        if time.perf_counter() >= self.slice_end:
            return "slice"
        return super().stop_reason(signals)

    def finish(self, reason: str, signals: StopSignals) -> str:
        return reason if reason == "slice" else super().finish(reason, signals)


def padless_run(name: str, data: PreparedData, valid: list, device: torch.device,
                run_dir: Path, seed: int) -> Run:
    config = load_config(name, [f"train.seed={seed}", "train.max_time=null",
                                "train.max_steps=100000000"])
    name = Path(name).stem if name.endswith((".yaml", ".yml")) else name
    world = World(rank=0, world_size=1, local_rank=0, device=device)
    trainer = SlicedTrainer(config, data.text, data.splits, RunDirectory(run_dir), world,
                            progress=False)
    trainer.say = lambda *_: None

    def valid_loss() -> float:  # the weights the run validates and saves: their average if kept
        with contextlib.nullcontext() if trainer.ema is None else trainer.ema.applied():
            return corpus_scores(trainer.model, valid).loss

    run = Run(name, lambda s: None, lambda: trainer.state.train_time_s, valid_loss,
              lambda: trainer.state.step)

    def train_for(seconds: float) -> None:
        if run.stopped:
            return
        trainer.slice_end = time.perf_counter() + seconds
        reason = trainer.run().stop_reason
        if reason != "slice":
            run.stopped = reason

    def finish() -> None:
        if not run.stopped:  # the budget ended it: validate and save, as a --max-time run does
            Trainer.finish(trainer, "max_time", StopSignals())

    run.train_for, run.finish = train_for, finish
    return run


def race(runs: list[Run], args: argparse.Namespace) -> None:
    """Train the runs in turns; score each every ``eval_every`` seconds of its training."""
    budget, turn, wall = args.minutes * 60, 0, time.perf_counter()
    for run in runs:
        run.curve.append((0.0, run.valid_loss()))
        run.last_eval = 0.0
    while any(r.trained() < budget and not r.stopped for r in runs):
        for run in runs[turn % len(runs):] + runs[: turn % len(runs)]:
            left = budget - run.trained()
            if left <= 0 or run.stopped:
                continue
            run.train_for(min(args.slice_seconds, left, args.eval_every))
            if run.trained() - run.last_eval >= args.eval_every or run.stopped or (
                    run.trained() >= budget):
                run.last_eval = run.trained()
                run.curve.append((run.trained() / 60, run.valid_loss()))
        turn += 1
        status = "; ".join(f"{r.name} {r.steps()} steps {r.curve[-1][1]:.3f}"
                           + (" (stopped)" if r.stopped else "") for r in runs)
        print(f"[{(time.perf_counter() - wall) / 60:5.1f} min] {status}", flush=True)


def at_minute(run: Run, minute: float) -> float | None:
    """The last score at or before ``minute`` of training (None before the first after 0)."""
    points = [loss for m, loss in run.curve if 0 < m <= minute + 1e-9]
    return points[-1] if points else None


def table(runs: list[Run], minutes: float) -> list[str]:
    marks = [minutes * f / 5 for f in range(1, 6)]
    if minutes > 10 and 10 not in marks:  # the horizon every comparison quotes
        marks = sorted([*marks, 10.0])
    head = "| candidate | steps | " + " | ".join(f"{m:.3g} min" for m in marks)
    rows = [head + " | best | max rise above best | ended |",
            "|---|---:|" + "---:|" * len(marks) + "---:|---:|---|"]
    for run in runs:
        cells = [at_minute(run, m) for m in marks[:-1]] + [run.curve[-1][1]]  # last: the end
        shown = " | ".join("" if c is None else f"{c:.3f}" for c in cells)
        ended = run.stopped or "time"
        rows.append(f"| {run.name} | {run.steps()} | {shown} | {run.best():.3f} "
                    f"| {run.max_rise():.3f} | {ended} |")
    return rows


def verdicts(name: str, runs: list[Run]) -> list[str]:
    by_name = {r.name: r for r in runs}
    lines = []
    if name == "tutorial" and TUTORIAL in by_name and DEFAULT_CONFIG in by_name:
        tutorial = by_name[TUTORIAL].curve[-1][1]
        best = by_name[DEFAULT_CONFIG].best()
        met = best <= tutorial - MARGIN
        lines.append(f"- Default config's best {best:.3f} vs the tutorial algorithm's "
                     f"{tutorial:.3f} at the end: {tutorial - best:+.3f} nats below "
                     f"(goal {MARGIN}): **{'met' if met else 'missed'}**.")
    for run in runs:
        if run.name != TUTORIAL:
            ok = run.max_rise() <= RISE_LIMIT
            lines.append(f"- {run.name}: rose at most {run.max_rise():.3f} above its best "
                         f"(goal {RISE_LIMIT}): **{'met' if ok else 'missed'}**.")
    return lines


def plot(results: dict[str, list[Run]], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6 * len(results), 4.5), layout="tight")
    FigureCanvasAgg(fig)
    for ax, (name, runs) in zip(fig.subplots(1, len(results), squeeze=False)[0],
                                results.items(), strict=True):
        for run in runs:
            ax.plot(*zip(*run.curve[1:], strict=True), marker=".", label=run.name)
        ax.set_title(f"{name} ({DATASETS[name][1] or DATASETS[name][0]})", fontsize=8)
        ax.set_xlabel("training minutes")
        ax.set_ylabel("validation loss per token")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.savefig(path, dpi=110)


def parse_args(argv: list[str]) -> argparse.Namespace:
    candidates = [TUTORIAL, *bundled_configs()]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=["tutorial", "long"])
    parser.add_argument("--candidates", nargs="+", default=candidates, metavar="NAME",
                        help=f"any of: {', '.join(candidates)}, or a config YAML file")
    parser.add_argument("--minutes", type=float, default=10.0, help="training per candidate")
    parser.add_argument("--slice-seconds", type=float, default=30.0)
    parser.add_argument("--eval-every", type=float, default=60.0,
                        help="seconds of a candidate's training between its scores")
    parser.add_argument("--valid-pairs", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: as the issue measured; steady on a shared machine)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep-runs", type=Path, metavar="DIR",
                        help="keep the padless run directories here (e.g. to `padless evaluate` "
                             "them); default: a temporary directory")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 0.5 min per candidate, scores every 10 s, no files")
    parser.add_argument("--results", type=Path, default=Path(__file__).with_name("RESULTS.md"))
    args = parser.parse_args(argv)
    for name in args.candidates:
        if name not in candidates and not Path(name).is_file():
            parser.error(f"--candidates: {name!r} is neither {', '.join(candidates)} nor a file")
    if args.quick:
        args.minutes, args.slice_seconds, args.eval_every, args.valid_pairs = 0.5, 10, 10, 300
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = choose_device()
    started = time.perf_counter()
    results: dict[str, list[Run]] = {}
    runs_home = (contextlib.nullcontext(args.keep_runs) if args.keep_runs
                 else tempfile.TemporaryDirectory())
    with runs_home as runs_dir:
        for name in args.datasets:
            directory, prepare_args = DATASETS[name]
            data_dir = Path(__file__).with_name("data") / directory
            if prepare_args is None and not (data_dir / "metadata.json").exists():
                sys.exit(f"{data_dir}: not prepared; see docs/data.md, 'A translation corpus'")
            data = load_data(data_dir, prepare_args)
            valid = data.splits["valid"][: args.valid_pairs]
            print(f"== {name}: {data}; scoring on {len(valid)} validation pairs", flush=True)
            runs = [tutorial_run(data, valid, device, args.seed) if c == TUTORIAL else
                    padless_run(c, data, valid, device, Path(runs_dir) / f"{name}-{i}", args.seed)
                    for i, c in enumerate(args.candidates)]
            race(runs, args)
            for run in runs:
                run.finish()
            results[name] = runs
    section = "bench_quality-" + "-".join(args.datasets)
    png = args.results.with_name(f"{section}.png")
    lines = [
        f"- {args.minutes:g} min of training per candidate in turns of {args.slice_seconds:g} s, "
        f"scored every {args.eval_every:g} s of its training on up to {args.valid_pairs} "
        "validation pairs (per-token loss, fp32). Curves: "
        f"[{png.name}]({png.name}).",
    ]
    for name, runs in results.items():
        how = (f"`padless prepare chitchat {DATASETS[name][1]}`" if DATASETS[name][1]
               else f"`benchmarks/data/{DATASETS[name][0]}`")
        lines += ["", f"Data `{name}` ({how}):", "",
                  *table(runs, args.minutes), "", *verdicts(name, runs)]
    publish(section, f"Validation loss against training time, {', '.join(args.datasets)} "
            "(`benchmarks/bench_quality.py`)", "bench_quality.py", argv,
            f" ({(time.perf_counter() - started) / 60:.0f} min).", lines,
            write=not args.quick, device=device,
            results=args.results)
    if args.quick:  # the plot is drawn, where it is not taken for a result
        png = Path(tempfile.gettempdir()) / "bench_quality-quick.png"
        print(f"smoke run: nothing written to {args.results}; curves in {png}")
    plot(results, png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
