"""int8 against float32 decoding of one trained run: BLEU, chrF and sentences per second.

The run's ``best`` checkpoint is loaded twice: as padless decodes it in float32 and with
``--quantize int8`` (:func:`padless.models.quantize.quantize`). Both translate the test split
of the run's own data (greedy and beam 5, batches of 64, the commands' search options), and
are scored with sacrebleu against the references (:func:`padless.decoding.evaluation.evaluate`).
Speed: the same decoding timed alternately, ``--rounds`` rounds, median sentences/s, at
batches of 64 and of 1 (the first ``--lone`` sentences, as ``padless chat`` decodes).

    python benchmarks/bench_int8.py RUN_DIR            # writes RESULTS.md
    python benchmarks/bench_int8.py RUN_DIR --no-write --rounds 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from results_file import publish

from padless.data.dataset import PreparedData
from padless.decoding.batched import decode_ids
from padless.decoding.evaluation import evaluate
from padless.decoding.options import SearchOptions
from padless.models.precision import for_decoding
from padless.runs.directory import RunDirectory
from padless.runs.info import read_run_info
from padless.runs.loading import load_model

SEARCHES = {"greedy": SearchOptions(), "beam 5": SearchOptions("beam", beam_size=5)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--data", type=Path, help="prepared data (default: the run's own)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lone", type=int, default=32, help="sentences decoded one at a time")
    parser.add_argument("--no-write", action="store_true")
    return parser.parse_args(argv)


def speed(
    model: torch.nn.Module, sources: list[list[int]], options: SearchOptions, batch_size: int
) -> float:
    started = time.perf_counter()
    decode_ids(model, sources, options, batch_size=batch_size)
    return len(sources) / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data_dir = args.data or read_run_info(RunDirectory(args.run_dir)).data_dir
    data = PreparedData.load(data_dir)
    # as the commands load them: one model for every batch size
    models: dict[tuple[str, int], torch.nn.Module] = {}
    for name, quantization in (("fp32", None), ("int8", "int8")):
        model, text, _ = load_model(args.run_dir, "best", "cpu")
        decoding = for_decoding(model, "fp32", quantization)
        models[name, 64] = models[name, 1] = decoding.model
        print(f"{name}: {decoding.describe()}", flush=True)
    test = data.splits["test"]
    sources = [source for source, _ in test]
    quality, rows = {}, []
    for search, options in SEARCHES.items():
        for name in ("fp32", "int8"):
            result = evaluate(models[name, 64], text, test, options, split="test")
            quality[name, search] = result
            print(f"{name} {search}: BLEU {result.bleu:.2f} chrF {result.chrf:.2f}", flush=True)
    rates: dict[tuple[str, str, int], list[float]] = {}
    for _ in range(args.rounds):
        for search, options in SEARCHES.items():
            for batch, chosen in ((64, sources), (1, sources[: args.lone])):
                for name in ("fp32", "int8"):
                    rates.setdefault((name, search, batch), []).append(
                        speed(models[name, batch], chosen, options, batch)
                    )
    for search in SEARCHES:
        fp32, int8 = quality["fp32", search], quality["int8", search]
        cells = []
        for batch in (64, 1):
            a = statistics.median(rates["fp32", search, batch])
            b = statistics.median(rates["int8", search, batch])
            cells.append(f"{a:.1f} / {b:.1f} ({b / a:.2f}x)")
        rows.append(
            f"| {search} | {fp32.bleu:.2f} / {int8.bleu:.2f} ({int8.bleu - fp32.bleu:+.2f})"
            f" | {fp32.chrf:.2f} / {int8.chrf:.2f} ({int8.chrf - fp32.chrf:+.2f}) | "
            f"{cells[0]} | {cells[1]} |"
        )
    publish("bench_int8", "int8 against float32 decoding (`bench_int8.py`)", "bench_int8.py",
            argv,
            f"; run {args.run_dir.name}, test split of {data_dir} ({len(test)} pairs), the "
            f"commands' search options; {models['int8', 64].quantized} at 64, "
            f"{models['int8', 1].quantized} at 1. Speed: median of {args.rounds} alternating "
            f"rounds, batches of 64 (the whole test split) and of 1 (its first {args.lone}).",
            ["| search | BLEU fp32 / int8 | chrF fp32 / int8 | sentences/s at 64, fp32 / int8 "
             "| sentences/s at 1, fp32 / int8 |", "|---|---|---|---|---|", *rows],
            write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
