"""int8 against float32 decoding of one trained run: BLEU, chrF, sentences per second, and
whether an answer depends on its batch.

The run's ``best`` checkpoint is loaded three times: as padless decodes it in float32, with
``--quantize int8`` (:func:`padless.models.quantize.quantize`: activations quantized per
row), and as PyTorch's ``quantize_dynamic`` quantizes it (activations quantized over the
whole batch tensor: what padless did before 2026-12-06). Each translates the test split of
the run's own data (greedy and beam 5, batches of 64, the commands' search options), scored
with sacrebleu against the references (:func:`padless.decoding.evaluation.evaluate`), and
its first ``--lone`` sentences again one at a time: how many answers differ. Speed: the
same decoding timed alternately, ``--rounds`` rounds, median sentences/s, at batches of 64
and of 1 (the first ``--lone`` sentences, as ``padless chat`` decodes).

    python -m benchmarks.bench_int8 RUN_DIR            # writes RESULTS.md
    python -m benchmarks.bench_int8 RUN_DIR --no-write --rounds 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import warnings
from functools import partial

import torch

from benchmarks.data import run_data_dir, run_parser
from benchmarks.results import publish
from padless.data.dataset import PreparedData
from padless.decoding.batched import decode_ids
from padless.decoding.evaluation import evaluate
from padless.decoding.options import SearchOptions
from padless.models.decoding_setup import for_decoding
from padless.runs.loading import load_model
from padless.runtime.timing import alternating_times

SEARCHES = {"greedy": SearchOptions(), "beam 5": SearchOptions("beam", beam_size=5)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = run_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lone", type=int, default=256,
                        help="sentences decoded one at a time")
    return parser.parse_args(argv)


def per_batch(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` as ``torch.ao.quantization.quantize_dynamic`` quantizes it (FBGEMM), as
    padless's ``--quantize int8`` did before 2026-12-06."""
    from torch.ao.quantization import quantize_dynamic

    torch.backends.quantized.engine = "fbgemm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its notice that torchao succeeds it
        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data_dir = run_data_dir(args.run_dir, args.data)
    data = PreparedData.load(data_dir)
    models: dict[str, torch.nn.Module] = {}  # as the commands load them
    for name, quantization in (("fp32", None), ("int8", "int8")):
        model, text, _ = load_model(args.run_dir, "best", "cpu")
        decoding = for_decoding(model, "fp32", quantization)
        models[name] = decoding.model
        print(f"{name}: {decoding.describe()}", flush=True)
    models["per-batch"] = per_batch(load_model(args.run_dir, "best", "cpu")[0].eval())
    names = list(models)
    test = data.splits["test"]
    sources = [source for source, _ in test]
    lone = sources[: args.lone]
    quality, changed = {}, {}
    for search, options in SEARCHES.items():
        for name in names:
            result = evaluate(models[name], text, test, options, split="test")
            quality[name, search] = result
            batched = [n[0].tokens for n in decode_ids(models[name], lone, options,
                                                        batch_size=64)]
            alone = [n[0].tokens for n in decode_ids(models[name], lone, options,
                                                      batch_size=1)]
            changed[name, search] = sum(a != b for a, b in zip(batched, alone, strict=True))
            print(f"{name} {search}: BLEU {result.bleu:.2f} chrF {result.chrf:.2f}, "
                  f"{changed[name, search]} of {len(lone)} answers differ alone", flush=True)
    jobs = {(name, search, batch): partial(decode_ids, models[name], chosen, options,
                                           batch_size=batch)
            for search, options in SEARCHES.items() for batch, chosen in ((64, sources), (1, lone))
            for name in names}
    times = alternating_times(jobs, rounds=args.rounds, warmup=0)
    rates = {key: [len(sources if key[2] == 64 else lone) / t for t in spent]
             for key, spent in times.items()}
    rows = []
    for search in SEARCHES:
        for name in names:
            result, fp32 = quality[name, search], quality["fp32", search]
            cells = []
            for b in (64, 1):
                rate = statistics.median(rates[name, search, b])
                base = statistics.median(rates["fp32", search, b])
                cells.append(f"{rate:.1f} ({rate / base:.2f}x)")
            rows.append(f"| {search} | {name} | {result.bleu:.2f} ({result.bleu - fp32.bleu:+.2f})"
                        f" | {result.chrf:.2f} ({result.chrf - fp32.chrf:+.2f}) | {cells[0]} | "
                        f"{cells[1]} | {changed[name, search]} of {len(lone)} |")
    publish("bench_int8", "int8 against float32 decoding (`bench_int8.py`)", "bench_int8.py",
            argv,
            f"; run {args.run_dir.name}, test split of {data_dir} ({len(test)} pairs), the "
            f"commands' search options; int8 is {models['int8'].quantized}, per-batch is "
            "quantize_dynamic (FBGEMM), padless's int8 before 2026-12-06. Speed: median of "
            f"{args.rounds} alternating rounds, batches of 64 (the whole test split) and of 1 "
            f"(its first {args.lone}); 'alone' counts those {args.lone} answers that differ "
            "decoded one at a time from decoded in batches of 64.",
            ["| search | model | BLEU (vs fp32) | chrF (vs fp32) | sentences/s at 64 (vs fp32) "
             "| sentences/s at 1 (vs fp32) | answers that differ alone |",
             "|---|---|---|---|---|---|---|", *rows],
            write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
