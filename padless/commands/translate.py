"""``padless translate RUN_DIR < in.txt > out.txt``: decode a file, one output line per line.

Lines are decoded in length-sorted batches (little padding) and written back in input order;
a progress bar goes to stderr. An empty input line gives an empty output line; a line longer
than ``--max-input-length`` tokens is cut, with a notice. The work is
:func:`padless.decoding.batched.decode_lines`.

With ``--n-best K`` (beam search, ``--beam K`` or more) each input gets K lines of
tab-separated fields, best first, like fairseq's ``H`` lines and OpenNMT's ``-n_best``::

    LINE  RANK  SCORE  LOG_PROB  TEXT

``LINE`` is the input's line number (from 1), ``RANK`` the hypothesis' (from 1), ``SCORE``
what beam search ranks by (the log-probability with any repetition penalty, divided by the
length penalty), ``LOG_PROB`` the model's own log-probability of the answer and its EOS. An
empty input line gets one line with an empty text.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from padless.commands.inputs import integer, read_lines, stdin_lines
from padless.commands.options import add_decoding_arguments, load_run, search_options
from padless.decoding.batched import InputsTruncated, decode_lines
from padless.decoding.options import MAX_BATCH_SIZE

__all__ = ["add_arguments", "run"]

MAX_INPUT_LENGTH = 200  # tokens: the longest pair `padless prepare` keeps by default


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``padless translate``."""
    add_decoding_arguments(parser, n_best=True)
    parser.add_argument("--batch-size", type=integer(1, MAX_BATCH_SIZE), default=64, metavar="N",
                        help="sentences decoded together (default 64)")
    parser.add_argument("--max-input-length", type=integer(1), default=MAX_INPUT_LENGTH,
                        metavar="N", help="longer inputs are cut to their first N tokens, with "
                        f"a notice (default {MAX_INPUT_LENGTH})")
    parser.add_argument("--prefix-file", metavar="FILE",
                        help="one prefix per input line: each answer starts with its line's "
                             "prefix and the search goes on from there (an empty line: none)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def run(args: argparse.Namespace) -> int:
    """Read stdin, write one answer per input line to stdout; exit code 0.

    A bad option, run directory or input raises ``UserError``, which ``padless.cli.main``
    reports in one line (exit 2).
    """
    options = search_options(args)
    lines = stdin_lines()
    prefixes = None if args.prefix_file is None else read_lines(args.prefix_file)
    model, text = load_run(args)
    lines = list(lines)  # all of it first: a bad line stops the command before any output
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InputsTruncated)
        answers = decode_lines(
            model, text, lines, options, batch_size=args.batch_size,
            max_input_length=args.max_input_length, progress=not args.no_progress,
            prefixes=prefixes,
        )
    for w in caught:  # ours as a notice; any other warning as it would have been shown
        if issubclass(w.category, InputsTruncated):
            print(f"padless translate: notice: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    for number, nbest in enumerate(answers, 1):
        if options.n_best == 1:
            sys.stdout.write(nbest[0][0] + "\n")
            continue
        for rank, (answer, hyp) in enumerate(nbest, 1):
            sys.stdout.write(f"{number}\t{rank}\t{hyp.score:.6f}\t{hyp.log_prob:.6f}\t"
                             f"{answer}\n")
    sys.stdout.flush()
    return 0
