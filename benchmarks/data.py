"""The prepared data the benchmarks train and decode on: :func:`load_data` prepares the
bundled chitchat corpus the first time."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from padless.data.dataset import PreparedData
from padless.runs.directory import RunDirectory
from padless.runs.info import read_run_info

# The tutorial's MIN_COUNT 3; its MAX_LENGTH 10 keeps only a fifth of chitchat's pairs, so
# 30 tokens (72% of the pairs) instead. The tutorial's own trimming is
# "--normalize tutorial --max-length 10 --min-count 3 --drop-unk-pairs".
PREPARE_ARGS = "--max-length 30 --min-count 3"


def load_data(data_dir: Path, prepare_args: str) -> PreparedData:
    """Load ``data_dir``, first preparing the bundled chitchat corpus there if it is empty."""
    if not (data_dir / "metadata.json").exists():
        command = [sys.executable, "-m", "padless", "prepare", "chitchat", "--out", str(data_dir)]
        command += prepare_args.split()
        print("preparing:", " ".join(command[1:]), flush=True)
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return PreparedData.load(data_dir)


def shown_path(path: Path) -> str:
    """``path`` relative to the working directory when it is inside it (for the report)."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def run_data_dir(run_dir: Path, data: Path | None = None) -> Path:
    """``data``, or else the prepared data ``run_dir`` was trained on (its ``run.json``)."""
    if data is not None:
        return data
    trained_on = read_run_info(RunDirectory(run_dir)).data_dir
    if not trained_on:
        raise SystemExit(f"{run_dir} does not say which data it was trained on: pass --data")
    return Path(trained_on)


def run_parser(doc: str) -> argparse.ArgumentParser:
    """The arguments of a benchmark on a trained run: ``RUN_DIR``, ``--data`` (default: the
    data it was trained on, :func:`run_data_dir`) and ``--no-write``; ``doc``'s first
    paragraph describes it."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--data", type=Path, help="prepared data (default: the run's own)")
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md")
    return parser
