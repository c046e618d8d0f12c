"""Where a Transformer decoding step spends its time: torch.profiler's top operators.

The bundled ``transformer`` config (random weights, the chitchat vocabulary of
bench_transformer) decodes validation sources greedily and with beam 5, in batches of 1 and
of 64, under ``torch.profiler``; the report lists each setting's top operators by their own
CPU time. ``--quantize int8`` profiles the int8 copy of the model instead, set up as
``translate --quantize int8`` sets it up. The section is ``profile_decoding-LABEL``, the label
being ``fp32`` or ``int8`` unless ``--label`` names another (to compare two checkouts, run
each with its own label into one RESULTS.md with ``--results``).

    python -m benchmarks.profile_decoding                   # section profile_decoding-fp32
    python -m benchmarks.profile_decoding --quantize int8   # section profile_decoding-int8
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.data import load_data
from benchmarks.results import publish
from padless.decoding.batched import decode_ids
from padless.decoding.options import SearchOptions
from padless.models import build_model
from padless.models.quantize import QUANTIZATIONS, quantize
from padless.training.config import load_config

HERE = Path(__file__).parent
SEARCHES = {
    "greedy": SearchOptions(max_length=20),
    "beam 5": SearchOptions(method="beam", beam_size=5, max_length=20),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", help="the section is profile_decoding-LABEL "
                        "(default: fp32, or the quantization)")
    parser.add_argument("--data", type=Path, default=HERE / "data" / "chitchat-max30")
    parser.add_argument("--top", type=int, default=6, help="operators listed per setting")
    parser.add_argument("--quantize", choices=QUANTIZATIONS, help="profile this int8 copy")
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    args.label = args.label or args.quantize or "fp32"
    return args


def top_operators(model: torch.nn.Module, sources: list[list[int]], options: SearchOptions,
                  batch_size: int, top: int) -> tuple[float, list[str]]:
    """Sentences/s of one decoding (after a warm-up), and its top operators' table rows."""
    decode_ids(model, sources, options, batch_size=batch_size)
    started = time.perf_counter()
    decode_ids(model, sources, options, batch_size=batch_size)
    rate = len(sources) / (time.perf_counter() - started)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        decode_ids(model, sources, options, batch_size=batch_size)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    rows = [f"{e.key} {100 * e.self_cpu_time_total / total:.0f}% ({e.count} calls)"
            for e in events[:top]]
    return rate, rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data = load_data(args.data, "--max-length 30 --min-count 3")
    torch.manual_seed(0)
    model = build_model(load_config("transformer").model, len(data.vocab)).eval()
    valid = [source for source, _ in data.splits["valid"]]
    lines = ["| search, batch | sentences/s | top operators by own CPU time |", "|---|---:|---|"]
    for search, options in SEARCHES.items():
        for batch, sources in ((1, valid[:16]), (64, valid[:128])):
            decoder = quantize(model, args.quantize, rows=batch) if args.quantize else model
            engine = f", {decoder.quantized}" if args.quantize else ""
            rate, rows = top_operators(decoder, sources, options, batch, args.top)
            lines.append(f"| {search}, {batch}{engine} | {rate:.1f} | {'; '.join(rows)} |")
            print(lines[-1], flush=True)
    publish(f"profile_decoding-{args.label}",
            f"Transformer decoding profile, {args.label} (`profile_decoding.py`)",
            "profile_decoding.py", argv,
            f"; `transformer` config, random weights, at most 20 tokens, "
            f"{args.quantize or 'fp32'}.", lines, write=not args.no_write, results=args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
