"""``padless score RUN_DIR < pairs.tsv``: the model's log-probability of given translations.

For each ``source<TAB>target`` line of stdin it writes one line of tab-separated fields::

    LOG_PROB  MEAN  TOKENS

``LOG_PROB`` is the sum of the log-probabilities (nats) of the target's tokens and its EOS
given the source, ``MEAN`` that sum per token, ``TOKENS`` their number (EOS included), as the
model's own tokenizer counts them. What parallel-data filtering, reranking and checking a
reference need (fairseq's ``--score-reference``, Marian's scorer, CTranslate2's
``score_batch``). Pairs are scored teacher-forced, in length-sorted batches, pad-free; the
figures sum to ``padless evaluate``'s loss on the same pairs. The work is
:func:`padless.models.scoring.pair_scores`.
"""

from __future__ import annotations

import argparse
import sys

from padless.commands.inputs import integer, stdin_lines
from padless.commands.options import add_model_arguments, load_run
from padless.decoding.options import MAX_BATCH_SIZE
from padless.models.scoring import pair_scores
from padless.runtime.errors import UserError

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``padless score``."""
    add_model_arguments(parser)
    parser.add_argument("--batch-size", type=integer(1, MAX_BATCH_SIZE), default=64, metavar="N",
                        help="pairs scored together (default 64)")


def read_pairs(lines, text) -> list[tuple[list[int], list[int]]]:
    """The id pairs of ``source<TAB>target`` lines (sources and targets each as the run's
    text pipeline encodes them).

    Raises:
        UserError: ``stdin:LINE``: a line without exactly one TAB, or whose source has no
            token.
    """
    pairs = []
    for number, line in enumerate(lines, 1):
        fields = line.split("\t")
        if len(fields) != 2:
            raise UserError(f"stdin:{number}: expected 'source<TAB>target', found "
                            f"{len(fields) - 1} TABs")
        source = text.encode(fields[0])
        if not source:
            raise UserError(f"stdin:{number}: the source has no token to score from")
        pairs.append((source, text.encode_target(fields[1])))
    return pairs


def run(args: argparse.Namespace) -> int:
    """Score every pair of stdin (all read and checked first); exit code 0."""
    lines = stdin_lines()
    model, text = load_run(args)
    pairs = read_pairs(lines, text)
    for score in pair_scores(model, pairs, batch_size=args.batch_size):
        sys.stdout.write(f"{score.log_prob:.6f}\t{score.mean:.6f}\t{score.tokens}\n")
    sys.stdout.flush()
    return 0
