"""The output layer's weight layout for decoding (:mod:`padless.models.layout`): greedy and
beam-5 sentences/s with the weight row-major (``nn.Linear``'s own) and column-major, for the
``transformer`` config and the GRU of the same size (``bench_transformer.gru_like``), at
batches of 1 and 64, and what :func:`~padless.models.layout.lay_out_output` chooses here.

Random weights (both decode about ``--max-length`` steps: the figures compare the cost of a
step), fp32, the first validation sources of ``chitchat-max30``; the two layouts are two
copies of one model, timed alternately, medians over ``--rounds``.

    python -m benchmarks.bench_layout             # writes its RESULTS.md section
    python -m benchmarks.bench_layout --rounds 1 --no-write
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
from functools import partial
from pathlib import Path

import torch
from torch import nn

from benchmarks.data import load_data
from benchmarks.models import gru_like
from benchmarks.results import publish
from padless.decoding.batched import decode_ids
from padless.decoding.options import SearchOptions
from padless.models import build_model
from padless.models.layout import column_major, lay_out_output
from padless.runtime.timing import alternating_times
from padless.training.config import load_config

HERE = Path(__file__).parent
SEARCHES = {"greedy": "greedy", "beam 5": "beam"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=HERE / "data" / "chitchat-max30")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sentences", type=int, default=64, help="sentences decoded at 64")
    parser.add_argument("--lone", type=int, default=16, help="sentences decoded one at a time")
    parser.add_argument("--max-length", type=int, default=20)
    parser.add_argument("--no-write", action="store_true")
    return parser.parse_args(argv)


def with_column_major_output(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose output weight is stored column-major (untied)."""
    other = copy.deepcopy(model)
    other.output.weight = nn.Parameter(column_major(other.output.weight))
    return other


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data = load_data(args.data, "--max-length 30 --min-count 3")
    torch.manual_seed(0)
    transformer = build_model(load_config("transformer").model, len(data.vocab)).eval()
    gru = gru_like(sum(p.numel() for p in transformer.parameters()), len(data.vocab)).eval()
    sources = [s for s, _ in data.splits["valid"][: args.sentences]]
    rows = ["| model | search | batch | row-major sentences/s | column-major | speed-up |",
            "|---|---|---:|---:|---:|---:|"]
    chosen = []
    for name, model in (("Transformer", transformer), ("GRU", gru)):
        layouts = {"row-major": model, "column-major": with_column_major_output(model)}
        for batch, chosen_sources in ((1, sources[: args.lone]), (64, sources)):
            decision = lay_out_output(copy.deepcopy(model), batch)
            gains = ", ".join(f"{r:.2f}x at {n}" for n, r in decision.speedups.items())
            chosen.append(f"{name} at {batch}: {decision.name} (column-major {gains})")
            for search, method in SEARCHES.items():
                options = SearchOptions(method, beam_size=5, max_length=args.max_length)
                times = alternating_times(
                    {k: partial(decode_ids, candidate, chosen_sources, options, batch_size=batch)
                     for k, candidate in layouts.items()}, rounds=args.rounds)
                rates = {k: [len(chosen_sources) / t for t in spent] for k, spent in times.items()}
                a, b = (statistics.median(rates[k]) for k in layouts)
                rows.append(f"| {name} | {search} | {batch} | {a:.1f} | {b:.1f} | {b / a:.2f}x |")
                print(rows[-1], flush=True)
    publish("bench_layout", "Output layer layout for decoding (`bench_layout.py`)",
            "bench_layout.py", argv,
            f"; random weights, fp32, vocabulary {len(data.vocab)}, at most {args.max_length} "
            f"tokens; {len(sources)} validation sources at 64, {args.lone} at 1; median of "
            f"{args.rounds} alternating rounds.",
            [f"- `lay_out_output` chose: {'; '.join(chosen)}.", "", *rows],
            write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
