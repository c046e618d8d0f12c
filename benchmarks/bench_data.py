"""Corpora of 200k to 10M pairs: prepare's time and memory, and a training run's start-up.

The corpus is made here: pairs whose sides join the first half of one real sentence of the
bundled chitchat corpus to the second half of another (seeded), so words and lengths are
realistic and no pair repeats. For each size N:

- ``padless prepare X.tsv --format tsv --max-length 60 --min-count 2`` (its workers: one
  per core): wall time and peak memory, the RSS of the process and its workers summed;
- a training run's start-up, what every ``padless train`` (and every torchrun process) does
  before its first step: ``PreparedData.load`` (the token store mapped and checked) and the
  first batch of ``run_batches``, in a fresh process: seconds, peak RSS, and anonymous
  memory (RssAnon; the mapped store's pages are the page cache's, shared between processes,
  and counted apart as RssFile). Sizes above ``--prepare-up-to`` get a store written
  directly (``padless.data.store.write_token_split``, the vocabulary of the largest
  prepared size), for a machine without the disk or the time for prepare.

    python -m benchmarks.bench_data                      # 200k, 1M, 10M; writes RESULTS.md
    python -m benchmarks.bench_data --sizes 20000 --no-write
    python -m benchmarks.bench_data --torchrun benchmarks/runs/bench_data/data-200000
    python -m benchmarks.bench_data --torchrun benchmarks/runs/bench_data/data-10000000 \
        --models small --no-write

The last two compare the memory of one and two ``torchrun`` training processes on one
dataset (PSS, which divides the shared pages of the mapped store between them), for the
chatbot model and one of hidden 64 (``--models``), where the store is most of a process.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.results import publish
from padless.data.dataset import PreparedData
from padless.data.parallel import default_workers
from padless.data.readers import ReadStats, read_corpus
from padless.data.store import write_token_split
from padless.data.text import normalize_default

HERE = Path(__file__).parent
MAX_LENGTH = 60  # prepare's --max-length, and the cap of a store written directly
# the models the torchrun comparison trains: the chatbot config's, and one small enough that
# the dataset is most of a process's memory (what the store's sharing is about)
TORCHRUN_MODELS = {
    "chatbot": ("chatbot (hidden 512)", []),
    "small": ("chatbot, hidden 64",
              ["--set", "model.hidden_size=64", "--set", "model.embedding_size=64"]),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="200000,1000000,10000000")
    parser.add_argument("--prepare-up-to", type=int, default=10_000_000,
                        help="largest size given to padless prepare (the rest: written directly)")
    parser.add_argument("--work", type=Path, default=HERE / "runs" / "bench_data")
    parser.add_argument("--torchrun", type=Path, metavar="DATA_DIR",
                        help="instead: compare the memory of 1 and 2 torchrun training "
                             "processes on this prepared dataset")
    parser.add_argument("--steps", type=int, default=20, help="training steps (--torchrun)")
    parser.add_argument("--models", default=",".join(TORCHRUN_MODELS),
                        help="models trained (--torchrun): " + ", ".join(
                            f"{k}: {v[0]}" for k, v in TORCHRUN_MODELS.items()))
    parser.add_argument("--no-write", action="store_true")
    return parser.parse_args(argv)


def sentences() -> list[list[str]]:
    """The bundled corpus' normalised sides, as words (the halves are cut from these)."""
    sides = []
    for source, target in read_corpus(["chitchat"], "chitchat", ReadStats()):
        for side in (source, target):
            words = normalize_default(side).split()
            if len(words) >= 2:
                sides.append(words)
    return sides


