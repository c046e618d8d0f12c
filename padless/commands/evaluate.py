"""``padless evaluate RUN_DIR``: loss, perplexity, BLEU, chrF and samples on a split.

The work is :func:`padless.decoding.evaluation.evaluate` and
:func:`padless.decoding.evaluation.plot_attention`.
"""

from __future__ import annotations

import argparse
import sys

from padless.commands.options import add_decoding_arguments, load_run, search_options
from padless.data.dataset import PreparedData
from padless.decoding.evaluation import evaluate, plot_attention
from padless.training.checkpoint import read_run_info

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``padless evaluate``."""
    add_decoding_arguments(parser)
    parser.add_argument("--data", metavar="DATA_DIR",
                        help="a prepared dataset (default: the one the run was trained on)")
    parser.add_argument("--split", choices=("test", "valid"), default="test")
    parser.add_argument("--batch-size", type=int, default=64, metavar="N")
    parser.add_argument("--limit", type=int, metavar="N",
                        help="decode only the first N pairs for BLEU/chrF (the loss uses all)")
    parser.add_argument("--samples", type=int, default=5, metavar="N",
                        help="outputs shown beside their references (default 5)")
    parser.add_argument("--attention-plot", metavar="FILE.png",
                        help="draw the decoder's attention for --input (or the first pair)")
    parser.add_argument("--input", metavar="TEXT", help="the sentence of --attention-plot")


def run(args: argparse.Namespace) -> int:
    """Evaluate and print the report; exit code 0, or 2 on a bad run, data or option."""
    try:
        options = search_options(args)
        data_dir = args.data or read_run_info(args.run_dir).get("data_dir")
        if data_dir is None and args.attention_plot is None:
            raise ValueError(f"{args.run_dir} does not record its data: give --data DATA_DIR")
        model, text = load_run(args)
        data = PreparedData.load(data_dir) if data_dir is not None else None
        if data is not None and data.vocab != text.vocab:
            raise ValueError(f"{data_dir}: its vocabulary differs from {args.run_dir}'s")
        if data is not None:
            result = evaluate(
                model, text, data.splits[args.split], options, split=args.split,
                batch_size=args.batch_size, limit=args.limit, n_samples=args.samples,
                progress=True,
            )
            print(result.report())
        if args.attention_plot is not None:
            sentence = args.input
            if sentence is None:
                if data is None or not data.splits[args.split]:
                    raise ValueError("--attention-plot needs --input TEXT (or --data)")
                sentence = text.decode(data.splits[args.split][0][0])
            path = plot_attention(model, text, sentence, options, args.attention_plot)
            print(f"attention for {sentence!r}: {path}")
    except ValueError as e:
        print(f"padless evaluate: {e}", file=sys.stderr)
        return 2
    return 0
