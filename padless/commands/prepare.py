"""``padless prepare CORPUS --out DATA_DIR``: turn a corpus into a prepared dataset.

The work is :func:`padless.data.prepare.prepare`; this module parses the options and prints
the summary: what was read, kept and dropped, the vocabulary, UNK rates and lengths.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from padless.commands.inputs import integer
from padless.commands.options import add_option_arguments, options_from_args
from padless.data.dataset import METADATA_FILE
from padless.data.options import PrepareOptions
from padless.data.parallel import MAX_WORKERS
from padless.data.prepare import prepare
from padless.data.text import TextProcessor
from padless.runs.directory import RunDirectory
from padless.runtime.errors import UserError

__all__ = ["add_arguments", "format_summary", "run"]

# what building a text pipeline takes, and --text-from replaces
TEXT_OPTIONS = ("normalize", "tokenizer", "vocab_size", "spm_model", "min_count")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``padless prepare``."""
    parser.add_argument(
        "corpus", nargs="+", metavar="CORPUS",
        help="a file, a folder (Cornell: the one holding movie_lines.txt), two files "
             "SRC_FILE TGT_FILE (parallel), or 'chitchat' for the bundled corpus",
    )
    parser.add_argument("--out", required=True, metavar="DATA_DIR", help="output folder")
    add_option_arguments(parser, PrepareOptions)
    parser.add_argument("--text-from", metavar="RUN_DIR",
                        help="tokenise with this run's text pipeline (normaliser, tokenizer, "
                             "vocabulary; an imported model's own tokenizer), so the ids are "
                             "the model's: to fine-tune it (train --init-from RUN_DIR)")
    parser.add_argument("--workers", type=integer(1, MAX_WORKERS), metavar="N",
                        help="processes that normalise and tokenise (default and most: one "
                             "per core; a corpus of one chunk runs in this process); the "
                             "output is the same for any N")


def format_summary(meta: dict, out: str | Path) -> str:
    """What a user wants to see after ``prepare``: counts, drops, vocabulary, UNK, lengths."""
    counts = meta["counts"]
    sizes = counts["splits"]
    lines = [
        f"corpus       {' '.join(meta['corpus'])} ({meta['corpus_format']})",
        f"pairs read   {counts['read']:,}",
        f"dropped      {counts['read'] - counts['kept']:,}",
    ]
    lines += [f"  {reason:<34} {n:,}" for reason, n in counts["dropped"].items()]
    if counts["bad_lines"]:
        lines.append(f"  bad lines skipped (not pairs)      {counts['bad_lines']:,}")
    if counts["missing_ids"]:
        lines.append(f"  missing line ids (not pairs)       {counts['missing_ids']:,}")
    lines += [
        f"kept         {counts['kept']:,} (train {sizes['train']:,}, "
        f"valid {sizes['valid']:,}, test {sizes['test']:,})",
        f"vocabulary   {meta['vocab_size']:,} ({meta['settings']['tokenizer']}, "
        f"normalize={meta['settings']['normalize']}, 4 specials included)",
        "UNK rate     " + ", ".join(f"{k} {v:.2%}" for k, v in meta["unk_rate"].items()),
        "length       tokens  source  target",
    ]
    hist = meta["length_histogram"]
    total = max(counts["kept"], 1)
    for label, s, t in zip(hist["bins"], hist["source"], hist["target"], strict=True):
        bar = "#" * round(30 * t / total)
        lines.append(f"             {label:>6}  {s / total:6.1%}  {t / total:6.1%}  {bar}".rstrip())
    lines += [f"note         {p}" for p in meta["problems"]]
    model = " sentencepiece.model" if meta["settings"]["tokenizer"] == "sentencepiece" else ""
    lines.append(f"wrote        {out}/ (train.tsv valid.tsv test.tsv vocab.json text.json"
                 f"{model} {METADATA_FILE})")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``padless prepare``; exit code 0.

    A bad corpus, option or ``--out`` raises ``UserError`` (``CorpusError``), which
    ``padless.cli.main`` reports in one line (exit 2).
    """
    options = options_from_args(PrepareOptions, args)
    text = None
    if args.text_from is not None:
        learned = [f"--{name.replace('_', '-')}" for name in TEXT_OPTIONS
                   if getattr(options, name) != getattr(PrepareOptions(), name)]
        if learned:
            raise UserError(f"--text-from: the run's text pipeline decides the normaliser, "
                            f"tokenizer and vocabulary; leave {', '.join(learned)} out")
        text = TextProcessor.load(RunDirectory(args.text_from).text_dir)
    meta = prepare(args.corpus, args.out, options, workers=args.workers, text=text)
    for message in meta["warnings"]:
        print(f"padless prepare: warning: {message}", file=sys.stderr)
    print(format_summary(meta, args.out))
    return 0
