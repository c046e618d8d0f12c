"""``padless translate RUN_DIR < in.txt > out.txt``: decode a file, one output line per line.

Lines are decoded in length-sorted batches (little padding) and written back in input order;
a progress bar goes to stderr. An empty input line gives an empty output line. The work is
:func:`padless.decoding.batched.decode_texts`.
"""

from __future__ import annotations

import argparse
import sys

from padless.commands.options import add_decoding_arguments, load_run, search_options
from padless.decoding.batched import decode_texts

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``padless translate``."""
    add_decoding_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=64, metavar="N",
                        help="sentences decoded together (default 64)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def run(args: argparse.Namespace) -> int:
    """Read stdin, write one answer per input line to stdout; exit code 0, or 2 on bad input."""
    try:
        options = search_options(args)
        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
        model, text = load_run(args)
    except ValueError as e:
        print(f"padless translate: {e}", file=sys.stderr)
        return 2
    lines = [line.rstrip("\r\n") for line in sys.stdin]
    outputs = decode_texts(
        model, text, lines, options, batch_size=args.batch_size, progress=not args.no_progress
    )
    for output in outputs:
        sys.stdout.write(output + "\n")
    sys.stdout.flush()
    return 0
