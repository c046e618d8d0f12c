"""Training speed and quality: the PyTorch chatbot tutorial's algorithm vs padless.

Candidates, all the tutorial's model size (hidden 500, 2 layers, dot attention, dropout 0.1,
batch 64 pairs, Adam lr 1e-4 with the decoder's lr x5, gradient clipping at 50, teacher forcing
1.0), on the same prepared data:

- ``tutorial``: the tutorial's algorithm, written here from its description: random batches
  (with replacement), sources with EOS sorted by length for packing, a Python loop over target
  steps calling the decoder one step at a time, ``softmax`` then ``log``, the per-step
  ``maskNLLLoss`` (a per-step mean) summed over steps, unmasked attention, the decoder started
  from ``encoder_hidden[:n_layers]``, two optimisers that both update the shared embedding.
- ``padless-fp32`` / ``padless-bf16``: ``Seq2Seq.loss`` (one decoder call over the whole
  target, masked attention, only real tokens projected) on length-bucketed batches of 64
  pairs, the true per-token mean, fp32 or under bf16 autocast.

The candidates train in turns (slices of ``--slice-seconds``, the order rotated every round)
in one process until each has had ``--minutes`` of training; then each is evaluated on the
same validation batches with the true per-token mean (teacher forced, dropout off, fp32).

Reported: real target tokens per second of training steps (forward + backward + optimiser),
the median over turns (a turn mixes short and long batches; the median shrugs off a turn slowed
by another process), achieved GFLOP/s (useful FLOPs: real tokens only, backward = 2 x forward)
against a measured fp32 matmul rate, and the validation loss per token after the equal time
budget.

    python -m benchmarks.bench_train --data DATA_DIR --minutes 2      # writes RESULTS.md
    python -m benchmarks.bench_train --quick                          # smoke run, no file
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.data import PREPARE_ARGS, load_data, shown_path
from benchmarks.machine import choose_device, matmul_gflops
from benchmarks.results import publish
from benchmarks.tutorial import (
    BATCH,
    CLIP,
    DECODER_LR_RATIO,
    DROPOUT,
    HIDDEN,
    LAYERS,
    LR,
    Candidate,
    make_padless,
    make_tutorial,
)
from padless.data.sampler import padding_fraction, random_batches


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", type=Path, default=Path(__file__).with_name("data") / "chitchat-max30",
        help="prepared dataset; prepared from the bundled chitchat corpus if missing",
    )
    parser.add_argument(
        "--prepare-args", default=PREPARE_ARGS,
        help=f"`padless prepare chitchat` options used when --data is missing ({PREPARE_ARGS})",
    )
    parser.add_argument(
        "--threads", type=int, default=torch.get_num_threads(),
        help="torch threads (1 is steadier on a machine shared with other jobs)",
    )
    parser.add_argument("--minutes", type=float, default=2.0, help="training time per candidate")
    parser.add_argument("--slice-seconds", type=float, default=20.0, help="length of one turn")
    parser.add_argument("--valid-pairs", type=int, default=2000, help="validation pairs used")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick", action="store_true",
        help="smoke run: 20 s per candidate, 256 validation pairs, nothing written",
    )
    parser.add_argument(
        "--results", type=Path, default=Path(__file__).with_name("RESULTS.md"),
        help="file whose bench_train section is rewritten (not with --quick)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.minutes, args.slice_seconds, args.valid_pairs = 1 / 3, 5.0, 256
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = choose_device()
    data = load_data(args.data, args.prepare_args)
    train, valid = data.splits["train"], data.splits["valid"][: args.valid_pairs]
    vocab_size = len(data.vocab)
    valid_sampler = data.sampler("valid", batch_size=BATCH, shuffle=False)
    # The same validation batches (as index lists) for every candidate.
    valid_batches = [
        [i for i in indices if i < len(valid)] for indices in valid_sampler
    ]
    valid_batches = [b for b in valid_batches if b]
    valid_tokens = sum(len(valid[i][1]) + 1 for b in valid_batches for i in b)
    print(f"{data}; {len(valid)} validation pairs ({valid_tokens} target tokens)", flush=True)
    tgt_lengths = data.lengths("train")[1]
    random_padding = padding_fraction(random_batches(len(train), BATCH), tgt_lengths, extra=1)
    bucket_padding = data.sampler("train", batch_size=BATCH).padding_fraction("target")

    fp32_peak = matmul_gflops(torch.float32, device)
    bf16_peak = matmul_gflops(torch.bfloat16, device)
    print(f"matmul peak: fp32 {fp32_peak:.0f} GFLOP/s, bf16 {bf16_peak:.0f} GFLOP/s", flush=True)

    runs = tempfile.TemporaryDirectory()
    candidates = [
        make_tutorial(train, valid, vocab_size, device, args.seed),
        make_padless(data, device, args.seed, "fp32", Path(runs.name)),
        make_padless(data, device, args.seed, "bf16", Path(runs.name)),
    ]
    budget = args.minutes * 60
    started = time.perf_counter()
    turn = 0
    while any(c.train_seconds < budget for c in candidates):
        order = candidates[turn % 3 :] + candidates[: turn % 3]
        for c in order:
            remaining = budget - c.train_seconds
            if remaining > 0:
                c.train_for(min(args.slice_seconds, remaining))
        turn += 1
        done = ", ".join(f"{c.name}: {c.steps} steps" for c in candidates)
        print(f"[{time.perf_counter() - started:6.0f} s] {done}", flush=True)
    losses = [c.evaluate(valid_batches) for c in candidates]

    settings = data.metadata.get("settings", {})
    base = candidates[0].tokens_per_second()
    rows = [
        "| candidate | steps | target tokens/s (median) | vs (a) | GFLOP/s (median) "
        "| % of fp32 matmul | valid loss / token | valid ppl |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c, loss in zip(candidates, losses, strict=True):
        tps, gflops = c.tokens_per_second(), c.gflops_per_second()
        rows.append(
            f"| {c.name} | {c.steps} | {tps:,.0f} | {tps / base:.2f}x | {gflops:.1f} "
            f"| {100 * gflops / fp32_peak:.0f}% | {loss:.3f} | {math.exp(loss):.1f} |"
        )
    tutorial_loss, best = losses[0], max(candidates[1:], key=Candidate.tokens_per_second)
    speedup = best.tokens_per_second() / base
    padless_losses = ", ".join(
        f"{c.name} {loss:.3f}" for c, loss in zip(candidates[1:], losses[1:], strict=True)
    )
    lower = all(loss < tutorial_loss for loss in losses[1:])
    body = [
        f"- Data: `{shown_path(args.data)}`, chitchat prepared with normalize "
        f"{settings.get('normalize')}, max length {settings.get('max_length')}, min count "
        f"{settings.get('min_count')}, drop UNK pairs {settings.get('drop_unk_pairs')}: "
        f"vocabulary {vocab_size}, {len(train)} training pairs; validation on {len(valid)} "
        f"pairs ({valid_tokens} target tokens), the same batches for every candidate. "
        f"Target padding: {100 * random_padding:.0f}% of positions in random batches of "
        f"{BATCH} (the tutorial's), {100 * bucket_padding:.1f}% in bucketed ones (padless).",
        f"- Model: hidden {HIDDEN}, {LAYERS} layers, dot attention, dropout {DROPOUT}, "
        f"batch {BATCH}, Adam lr {LR:g} (decoder x{DECODER_LR_RATIO:g}), clip {CLIP:g}; "
        f"{args.minutes:.3g} min of training each, in alternating turns of "
        f"{args.slice_seconds:g} s; tokens/s and GFLOP/s are medians over turns.",
        f"- Matmul reference (square, up to 2048^3, best of 5): fp32 {fp32_peak:.0f} GFLOP/s, "
        f"bf16 {bf16_peak:.0f} GFLOP/s. GFLOP/s counts useful work only (real tokens).",
        "",
        *rows,
        "",
        f"Targets: padless at least 3x the tutorial's tokens/s: "
        f"**{'met' if speedup >= 3 else 'missed'}** ({best.name}, {speedup:.2f}x); lower "
        f"validation loss at equal time: **{'met' if lower else 'missed'}** "
        f"(tutorial {tutorial_loss:.3f}; {padless_losses}).",
        "",
        "The tutorial is evaluated on the same length-sorted validation batches as padless, "
        "which pad less than its random training batches (kind to its unmasked attention). "
        "padless gains by never computing pads (see the target padding above) and by bf16 "
        "matmuls; the GRUs' step-by-step recurrence is the same work in both, so the less "
        "padding random batches carry (short sequences), the smaller the speed-up.",
    ]
    publish(f"bench_train:{args.data.name}",
            f"Training: tutorial algorithm vs padless, data `{args.data.name}` "
            "(`benchmarks/bench_train.py`)", "bench_train.py", argv, ".", body,
            write=not args.quick, device=device,
            results=args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
