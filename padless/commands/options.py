"""Options and start-up steps that several commands share.

``chat``, ``translate`` and ``evaluate`` take a run directory, a checkpoint, a device and the
same search options; :func:`search_options` turns the parsed options into the
:class:`padless.decoding.search.SearchOptions` the decoding functions take.
"""

from __future__ import annotations

import argparse
import sys

from padless.commands.inputs import integer, number
from padless.data.text import TextProcessor
from padless.decoding.search import SearchOptions
from padless.models import EncoderDecoder
from padless.models.precision import for_decoding
from padless.runs.directory import CHECKPOINT_NAMES
from padless.runs.loading import load_model
from padless.runtime.devices import resolve_device
from padless.runtime.precision import PRECISIONS

__all__ = ["add_decoding_arguments", "load_run", "search_options"]

DEFAULTS = SearchOptions()  # the commands' defaults are SearchOptions' own


def add_decoding_arguments(parser: argparse.ArgumentParser, *, sampling: bool = False) -> None:
    """``RUN_DIR`` and the options choosing the checkpoint, the device and the search."""
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory of `padless train`")
    parser.add_argument("--checkpoint", choices=CHECKPOINT_NAMES, default="best",
                        help="which checkpoint of the run (default: best; averaged: the one "
                             "`padless average` wrote)")
    parser.add_argument("--device", default="auto",
                        help="auto (cuda when available), cpu, cuda, cuda:1, ...")
    add_precision_argument(parser, "decode in")
    method = parser.add_mutually_exclusive_group()
    method.add_argument("--beam", type=integer(1), metavar="K",
                        help="beam search with K beams (default: greedy)")
    parser.add_argument("--length-penalty", type=number(0), default=0.6, metavar="ALPHA",
                        help="beam search's GNMT length penalty exponent (default 0.6; 0: none)")
    parser.add_argument("--max-length", type=integer(1), default=30, metavar="N",
                        help="at most N output tokens (default 30)")
    parser.add_argument("--min-length", type=integer(0), default=1, metavar="N",
                        help="at least N output tokens before the end (default 1: never an "
                             "empty answer)")
    parser.add_argument("--allow-unk", action="store_true",
                        help="let answers contain <unk> (by default it is never generated)")
    parser.add_argument("--no-repeat-ngram", type=integer(0), default=DEFAULTS.no_repeat_ngram,
                        metavar="N",
                        help="never the same N-gram twice in an answer (default "
                             f"{DEFAULTS.no_repeat_ngram}; 0: allowed)")
    parser.add_argument("--repetition-penalty", type=number(1),
                        default=DEFAULTS.repetition_penalty, metavar="P",
                        help="multiply the log-probability of words already in the answer by "
                             f"P >= 1 (default {DEFAULTS.repetition_penalty:g}; 1: no penalty)")
    if sampling:
        method.add_argument("--sample", action="store_true",
                            help="sample the answer instead of searching for the likeliest")
        parser.add_argument("--temperature", type=number(0, open_min=True), default=1.0,
                            metavar="T",
                            help="sampling temperature (default 1.0)")
        parser.add_argument("--top-k", type=integer(0), default=0, metavar="K",
                            help="sample among the K likeliest tokens (default 0: all)")
        parser.add_argument("--top-p", type=number(0, 1, open_min=True), default=1.0,
                            metavar="P",
                            help="nucleus sampling: smallest set of tokens with probability P")
        parser.add_argument("--seed", type=integer(0, 2**63 - 1), metavar="S",
                            help="seed of the sampler (default: a fresh seed each run)")


def add_precision_argument(parser: argparse.ArgumentParser, what: str,
                           default: str | None = "auto") -> None:
    """``--precision auto|fp32|bf16|fp16`` (:mod:`padless.runtime.precision`)."""
    parser.add_argument("--precision", choices=PRECISIONS, default=default,
                        help=f"what to {what}: auto picks bf16 or fp16 where this device runs "
                             "it fast, else fp32; fp16 needs CUDA (default: "
                             f"{default or 'as the config says'})")


def search_options(args: argparse.Namespace) -> SearchOptions:
    """The :class:`SearchOptions` the parsed options ask for.

    Raises:
        UserError: on a bad combination (checked by :class:`SearchOptions`).
    """
    common = {
        "max_length": args.max_length, "min_length": args.min_length,
        "allow_unk": args.allow_unk, "no_repeat_ngram": args.no_repeat_ngram,
        "repetition_penalty": args.repetition_penalty,
    }
    if getattr(args, "sample", False):
        return SearchOptions(
            method="sample", temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
            **common,
        )
    if args.beam is not None:
        return SearchOptions(method="beam", beam_size=args.beam, alpha=args.length_penalty,
                             **common)
    return SearchOptions(method="greedy", **common)


def load_run(args: argparse.Namespace, rows: int = 1) -> tuple[EncoderDecoder, TextProcessor]:
    """The model (eval mode, on ``--device``, in ``--precision`` for decoding ``rows``
    sentences at a time) and TextProcessor of ``RUN_DIR``; the precision line goes to
    stderr."""
    model, text, _ = load_model(args.run_dir, args.checkpoint, resolve_device(args.device))
    chosen = for_decoding(model, args.precision, rows)
    print(chosen.describe(), file=sys.stderr)
    if chosen.warning is not None:
        print(f"warning: {chosen.warning}", file=sys.stderr)
    return model, text
