"""What ``padless chat``, ``translate`` and ``evaluate`` share.

Decoding options on the command line, loading a trained run on the device chosen at run
time, and decoding many sentences in length-sorted batches with the results in input order.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch
from tqdm import tqdm

from padless.masking import pad_batch
from padless.model import Seq2Seq
from padless.search import (
    Hypothesis,
    SearchOptions,
    SearchResult,
    beam_search,
    greedy_search,
    sample_search,
)
from padless.text import TextProcessor
from padless.vocabulary import BOS_ID, EOS_ID, PAD_ID, UNK_ID

__all__ = [
    "add_decoding_arguments",
    "decode_ids",
    "decode_texts",
    "load_run",
    "make_generator",
    "resolve_device",
    "run_search",
    "search_options",
]


def add_decoding_arguments(parser: argparse.ArgumentParser, *, sampling: bool = False) -> None:
    """``RUN_DIR`` and the options choosing the checkpoint, the device and the search."""
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory of `padless train`")
    parser.add_argument("--checkpoint", choices=("best", "latest"), default="best",
                        help="which checkpoint of the run (default: best)")
    parser.add_argument("--device", default="auto",
                        help="auto (cuda when available), cpu, cuda, cuda:1, ...")
    method = parser.add_mutually_exclusive_group()
    method.add_argument("--beam", type=int, metavar="K",
                        help="beam search with K beams (default: greedy)")
    parser.add_argument("--length-penalty", type=float, default=0.6, metavar="ALPHA",
                        help="beam search's GNMT length penalty exponent (default 0.6; 0: none)")
    parser.add_argument("--max-length", type=int, default=30, metavar="N",
                        help="at most N output tokens (default 30)")
    parser.add_argument("--min-length", type=int, default=1, metavar="N",
                        help="at least N output tokens before the end (default 1: never an "
                             "empty answer)")
    parser.add_argument("--allow-unk", action="store_true",
                        help="let answers contain <unk> (by default it is never generated)")
    if sampling:
        method.add_argument("--sample", action="store_true",
                            help="sample the answer instead of searching for the likeliest")
        parser.add_argument("--temperature", type=float, default=1.0, metavar="T",
                            help="sampling temperature (default 1.0)")
        parser.add_argument("--top-k", type=int, default=0, metavar="K",
                            help="sample among the K likeliest tokens (default 0: all)")
        parser.add_argument("--top-p", type=float, default=1.0, metavar="P",
                            help="nucleus sampling: smallest set of tokens with probability P")
        parser.add_argument("--seed", type=int, metavar="S",
                            help="seed of the sampler (default: a fresh seed each run)")


def search_options(args: argparse.Namespace) -> SearchOptions:
    """The :class:`SearchOptions` the parsed options ask for.

    Raises:
        ValueError: on a bad value (checked by :class:`SearchOptions`).
    """
    common = {
        "max_length": args.max_length, "min_length": args.min_length,
        "allow_unk": args.allow_unk,
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


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"``: CUDA when available, else CPU; anything else as ``torch.device``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_run(args: argparse.Namespace) -> tuple[Seq2Seq, TextProcessor]:
    """The model (eval mode, on ``--device``) and TextProcessor of ``RUN_DIR``."""
    from padless.checkpoint import load_model

    model, text, _ = load_model(args.run_dir, args.checkpoint, resolve_device(args.device))
    return model, text


def make_generator(seed: int | None, device: torch.device) -> torch.Generator:
    """A sampling generator on ``device``: seeded, or freshly seeded when ``seed`` is None."""
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


def run_search(
    model: Seq2Seq,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    options: SearchOptions,
    *,
    generator: torch.Generator | None = None,
    return_attention: bool = False,
) -> SearchResult:
    """Run the search ``options.method`` names on ``src [S, B]``, ``src_lengths [B]``."""
    common = dict(
        bos_id=BOS_ID, eos_id=EOS_ID, max_length=options.max_length,
        min_length=options.min_length, banned_ids=() if options.allow_unk else (UNK_ID,),
        return_attention=return_attention,
    )
    if options.method == "greedy":
        return greedy_search(model, src, src_lengths, **common)
    if options.method == "beam":
        return beam_search(
            model, src, src_lengths, beam_size=options.beam_size, alpha=options.alpha,
            n_best=options.n_best, **common,
        )
    return sample_search(  # the only method left: SearchOptions checked it
        model, src, src_lengths, temperature=options.temperature, top_k=options.top_k,
        top_p=options.top_p, generator=generator, **common,
    )


def decode_ids(
    model: Seq2Seq,
    sources: Sequence[Sequence[int]],
    options: SearchOptions,
    *,
    batch_size: int = 64,
    generator: torch.Generator | None = None,
    progress: bool = False,
    return_attention: bool = False,
) -> list[list[Hypothesis]]:
    """Decode ``sources`` (id lists) in batches; ``result[i]`` is source ``i``'s n-best list.

    Sources are sorted by length so that each batch holds similar lengths (little padding
    and few steps spent on finished sentences). An empty source gets one empty hypothesis:
    there is nothing to encode. ``progress`` shows a tqdm bar (sentences) on stderr.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    device = next(model.parameters()).device
    results = [[Hypothesis([], 0.0, 0.0, False)] for _ in sources]  # kept for empty sources
    order = sorted((i for i, s in enumerate(sources) if len(s)), key=lambda i: len(sources[i]))
    with tqdm(total=len(order), unit="sent", file=sys.stderr, disable=not progress) as bar:
        for start in range(0, len(order), batch_size):
            indices = order[start : start + batch_size]
            src, lengths = pad_batch([sources[i] for i in indices], PAD_ID)
            result = run_search(
                model, src.to(device), lengths, options, generator=generator,
                return_attention=return_attention,
            )
            for i, nbest in zip(indices, result.hypotheses, strict=True):
                results[i] = nbest
            bar.update(len(indices))
    return results


def decode_texts(
    model: Seq2Seq,
    text: TextProcessor,
    lines: Sequence[str],
    options: SearchOptions,
    *,
    batch_size: int = 64,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> list[str]:
    """The best answer to each line, detokenised, in input order (see :func:`decode_ids`)."""
    sources = [text.encode(line) for line in lines]
    nbests = decode_ids(
        model, sources, options, batch_size=batch_size, generator=generator, progress=progress
    )
    return [text.decode(nbest[0].tokens) for nbest in nbests]
