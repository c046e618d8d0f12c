"""Scoring given pairs against decoding them: pairs per second of ``padless score`` and of
greedy decoding the same sources.

The run's ``best`` checkpoint, set up as the commands set it up (``for_decoding``), scores the
test split's ``source<TAB>target`` pairs teacher-forced (:func:`padless.models.scoring
.pair_scores`: one pass over each target, pad-free, batches of 64) and decodes the same
sources greedily (batches of 64, the commands' search options), in alternating rounds. A
check first: the scores' total over the tokens equals the teacher-forced loss of
``evaluate`` on the same pairs.

Goal (issue 33): scoring at least 5x the pairs/s of greedy decoding.

    python -m benchmarks.bench_score RUN_DIR            # writes RESULTS.md
    python -m benchmarks.bench_score RUN_DIR --rounds 1 --no-write
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from functools import partial

from benchmarks.data import run_data_dir, run_parser
from benchmarks.results import publish
from padless.data.dataset import PreparedData
from padless.data.loader import make_batches
from padless.decoding.batched import decode_ids
from padless.decoding.options import SearchOptions
from padless.models.decoding_setup import for_decoding
from padless.models.scoring import pair_scores, teacher_forced_scores
from padless.runs.loading import load_model
from padless.runtime.timing import alternating_times

GOAL = 5.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = run_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=1024, help="test pairs used (at most)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data_dir = run_data_dir(args.run_dir, args.data)
    data = PreparedData.load(data_dir)
    model, _, _ = load_model(args.run_dir, "best", "cpu")
    decoding = for_decoding(model)
    model = decoding.model
    pairs = list(data.splits["test"])[: args.pairs]
    sources = [source for source, _ in pairs]

    scores = pair_scores(model, pairs)
    batches = make_batches(pairs, [list(range(i, min(i + 64, len(pairs))))
                                   for i in range(0, len(pairs), 64)], specials=model.specials)
    loss = teacher_forced_scores(model, batches).loss
    summed = -sum(s.log_prob for s in scores) / sum(s.tokens for s in scores)
    if not math.isclose(summed, loss, rel_tol=1e-5):
        raise SystemExit(f"scores and evaluate's loss differ: {summed} against {loss}")

    options = SearchOptions()
    times = alternating_times({
        "score": partial(pair_scores, model, pairs, batch_size=64),
        "greedy": partial(decode_ids, model, sources, options, batch_size=64),
    }, rounds=args.rounds)
    rate = {name: len(pairs) / statistics.median(spent) for name, spent in times.items()}
    ratio = rate["score"] / rate["greedy"]
    tokens = sum(s.tokens for s in scores) / len(scores)
    publish("bench_score", "Scoring against decoding (`bench_score.py`)", "bench_score.py", argv,
            f"; run {args.run_dir.name}, the first {len(pairs)} test pairs of {data_dir} "
            f"(targets of {tokens:.1f} tokens on average, EOS included), {decoding.describe()}, "
            f"batches of 64; median of {args.rounds} alternating rounds. Check: the scores' "
            f"mean per token ({summed:.4f}) is evaluate's teacher-forced loss ({loss:.4f}).",
            ["| work | pairs/s |", "|---|---:|",
             f"| `padless score` (teacher-forced) | {rate['score']:.1f} |",
             f"| greedy decoding of the same sources | {rate['greedy']:.1f} |", "",
             f"Scoring ran {ratio:.1f}x the pairs/s of greedy decoding (goal >= {GOAL:g}x: "
             f"{'met' if ratio >= GOAL else 'missed'})."],
            write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
