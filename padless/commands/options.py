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
from collections.abc import Collection
from dataclasses import fields
from typing import Any

from padless.commands.inputs import integer, number
from padless.data.text import TextProcessor
from padless.decoding.batched import MAX_SEED
from padless.decoding.options import SearchOptions
from padless.models import EncoderDecoder
from padless.models.quantize import QUANTIZATIONS
from padless.runs.directory import CHECKPOINT_NAMES
from padless.runs.loading import load_for_decoding
from padless.runtime.options import knobs, value_kind
from padless.runtime.precision import PRECISIONS

__all__ = ["add_decoding_arguments", "add_model_arguments", "add_option_arguments", "load_run",
           "options_from_args", "search_options"]


def add_decoding_arguments(parser: argparse.ArgumentParser, *, sampling: bool = False,
                           n_best: bool = False) -> None:
    """``RUN_DIR`` and the options choosing the checkpoint, the device, the precision and the
    search (``sampling``: also ``--sample`` and its settings; ``n_best``: ``--n-best``)."""
    add_model_arguments(parser)
    add_search_arguments(parser, sampling=sampling, n_best=n_best)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``RUN_DIR`` and the options choosing the checkpoint, the device and the precision
    (what :func:`load_run` reads)."""
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory of `padless train`")
    parser.add_argument("--checkpoint", choices=CHECKPOINT_NAMES, default="best",
                        help="which checkpoint of the run (default: best; averaged: the one "
                             "`padless average` wrote)")
    parser.add_argument("--device", default="auto",
                        help="auto (cuda when available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="what to decode in: auto is fp32, so that an answer never depends "
                             "on its batch; bf16 (where native) and fp16 (CUDA) run faster and "
                             "change some answers (default: auto)")
    parser.add_argument(
        "--quantize",
        choices=QUANTIZATIONS,
        help="int8: decode with the linear layers in int8 (dynamic "
        "quantization, CPU only; usually faster, nearly the same answers)",
    )
    parser.add_argument("--ensemble", nargs="+", default=[], metavar="RUN_DIR",
                        help="decode with these runs too: the mean of every run's "
                             "log-probabilities at each step (runs of one text pipeline; "
                             "each with its --checkpoint)")


def add_option_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup,
                         cls: type, *, overrides: str | None = None,
                         unset: Collection[str] = (), skip: Collection[str] = ()) -> None:
    """A flag for each option of the dataclass ``cls`` whose knob has one, with the field's
    bounds (a checked type), choices, help and default, as declared once in the field.

    Args:
        overrides: the config section (``"train"``) these flags override: every flag
            defaults to None (the config's value stands), and its help names the key.
        unset: names whose flag defaults to None although its help gives the default: the
            sampling settings, an error without ``--sample``.
        skip: names that get no flag here.
    """
    defaults = {f.name: f.default for f in fields(cls)}
    for name, knob in knobs(cls):
        if knob.flag is None or name in skip:
            continue
        kind, choices = value_kind(cls, name)
        default = defaults[name]
        if kind is bool:
            off = knob.flag.startswith("--no-")
            parser.add_argument(knob.flag, dest=name, action="store_false" if off else
                                "store_true", help=knob.help + (" (on unless this flag is "
                                                                "given)" if off else ""))
            continue
        if overrides is not None:
            said, default = f" ({overrides}.{name}; default: the config's)", None
        elif default is None:
            said = ""
        else:
            said = f" (default {default:g})" if isinstance(default, float) else \
                f" (default {default})"
        if name in unset:
            default = None
        if choices is not None:
            parser.add_argument(knob.flag, dest=name, choices=choices, default=default,
                                help=knob.help + said)
            continue
        parse = integer(knob.minimum, knob.maximum) if kind is int else number(
            knob.minimum, knob.maximum, open_min=knob.open_min, open_max=knob.open_max)
        parser.add_argument(knob.flag, dest=name, type=parse, default=default,
                            metavar=knob.metavar or "N", help=knob.help + said)


def options_from_args(cls: type, args: argparse.Namespace, **given: Any) -> Any:
    """The ``cls`` that the flags of :func:`add_option_arguments` (and ``given``) ask for;
    a field without a flag keeps its default."""
    values = {name: getattr(args, name) for name, knob in knobs(cls)
              if knob.flag is not None and hasattr(args, name)}
    return cls(**{**values, **given})


def add_search_arguments(parser: argparse.ArgumentParser, *, sampling: bool = False,
                         n_best: bool = False) -> None:
    """``--beam K`` (and ``--sample``) and a flag for each setting of ``SearchOptions`` that
    has one, with its bounds, help and default."""
    method = parser.add_mutually_exclusive_group()
    beams = dict(knobs(SearchOptions))["beam_size"]
    method.add_argument("--beam", type=integer(1, int(beams.maximum)), metavar="K",
                        help="beam search with K beams (default: greedy)")
    if sampling:
        method.add_argument("--sample", action="store_true",
                            help="sample the answer instead of searching for the likeliest")
    sampling_settings = [name for name, knob in knobs(SearchOptions) if knob.sampling]
    # sampling settings default to None: given without --sample, they are an error;
    # --n-best is translate's (one output line per input elsewhere)
    add_option_arguments(parser, SearchOptions, unset=[*sampling_settings, "n_best"],
                         skip=[*([] if sampling else sampling_settings),
                               *([] if n_best else ["n_best"])])
    if sampling:
        parser.add_argument("--seed", type=integer(0, MAX_SEED), metavar="S",
                            help="seed of the sampler (default: a fresh seed each run)")


def search_options(args: argparse.Namespace) -> SearchOptions:
    """The :class:`SearchOptions` the parsed flags ask for.

    Raises:
        UserError: on a bad combination (checked by :class:`SearchOptions`).
    """
    sampling = {name: getattr(args, name, None) for name, knob in knobs(SearchOptions)
                if knob.sampling}
    later = {*sampling, "n_best"}  # given to asked(): they depend on the search asked for
    plain = options_from_args(SearchOptions, argparse.Namespace(**{
        k: v for k, v in vars(args).items() if k not in later}))
    return plain.asked(beam=args.beam, sample=getattr(args, "sample", False),
                       n_best=getattr(args, "n_best", None), **sampling)


def load_run(args: argparse.Namespace) -> tuple[EncoderDecoder, TextProcessor]:
    """The model (eval mode, on ``--device``, in ``--precision`` or ``--quantize``d: the
    same whatever the batch, so that an answer never depends on it) and TextProcessor of
    ``RUN_DIR``; what it runs in is said on stderr."""
    model, text, _, decoding = load_for_decoding(
        args.run_dir, args.checkpoint, args.device, precision=args.precision,
        quantization=args.quantize, ensemble=args.ensemble)
    print(decoding.describe(), file=sys.stderr)
    if decoding.warning is not None:
        print(f"warning: {decoding.warning}", file=sys.stderr)
    if args.ensemble:
        print(f"an ensemble of {1 + len(args.ensemble)} runs: the mean of their "
              "log-probabilities at each step", file=sys.stderr)
    return model, text