def mixed_pairs(sides: list[list[str]], n: int, seed: int = 0):
    """``n`` (source, target) texts, each side the first half of one sentence and the second
    half of another."""
    rng = random.Random(seed)

    def side() -> str:
        a, b = rng.choice(sides), rng.choice(sides)
        return " ".join(a[: len(a) // 2] + b[len(b) // 2 :])

    for _ in range(n):
        yield side(), side()


def measured(argv: list[str], field: str = "VmRSS", skip: int = 0) -> tuple[float, float]:
    """Wall seconds and the peak of ``field`` (MB; VmRSS, or Pss: shared pages divided
    between the processes that map them) summed over a command and its worker processes
    but the first ``skip`` (sampled every 0.1 s), run from a process of its own."""
    out = subprocess.run([sys.executable, "-m", "benchmarks.peak_memory", field, str(skip), *argv],
                         capture_output=True, text=True, check=True).stdout.split()
    if out[2] != "0":
        raise SystemExit(f"bench_data: {' '.join(argv)} failed")
    return float(out[0]), int(out[1]) / 1024


def startup(data: Path) -> dict:
    out = subprocess.run([sys.executable, "-m", "benchmarks.data_startup", str(data)],
                         capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out)


def torchrun_memory(data: Path, work: Path, steps: int, models: list[str]) -> list[str]:
    """Rows of a table: ``torchrun --nproc_per_node K -m padless train`` (config chatbot,
    ``steps`` steps, the ``models`` of :data:`TORCHRUN_MODELS`) on ``data`` for K = 1 and 2,
    with the peak PSS of its training processes summed (the launcher left out)."""
    rows = []
    for model, settings in (TORCHRUN_MODELS[name] for name in models):
        first = None
        for k in (1, 2):
            out = work / f"ddp-{k}"
            shutil.rmtree(out, ignore_errors=True)
            seconds, pss = measured([sys.executable, "-m", "torch.distributed.run",
                                     "--standalone", f"--nproc_per_node={k}", "-m", "padless",
                                     "train", "--data", str(data), "--out", str(out),
                                     "--max-steps", str(steps), *settings],
                                    field="Pss", skip=1)
            first = first or pss
            rows.append(f"| {model} | {k} | {seconds:.0f} s | {pss:,.0f} MB | "
                        f"{pss / first:.2f}x |")
            print(rows[-1], flush=True)
            shutil.rmtree(out)
    return rows


def write_direct(pairs, reference: Path, out: Path) -> None:
    """A dataset whose training split is ``pairs`` (those within :data:`MAX_LENGTH` tokens, as
    prepare keeps), encoded with ``reference``'s vocabulary (valid and test copied from it),
    written without prepare."""
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(reference, out, ignore=shutil.ignore_patterns("train.*"))
    vocab = PreparedData.load(reference).vocab
    sides = ((s.split(), t.split()) for s, t in pairs)
    ids = ((vocab.encode(s), vocab.encode(t)) for s, t in sides  # prepare's length cap
           if max(len(s), len(t)) <= MAX_LENGTH)
    metadata = json.loads((out / "metadata.json").read_text())
    metadata["store"]["train"] = write_token_split(out, "train", ids, len(vocab))
    (out / "metadata.json").write_text(json.dumps(metadata))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.torchrun:
        return main_torchrun(args, argv)
    sizes = [int(n) for n in args.sizes.split(",")]
    args.work.mkdir(parents=True, exist_ok=True)
    sides = sentences()
    rows, reference = [], None
    for n in sizes:
        data = args.work / f"data-{n}"
        prepare_cell = "not run (--prepare-up-to)"
        if n <= args.prepare_up_to:
            corpus = args.work / f"mixed-{n}.tsv"
            with corpus.open("w", encoding="utf-8") as f:
                for source, target in mixed_pairs(sides, n):
                    f.write(f"{source}\t{target}\n")
            seconds, peak = measured([sys.executable, "-m", "padless", "prepare", str(corpus),
                                      "--format", "tsv", "--max-length", str(MAX_LENGTH),
                                      "--min-count", "2", "--out", str(data)])
            prepare_cell = f"{seconds:.1f} s, {n / seconds:,.0f} pairs/s, peak {peak:,.0f} MB"
            reference = data
            corpus.unlink()
        else:
            if reference is None:
                raise SystemExit("bench_data: prepare at least one size first (--prepare-up-to)")
            started = time.perf_counter()
            write_direct(mixed_pairs(sides, n), reference, data)
            prepare_cell += f"; store written directly in {time.perf_counter() - started:.0f} s"
        start = startup(data)
        rows.append(f"| {n:,} | {prepare_cell} | {start['seconds']:.2f} s | "
                    f"{start['VmHWM']:,.0f} MB | {start['RssAnon']:,.0f} MB | "
                    f"{start['RssFile']:,.0f} MB |")
        print(rows[-1], flush=True)
    return report(args, argv, "bench_data", "Corpora of 200k to 10M pairs (`bench_data.py`)",
                  "; pairs of mixed halves of chitchat sentences; start-up = PreparedData.load "
                  "+ the first training batch (max_tokens 4096), in a fresh process.", [
        f"| pairs | padless prepare ({default_workers()} workers) | start-up | peak RSS | "
        "RssAnon | RssFile (mapped store) |",
        "|---:|---|---:|---:|---:|---:|",
        *rows,
    ])


def main_torchrun(args: argparse.Namespace, argv: list[str] | None) -> int:
    pairs = len(PreparedData.load(args.torchrun).splits["train"])
    rows = torchrun_memory(args.torchrun, args.work, args.steps, args.models.split(","))
    return report(args, argv, "bench_data_torchrun",
                  "Training processes sharing one token store (`bench_data.py --torchrun`)",
                  ": `torchrun --nproc_per_node K -m padless train` (config chatbot and a "
                  f"small variant, {args.steps} steps, gloo) on a dataset of {pairs:,} "
                  "training pairs; the "
                  "peak PSS of the training processes together (PSS divides a shared page "
                  "between the processes that map it: the store's pages, torch's libraries; "
                  "torchrun's launcher left out).", [
        "| model | processes | wall | peak PSS, all processes | vs one |",
        "|---|---:|---:|---:|---:|",
        *rows,
    ])


def report(args: argparse.Namespace, argv: list[str] | None, section: str, title: str,
           what: str, table: list[str]) -> int:
    """The section (:func:`benchmarks.results.publish`), written unless ``--no-write``."""
    publish(section, title, "bench_data.py", argv, what, table, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
