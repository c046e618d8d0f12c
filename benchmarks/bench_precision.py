"""Training speed per precision: does ``precision: auto`` pick the faster one on this machine?

For each bundled config (``chatbot``, ``transformer``) one :class:`padless.training.trainer.Trainer`
per precision (``fp32``, ``bf16``, ``auto``) trains on the quickstart's data (chitchat,
``--min-count 3 --max-length 20``); candidates alternate round by round, each training for
``--seconds`` per round, and the figure is the median of real target tokens per second of
training steps. Also timed: what ``auto`` costs at start (:func:`choose_precision`).

``--emulate-avx2`` runs the same in a child process with ``ONEDNN_MAX_CPU_ISA=AVX2`` and
``ATEN_CPU_CAPABILITY=avx2``: torch then runs as on a CPU without native bf16 (bf16 matmuls
emulated), whatever this CPU has.

    python -m benchmarks.bench_precision                 # writes RESULTS.md
    python -m benchmarks.bench_precision --emulate-avx2  # as on an AVX2-only CPU
    python -m benchmarks.bench_precision --device cuda --seconds 10 --rounds 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.machine import choose_device
from benchmarks.results import publish
from padless.commands.quickstart import PREPARE_OPTIONS
from padless.data.dataset import PreparedData
from padless.data.prepare import prepare
from padless.runs.directory import RunDirectory
from padless.runtime.precision import choose_precision
from padless.training.config import load_config
from padless.training.distributed import World
from padless.training.trainer import Trainer

HERE = Path(__file__).parent
QUIET = ["train.valid_every=1000000", "train.log_every=1000000", "train.keep_best=0",
         "train.keep_last=0"]
WARMUP_STEPS = 2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=HERE / "data" / "quickstart")
    parser.add_argument("--configs", nargs="+", default=["chatbot", "transformer"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "auto"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seconds", type=float, default=20.0, help="per candidate and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--emulate-avx2", action="store_true",
                        help="run as on a CPU without native bf16 (a child process)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    return parser.parse_args(argv)


def _trainer(name: str, precision: str, data: PreparedData, device: torch.device,
             run_dir: Path) -> Trainer:
    config = load_config(name, [*QUIET, f"train.precision={precision}",
                                f"train.device={device}"])
    world = World(rank=0, world_size=1, local_rank=0, device=device)
    trainer = Trainer(config, data.text, data.splits, RunDirectory(run_dir / f"{name}-{precision}"),
                      world, progress=False)
    for _ in range(WARMUP_STEPS):
        trainer.train_step()
    return trainer


def _speed(trainer: Trainer, seconds: float) -> float:
    """Real target tokens per second of training steps over about ``seconds``."""
    trainer.window.tokens, trainer.window.time = 0, 0.0
    started = time.monotonic()
    while True:
        trainer.train_step()
        if time.monotonic() - started >= seconds:
            break
    return trainer.window.tokens / trainer.window.time


def measure(args: argparse.Namespace, data: PreparedData, device: torch.device) -> list[str]:
    """The table's rows, one per config."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs:
            trainers = {p: _trainer(name, p, data, device, Path(tmp)) for p in args.precisions}
            speeds: dict[str, list[float]] = {p: [] for p in trainers}
            for _ in range(args.rounds):
                for precision, trainer in trainers.items():
                    speeds[precision].append(_speed(trainer, args.seconds))
            median = {p: statistics.median(v) for p, v in speeds.items()}
            chosen = trainers["auto"].precision if "auto" in trainers else None
            fixed = [median[p] for p in median if p != "auto"]
            ratio = (f"{median['auto'] / max(fixed):.2f}x" if chosen and fixed else "-")
            cells = " | ".join(f"{median[p]:,.0f}" for p in args.precisions)
            rows.append(f"| {name} | {cells} | {chosen.name if chosen else '-'} | {ratio} | "
                        f"{chosen.reason if chosen else '-'} |")
            print(rows[-1], flush=True)
            del trainers
    return rows


def choice_cost(device: torch.device) -> str:
    """Wall time of ``choose_precision("auto")`` for each config's training workload."""
    costs = []
    for name in ("chatbot", "transformer"):
        config = load_config(name)
        workload = config.model.workload(config.train.max_tokens or 512, training=True)
        started = time.perf_counter()
        choose_precision("auto", device, workload)
        costs.append(f"{name} {time.perf_counter() - started:.2f} s")
    return ", ".join(costs)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.emulate_avx2 and "ONEDNN_MAX_CPU_ISA" not in os.environ:
        env = dict(os.environ, ONEDNN_MAX_CPU_ISA="AVX2", ATEN_CPU_CAPABILITY="avx2")
        child = list(argv if argv is not None else sys.argv[1:])
        return subprocess.run([sys.executable, "-m", "benchmarks.bench_precision", *child],
                              env=env).returncode
    device = choose_device(args.device)
    if not (args.data / "metadata.json").exists():
        prepare(["chitchat"], args.data, PREPARE_OPTIONS)
    data = PreparedData.load(args.data)
    cost = f"- Cost of choosing (auto, both configs): {choice_cost(device)}."
    print(cost, flush=True)
    table = [f"| config | {' | '.join(f'{p} tok/s' for p in args.precisions)} | auto chose | "
             "auto / best fixed | why |",
             "|---" * (len(args.precisions) + 4) + "|"]
    table += measure(args, data, device)
    emulated = "ONEDNN_MAX_CPU_ISA" in os.environ
    title = ("Precision on a CPU without native bf16 (`bench_precision.py --emulate-avx2`)"
             if emulated else f"Precision per device (`bench_precision.py`, {device.type})")
    name = "bench_precision" + ("-avx2" if emulated else f"-{device.type}")
    publish(name, title, "bench_precision.py", argv,
            f"; {args.rounds} rounds of {args.seconds:g} s per candidate, alternating; median "
            "real target tokens/s of training steps.", [cost, "", *table],
            write=not args.no_write, device=device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
