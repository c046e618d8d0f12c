"""``padless prepare CORPUS --out DATA_DIR``: turn a corpus into a prepared dataset.

The work is :func:`padless.data.prepare.prepare`; this module parses the options and prints
the summary: what was read, kept and dropped, the vocabulary, UNK rates and lengths.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

from padless.commands.inputs import integer, number
from padless.data.dataset import METADATA_FILE
from padless.data.prepare import DEFAULT_MAX_LENGTH, PrepareOptions, default_workers, prepare
from padless.data.readers import FORMATS
from padless.data.text import NORMALIZERS, TOKENIZERS
from padless.data.vocabulary import SPECIALS

__all__ = ["add_arguments", "format_summary", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``padless prepare``."""
    parser.add_argument(
        "corpus", nargs="+", metavar="CORPUS",
        help="a file, a folder (Cornell: the one holding movie_lines.txt), two files "
             "SRC_FILE TGT_FILE (parallel), or 'chitchat' for the bundled corpus",
    )
    parser.add_argument("--out", required=True, metavar="DATA_DIR", help="output folder")
    parser.add_argument("--format", default="auto", choices=["auto", *FORMATS],
                        help="corpus format (default: detected)")
    parser.add_argument("--normalize", default="default", choices=list(NORMALIZERS),
                        help="'default' keeps Unicode letters and digits; 'tutorial' is the "
                             "PyTorch tutorial's ASCII-only normaliser; 'none' only whitespace")
    parser.add_argument("--tokenizer", default="word", choices=TOKENIZERS)
    parser.add_argument("--vocab-size", type=integer(len(SPECIALS) + 1), default=8000,
                        help="sentencepiece vocabulary size (default 8000)")
    parser.add_argument("--spm-model", default="unigram", choices=["unigram", "bpe"],
                        help="sentencepiece model type (default unigram)")
    parser.add_argument("--min-count", type=integer(1), default=1,
                        help="word tokenizer: words seen fewer times in train become UNK")
    parser.add_argument("--drop-unk-pairs", action="store_true",
                        help="drop pairs containing a word outside the vocabulary (the "
                             "tutorial's trimming) instead of mapping it to UNK")
    parser.add_argument("--max-length", type=integer(1), default=DEFAULT_MAX_LENGTH,
                        help="drop pairs with more tokens than this on either side, counted "
                             f"(default {DEFAULT_MAX_LENGTH})")
    parser.add_argument("--valid-fraction", type=number(0, 1, open_max=True), default=0.05)
    parser.add_argument("--test-fraction", type=number(0, 1, open_max=True), default=0.05)
    parser.add_argument("--seed", type=integer(0, 2**31 - 1), default=0,
                        help="split (and sentencepiece) seed")
    parser.add_argument("--skip-bad-lines", action="store_true",
                        help="count and skip malformed lines instead of stopping")
    parser.add_argument("--max-pairs", type=integer(1), default=None,
                        help="read only the first N pairs (for quick runs)")
    parser.add_argument("--workers", type=integer(1), default=default_workers(), metavar="N",
                        help="processes that normalise and tokenise (default: the cores, "
                             f"{default_workers()} here); the output is the same for any N")


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
    # every option but the corpus, --out and --workers is a field of PrepareOptions
    options = PrepareOptions(**{f.name: getattr(args, f.name) for f in fields(PrepareOptions)})
    meta = prepare(args.corpus, args.out, options, workers=args.workers)
    for message in meta["warnings"]:
        print(f"padless prepare: warning: {message}", file=sys.stderr)
    print(format_summary(meta, args.out))
    return 0
