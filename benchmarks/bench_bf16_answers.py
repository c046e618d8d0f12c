"""What decoding in bf16 does to a trained model's answers: BLEU, chrF, the share of answers
equal to float32's, and whether an answer changes with its batch.

The run's ``best`` checkpoint decodes its data's test split (greedy and beam 5, the commands'
search options) three ways: float32 weights, bf16 weights (what ``--precision bf16`` does),
and float32 weights under bf16 autocast; each at batches of 64 and of 1, whose answers are
compared. The quality is measured whether or not this CPU has native bf16: where it is
emulated the arithmetic is the same, only slower.

    python -m benchmarks.bench_bf16_answers RUN_DIR            # writes RESULTS.md
    python -m benchmarks.bench_bf16_answers RUN_DIR --limit 200 --no-write
"""

from __future__ import annotations

import argparse
import copy
import sys
from contextlib import nullcontext

import torch

from benchmarks.data import run_data_dir, run_parser
from benchmarks.results import publish
from padless.data.dataset import PreparedData
from padless.decoding.batched import decode_ids
from padless.decoding.metrics import text_scores
from padless.decoding.options import SearchOptions
from padless.runs.loading import load_model

SEARCHES = {"greedy": SearchOptions(), "beam 5": SearchOptions("beam", beam_size=5)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = run_parser(__doc__)
    parser.add_argument("--limit", type=int, help="decode only the first N test pairs")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data_dir = run_data_dir(args.run_dir, args.data)
    data = PreparedData.load(data_dir)
    model, text, _ = load_model(args.run_dir, "best", "cpu")
    test = list(data.splits["test"])[: args.limit]
    sources = [s for s, _ in test]
    references = [text.decode(t) for _, t in test]
    ways = {"fp32": (model, False), "bf16 weights": (copy.deepcopy(model).bfloat16(), False),
            "bf16 autocast": (model, True)}
    rows = []
    for search, options in SEARCHES.items():
        answers = {}
        for name, (decoder, autocast) in ways.items():
            for batch in (64, 1):
                context = (torch.autocast("cpu", dtype=torch.bfloat16) if autocast
                           else nullcontext())
                with context:
                    nbests = decode_ids(decoder, sources, options, batch_size=batch)
                answers[name, batch] = [nbest[0].tokens for nbest in nbests]
                print(f"{search} {name} at {batch}", flush=True)
        base = answers["fp32", 64]
        for name in ways:
            ours = answers[name, 64]
            bleu, chrf = text_scores([text.decode(a) for a in ours], references)
            same = sum(a == b for a, b in zip(ours, base, strict=True))
            alone = sum(a == b for a, b in zip(ours, answers[name, 1], strict=True))
            rows.append(f"| {search} | {name} | {bleu:.2f} | {chrf:.2f} | "
                        f"{same / len(test):.1%} | {alone / len(test):.1%} |")
    publish("bench_bf16_answers", "bf16 decoding against float32: the answers "
            "(`bench_bf16_answers.py`)", "bench_bf16_answers.py", argv,
            f"; run {args.run_dir.name}, the test split of {data_dir} ({len(test)} pairs), the "
            "commands' search options.",
            ["| search | precision | BLEU | chrF | answers equal to fp32's (batches of 64) | "
             "answers equal at batches of 64 and of 1 |", "|---|---|---|---|---|---|", *rows],
            write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
