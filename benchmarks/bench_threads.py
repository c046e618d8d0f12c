"""Training speed on an idle machine and beside one competing CPU-bound process, per
thread setting: does ``padless`` keep its speed when another program uses a core?

Each measurement is a fresh worker process (OpenMP reads its settings when torch loads, so
a setting cannot change inside one process) that trains the default ``chatbot`` config with
:class:`padless.training.trainer.Trainer` for ``--seconds`` and reports real target tokens
per second of training steps. "Loaded" runs start the benchmark's own competitor first: one
Python busy loop (one core's worth of CPU), bounded in time and stopped after the run.
Settings and conditions alternate within each round, the order rotating between rounds;
figures are medians over ``--rounds``.

Settings: torch's default (one thread per core; libgomp spins ~300k iterations in every
wait), ``OMP_WAIT_POLICY=PASSIVE``, a short spin (``GOMP_SPINCOUNT=10000``), one thread, and
``padless``: what the ``padless`` command does (:mod:`padless.runtime.threads`: torch's own
settings when every core is free at start, else passive waiting, with one thread per free
core when some are free).

    python -m benchmarks.bench_threads                  # ~20 min; writes RESULTS.md
    python -m benchmarks.bench_threads --quick          # smoke run, nothing written
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.results import publish  # imports torch only when called

# No torch import at module level: the worker must set up OpenMP before torch loads.

SETTINGS: dict[str, dict[str, str]] = {
    "torch default": {},
    "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "GOMP_SPINCOUNT=10000": {"GOMP_SPINCOUNT": "10000"},
    "1 thread": {"OMP_NUM_THREADS": "1"},
    "padless": {},  # the worker calls padless.runtime.threads.configure_threads()
}
OPENMP_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")
BUSY_LOOP = ("import sys, time\nend = time.time() + float(sys.argv[1])\n"
             "while time.time() < end: pass\n")
TUTORIAL_PREPARE = "--normalize tutorial --max-length 10 --min-count 3 --drop-unk-pairs"
WARMUP_STEPS = 3


def worker(setting: str, data_dir: Path, seconds: float) -> None:
    """Train for ``seconds`` in this process and print ``{"tokens_per_s", "steps",
    "threads"}`` as JSON (the parent set the environment of the other settings)."""
    if setting == "padless":
        from padless.runtime.threads import configure_threads

        decided = configure_threads()
        assert "already" not in decided, decided
    import tempfile

    import torch

    from padless.data.dataset import PreparedData
    from padless.runs.directory import RunDirectory
    from padless.training.config import load_config
    from padless.training.distributed import World
    from padless.training.trainer import Trainer

    data = PreparedData.load(data_dir)
    config = load_config("chatbot", ["train.valid_every=1000000", "train.log_every=1000000",
                                     "train.keep_best=0", "train.keep_last=0"])
    world = World(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(config, data.text, data.splits, RunDirectory(run_dir), world,
                          progress=False)
        for _ in range(WARMUP_STEPS):
            trainer.train_step()
        trainer.window.tokens, trainer.window.time, steps = 0, 0.0, 0
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            trainer.train_step()
            steps += 1
        speed = trainer.window.tokens / trainer.window.time
    print(json.dumps({"tokens_per_s": speed, "steps": steps,
                      "threads": torch.get_num_threads()}))


def measure(setting: str, loaded: bool, args: argparse.Namespace) -> dict[str, float]:
    """One worker run of ``setting``, beside a competitor if ``loaded``."""
    env = {k: v for k, v in os.environ.items() if k not in OPENMP_VARIABLES}
    env.update(SETTINGS[setting])
    competitor = None
    if loaded:
        bound = args.seconds + 120  # ends by itself even if this process dies
        competitor = subprocess.Popen([sys.executable, "-c", BUSY_LOOP, str(bound)])
        time.sleep(1.0)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.bench_threads", "--worker", setting,
             "--data", str(args.data), "--seconds", str(args.seconds)],
            env=env, capture_output=True, text=True, check=False,
        )
    finally:
        if competitor is not None:
            competitor.kill()
            competitor.wait()
    if done.returncode != 0:
        raise RuntimeError(f"worker {setting!r} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def prepare_data(data_dir: Path) -> None:
    if not (data_dir / "metadata.json").exists():
        command = [sys.executable, "-m", "padless", "prepare", "chitchat", "--out", str(data_dir),
                   *TUTORIAL_PREPARE.split()]
        print("preparing:", shlex.join(command[1:]), flush=True)
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def report(results: dict[tuple[str, bool], list[float]], threads: dict[tuple[str, bool], int],
           args: argparse.Namespace) -> list[str]:
    """The RESULTS.md section's body: what was run, a table and the goals' verdicts."""
    def median(setting: str, loaded: bool) -> float:
        return statistics.median(results[setting, loaded])

    base = median("torch default", False)
    rows = ["| setting | threads idle / loaded | idle tokens/s | loaded tokens/s | loaded / idle "
            "| idle vs torch default |", "|---|---:|---:|---:|---:|---:|"]
    for setting in args.settings:
        idle, busy = median(setting, False), median(setting, True)
        rows.append(f"| {setting} | {threads[setting, False]} / {threads[setting, True]} "
                    f"| {idle:,.0f} | {busy:,.0f} "
                    f"| {100 * busy / idle:.0f} % | {100 * (idle / base - 1):+.1f} % |")
    idle, busy = median("padless", False), median("padless", True)
    kept, lost = busy / idle, 1 - idle / base
    return [
        f"- Work: the `chatbot` config training on `{args.data}` (the tutorial's trimming) "
        f"for {args.seconds:g} s per run after {WARMUP_STEPS} warm-up steps, a fresh process "
        f"per run; loaded = beside one Python busy loop; medians of {args.rounds} rounds.",
        "",
        *rows,
        "",
        f"Goals for `padless`: loaded at least 60 % of idle: "
        f"**{'met' if kept >= 0.6 else 'missed'}** ({100 * kept:.0f} %); idle loses at most "
        f"5 % against torch's default: **{'met' if lost <= 0.05 else 'missed'}** "
        f"({100 * -lost:+.1f} % against it).",
    ]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path,
                        default=Path(__file__).with_name("data") / "chitchat-tutorial",
                        help="prepared data (the tutorial's trimming, prepared if missing)")
    parser.add_argument("--seconds", type=float, default=30.0, help="training per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS),
                        metavar="SETTING", help=f"subset of: {', '.join(SETTINGS)}")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 6 s per run, one round, nothing written")
    parser.add_argument("--results", type=Path,
                        default=Path(__file__).with_name("RESULTS.md"))
    parser.add_argument("--worker", metavar="SETTING", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds = 6.0, 1
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.worker is not None:
        worker(args.worker, args.data, args.seconds)
        return 0
    prepare_data(args.data)
    for required in ("torch default", "padless"):
        if required not in args.settings:
            args.settings.append(required)
    results: dict[tuple[str, bool], list[float]] = {}
    threads: dict[tuple[str, bool], int] = {}
    runs = [(s, loaded) for s in args.settings for loaded in (False, True)]
    for round_index in range(args.rounds):
        shift = round_index % len(runs)
        for setting, loaded in runs[shift:] + runs[:shift]:
            result = measure(setting, loaded, args)
            results.setdefault((setting, loaded), []).append(result["tokens_per_s"])
            threads[setting, loaded] = result["threads"]
            print(f"round {round_index + 1}: {setting:>24} {'loaded' if loaded else 'idle':>6} "
                  f"{result['tokens_per_s']:8,.0f} tokens/s ({result['steps']} steps)",
                  flush=True)
    publish("bench_threads", "Threads on a busy machine (`benchmarks/bench_threads.py`)",
            "bench_threads.py", argv, ".", report(results, threads, args),
            write=not args.quick, results=args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
