"""``padless evaluate RUN_DIR``: loss, perplexity, BLEU, chrF and samples on a split.

The work is :func:`padless.decoding.evaluation.evaluate` and
:func:`padless.decoding.evaluation.plot_attention`. Every option is checked before the
evaluation starts, so a bad one never costs the loss pass.
"""

from __future__ import annotations

import argparse

from padless.commands.inputs import integer
from padless.commands.options import add_decoding_arguments, load_run, search_options
from padless.data.dataset import PreparedData
from padless.data.text import TextProcessor
from padless.decoding.evaluation import evaluate, image_format_of, plot_attention
from padless.decoding.options import MAX_BATCH_SIZE
from padless.runs.directory import RunDirectory
from padless.runs.info import read_run_info
from padless.runtime.errors import UserError

__all__ = ["add_arguments", "run"]

MAX_INPUT_LENGTH = 200  # tokens: the longest pair `padless prepare` keeps by default


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``padless evaluate``."""
    add_decoding_arguments(parser)
    parser.add_argument("--data", metavar="DATA_DIR",
                        help="a prepared dataset (default: the one the run was trained on)")
    parser.add_argument("--split", choices=("test", "valid"), default="test")
    parser.add_argument("--batch-size", type=integer(1, MAX_BATCH_SIZE), default=64, metavar="N")
    parser.add_argument("--limit", type=integer(1), metavar="N",
                        help="decode only the first N pairs for BLEU/chrF (the loss uses all)")
    parser.add_argument("--samples", type=integer(0), default=5, metavar="N",
                        help="outputs shown beside their references (default 5)")
    parser.add_argument("--max-input-length", type=integer(1), default=MAX_INPUT_LENGTH,
                        metavar="N", help="sources longer than N tokens are cut before decoding "
                        f"(default {MAX_INPUT_LENGTH}; counted in the report)")
    parser.add_argument("--attention-plot", metavar="FILE.png",
                        help="draw the decoder's attention for --input (or the first pair)")
    parser.add_argument("--input", metavar="TEXT", help="the sentence of --attention-plot")


def _plot_sentence(args: argparse.Namespace, text: TextProcessor,
                   data: PreparedData | None) -> str:
    """The sentence whose attention ``--attention-plot`` draws: ``--input`` or the first pair."""
    sentence = args.input
    if sentence is None:
        if data is None or not data.splits[args.split]:
            raise UserError("--attention-plot needs --input TEXT (or --data)")
        sentence = text.decode(data.splits[args.split][0][0])
    if not text.encode(sentence):
        raise UserError(f"--input {sentence!r} has no token to attend to")
    return sentence


def run(args: argparse.Namespace) -> int:
    """Evaluate and print the report; exit code 0.

    A bad option, run directory or dataset raises ``UserError``, which ``padless.cli.main``
    reports in one line (exit 2).
    """
    options = search_options(args)
    if args.attention_plot is not None:
        image_format_of(args.attention_plot)
    data_dir = args.data or read_run_info(RunDirectory(args.run_dir)).data_dir
    if data_dir is None and args.attention_plot is None:
        raise UserError(f"{args.run_dir} does not record its data: give --data DATA_DIR")
    model, text = load_run(args)
    data = PreparedData.load(data_dir) if data_dir is not None else None
    if data is not None and data.vocab != text.vocab:
        raise UserError(f"{data_dir}: its vocabulary differs from {args.run_dir}'s; evaluate "
                        "on data prepared with the run's vocabulary")
    sentence = _plot_sentence(args, text, data) if args.attention_plot is not None else None
    if data is not None:
        result = evaluate(
            model, text, data.splits[args.split], options, split=args.split,
            batch_size=args.batch_size, limit=args.limit, n_samples=args.samples,
            max_input_length=args.max_input_length, progress=True,
        )
        print(result.report())
    if sentence is not None:
        path = plot_attention(model, text, sentence, options, args.attention_plot)
        print(f"attention for {sentence!r}: {path}")
    return 0
