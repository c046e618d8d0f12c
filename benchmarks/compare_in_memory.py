"""The token store against the in-memory path it replaced: the validation loss curves of the
same training runs, on one small dataset, with each code.

``--old`` is a checkout of padless before the token store (commit 3522009, the last one
that held the training pairs as Python lists and shuffled them with ``random``):

    git worktree add /tmp/padless-3522009 3522009
    python -m benchmarks.compare_in_memory --old /tmp/padless-3522009

The dataset is prepared once by the old code (a TSV-only dataset, which this checkout reads
from its TSVs, as it reads every dataset of earlier versions), so both train on the same
pairs and validate on the same split. Each code trains the ``chatbot`` config from seeds 0
and 1 (fp32, ``--steps`` steps, validating every ``--every``); the batches' order differs
between the codes (numpy's generator instead of Python's), so the question is whether the
curves agree within the spread that the seed alone gives.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

from benchmarks.results import publish

HERE = Path(__file__).parent
MAIN = HERE.parent
SEEDS = (0, 1)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", type=Path, required=True, help="checkout of commit 3522009")
    parser.add_argument("--work", type=Path, default=HERE / "runs" / "compare_in_memory")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--no-write", action="store_true")
    return parser.parse_args(argv)


def padless(code: Path, *args: str) -> None:
    """``python -m padless ARGS`` with the package of ``code``."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    subprocess.run([sys.executable, "-m", "padless", *args], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def valid_losses(run: Path) -> dict[int, float]:
    with open(run / "log.csv", newline="") as f:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(f)
                if r["kind"] == "valid"}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data = args.work / "data"
    if not (data / "metadata.json").exists():
        padless(args.old, "prepare", "chitchat", "--out", str(data), "--max-length", "10",
                "--min-count", "3")
    settings = [f"train.max_steps={args.steps}", f"train.valid_every={args.every}",
                "train.precision=fp32", "train.patience=null", "train.plateau_factor=null"]
    curves: dict[tuple[str, int], dict[int, float]] = {}
    for seed in SEEDS:
        for code, path in (("in memory (3522009)", args.old), ("token store (this checkout)",
                                                                MAIN)):
            run = args.work / f"run-{seed}-{'old' if path == args.old else 'new'}"
            sets = [x for s in [*settings, f"train.seed={seed}"] for x in ("--set", s)]
            shutil.rmtree(run, ignore_errors=True)
            padless(path, "train", "--data", str(data), "--out", str(run), "--config",
                    "chatbot", *sets)
            curves[code, seed] = valid_losses(run)
            print(code, seed, curves[code, seed], flush=True)
    steps = sorted(curves[next(iter(curves))])
    names = list(dict.fromkeys(code for code, _ in curves))
    header = " | ".join(f"{code}, seed {seed}" for code in names for seed in SEEDS)
    rows = [f"| step | {header} | between codes (same seed), largest | between seeds "
            "(same code), largest |", "|---:|" + "---:|" * (2 * len(names) + 2)]
    for step in steps:
        values = {key: curve[step] for key, curve in curves.items()}
        codes = max(abs(values[names[0], s] - values[names[1], s]) for s in SEEDS)
        seeds = max(abs(values[c, SEEDS[0]] - values[c, SEEDS[1]]) for c in names)
        cells = " | ".join(f"{values[c, s]:.4f}" for c in names for s in SEEDS)
        rows.append(f"| {step} | {cells} | {codes:.4f} | {seeds:.4f} |")
    pairs = sum(1 for _ in open(data / "train.tsv", encoding="utf-8"))
    publish("compare_in_memory",
            "The token store against the in-memory path (`compare_in_memory.py`)",
            "compare_in_memory.py", argv,
            f"; chitchat prepared by the old code (`--max-length 10 --min-count 3`, {pairs:,} "
            f"training pairs), config chatbot, fp32, {args.steps} steps, validation loss per "
            f"token every {args.every} steps.", rows, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
