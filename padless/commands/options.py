"""Options and start-up steps that several commands share.

``chat``, ``translate``, ``evaluate`` and ``serve`` take a run directory, a checkpoint, a
device, a precision and the search options. The search flags are generated from
:class:`padless.decoding.options.SearchOptions` (each setting's
:class:`~padless.decoding.options.Knob`: flag, help, bounds, default), and
:func:`search_options` turns the parsed flags back into one ``SearchOptions``.
"""

from __future__ import annotations

import argparse
import sys

from padless.commands.inputs import integer, number
from padless.data.text import TextProcessor
from padless.decoding.batched import MAX_SEED
from padless.decoding.options import SearchOptions, knobs
from padless.models import EncoderDecoder
from padless.models.precision import for_decoding
from padless.models.quantize import QUANTIZATIONS
from padless.runs.directory import CHECKPOINT_NAMES
from padless.runs.loading import load_model
from padless.runtime.precision import PRECISIONS

__all__ = ["add_decoding_arguments", "add_precision_argument", "load_run", "search_options"]


def add_decoding_arguments(parser: argparse.ArgumentParser, *, sampling: bool = False) -> None:
    """``RUN_DIR`` and the options choosing the checkpoint, the device, the precision and the
    search (``sampling``: also ``--sample`` and its settings)."""
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory of `padless train`")
    parser.add_argument("--checkpoint", choices=CHECKPOINT_NAMES, default="best",
                        help="which checkpoint of the run (default: best; averaged: the one "
                             "`padless average` wrote)")
    parser.add_argument("--device", default="auto",
                        help="auto (cuda when available), cpu, cuda, cuda:1, ...")
    add_precision_argument(parser, "decode in")
    parser.add_argument(
        "--quantize",
        choices=QUANTIZATIONS,
        help="int8: decode with the linear layers in int8 (dynamic "
        "quantization, CPU only; usually faster, nearly the same answers)",
    )
    add_search_arguments(parser, sampling=sampling)


def add_search_arguments(parser: argparse.ArgumentParser, *, sampling: bool = False) -> None:
    """``--beam K`` (and ``--sample``) and a flag for each setting of ``SearchOptions`` that
    has one, with its bounds, help and default."""
    defaults = SearchOptions()
    method = parser.add_mutually_exclusive_group()
    method.add_argument("--beam", type=integer(1), metavar="K",
                        help="beam search with K beams (default: greedy)")
    if sampling:
        method.add_argument("--sample", action="store_true",
                            help="sample the answer instead of searching for the likeliest")
    for name, knob in knobs():
        if knob.flag is None or (knob.sampling and not sampling):
            continue
        default = getattr(defaults, name)
        if isinstance(default, bool):
            parser.add_argument(knob.flag, dest=name, action="store_true", help=knob.help)
            continue
        parse = integer if isinstance(default, int) else number
        bounds = {} if parse is integer else {"open_min": knob.open_min,
                                              "open_max": knob.open_max}
        # sampling settings default to None: given without --sample, they are an error
        parser.add_argument(knob.flag, dest=name, type=parse(knob.minimum, knob.maximum, **bounds),
                            default=None if knob.sampling else default, metavar=knob.metavar,
                            help=f"{knob.help} (default {default:g})")
    if sampling:
        parser.add_argument("--seed", type=integer(0, MAX_SEED), metavar="S",
                            help="seed of the sampler (default: a fresh seed each run)")


def add_precision_argument(parser: argparse.ArgumentParser, what: str,
                           default: str | None = "auto") -> None:
    """``--precision auto|fp32|bf16|fp16`` (:mod:`padless.runtime.precision`)."""
    parser.add_argument("--precision", choices=PRECISIONS, default=default,
                        help=f"what to {what}: auto picks bf16 or fp16 where this device runs "
                             "it fast, else fp32; fp16 needs CUDA (default: "
                             f"{default or 'as the config says'})")


def search_options(args: argparse.Namespace) -> SearchOptions:
    """The :class:`SearchOptions` the parsed flags ask for.

    Raises:
        UserError: on a bad combination (checked by :class:`SearchOptions`).
    """
    settings = {name: getattr(args, name) for name, knob in knobs()
                if hasattr(args, name) and not knob.sampling}
    sampling = {name: getattr(args, name, None) for name, knob in knobs() if knob.sampling}
    return SearchOptions(**settings).asked(beam=args.beam, sample=getattr(args, "sample", False),
                                           **sampling)


def load_run(args: argparse.Namespace, rows: int = 1) -> tuple[EncoderDecoder, TextProcessor]:
    """The model (eval mode, on ``--device``, in ``--precision`` or ``--quantize``d, for
    decoding ``rows`` sentences at a time, each ``--beam`` rows wide) and TextProcessor of
    ``RUN_DIR``; what it runs in is said on stderr."""
    model, text, _ = load_model(args.run_dir, args.checkpoint, args.device)
    decoding = for_decoding(model, args.precision, rows * (args.beam or 1), args.quantize)
    print(decoding.describe(), file=sys.stderr)
    if decoding.warning is not None:
        print(f"warning: {decoding.warning}", file=sys.stderr)
    return decoding.model, text
