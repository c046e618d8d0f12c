"""``padless chat RUN_DIR``: talk to a trained model.

At a terminal it is an interactive prompt with line editing and history (``readline``).
With stdin not a terminal it answers one line per input line, so it can be scripted::

    printf 'hello\\nhow are you?\\n' | padless chat runs/chatbot

Input goes through the run's own normalisation and tokenizer; unknown words become UNK and
the model still answers. ``quit`` (or Ctrl-D, or the end of the input) exits.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import torch

from padless.model import Seq2Seq
from padless.predict import (
    add_decoding_arguments,
    decode_ids,
    load_run,
    make_generator,
    search_options,
)
from padless.search import SearchOptions
from padless.text import TextProcessor

__all__ = ["add_arguments", "answer", "converse", "run"]

QUIT_WORDS = ("quit", "exit", ":q")
HISTORY_FILE = Path.home() / ".padless_history"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``padless chat``."""
    add_decoding_arguments(parser, sampling=True)
    parser.add_argument("--max-input-length", type=int, default=50, metavar="N",
                        help="longer inputs are cut to their first N tokens (default 50)")


def answer(
    model: Seq2Seq,
    text: TextProcessor,
    line: str,
    options: SearchOptions,
    *,
    max_input_length: int = 50,
    generator: torch.Generator | None = None,
) -> tuple[str | None, str | None]:
    """The model's reply to ``line`` and a notice for the user (both may be None).

    The reply is None when the input has no token at all (empty, or only characters the
    normaliser removes); the notice says so, or that a long input was truncated.
    """
    ids = text.encode(line)
    if not ids:
        return None, "(nothing to answer: say something, or `quit` to leave)"
    notice = None
    if len(ids) > max_input_length:
        notice = f"(input truncated to its first {max_input_length} of {len(ids)} tokens)"
        ids = ids[:max_input_length]
    (best, *_), = decode_ids(model, [ids], options, generator=generator)
    return text.decode(best.tokens), notice


def _terminal_lines() -> Iterator[str]:
    """Lines typed at the prompt, with readline's editing and a history kept across runs."""
    try:
        import readline  # importing it gives input() line editing and history
    except ImportError:  # not on every platform (e.g. Windows without pyreadline)
        readline = None
    if readline is not None:
        try:
            readline.read_history_file(HISTORY_FILE)
        except OSError:  # first run, or an unreadable file: start with an empty history
            pass
        readline.set_history_length(1000)
    try:
        while True:
            try:
                yield input("> ")
            except EOFError:  # Ctrl-D
                print()
                return
    finally:
        if readline is not None:
            try:
                readline.write_history_file(HISTORY_FILE)
            except OSError:  # a read-only home must not break the chat
                pass


def converse(
    model: Seq2Seq,
    text: TextProcessor,
    lines: Iterator[str] | TextIO,
    options: SearchOptions,
    *,
    max_input_length: int = 50,
    generator: torch.Generator | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    scripted: bool = False,
) -> int:
    """Answer each line until ``quit`` or the end of ``lines``; returns the lines answered.

    Replies go to ``out`` (default stdout). ``scripted``: write exactly one output line per
    input line (an empty one when there is nothing to answer) and notices to ``err`` (default
    stderr), so the output lines up with the input.
    """
    out, err = out or sys.stdout, err or sys.stderr
    answered = 0
    for raw in lines:
        line = raw.rstrip("\r\n")
        if line.strip().lower() in QUIT_WORDS:
            break
        reply, notice = answer(
            model, text, line, options, max_input_length=max_input_length, generator=generator
        )
        if notice is not None:
            print(notice, file=err if scripted else out, flush=True)
        if scripted:
            print(reply or "", file=out, flush=True)
        elif reply is not None:  # at a terminal, show that an empty answer is one
            print(reply or "(an empty answer)", file=out, flush=True)
        answered += 1
    return answered


def run(args: argparse.Namespace) -> int:
    """Chat until ``quit``; exit code 0, or 2 on a bad run directory or option."""
    try:
        options = search_options(args)
        if args.max_input_length < 1:
            raise ValueError(f"--max-input-length must be at least 1, got {args.max_input_length}")
        model, text = load_run(args)
    except ValueError as e:
        print(f"padless chat: {e}", file=sys.stderr)
        return 2
    device = next(model.parameters()).device
    generator = make_generator(getattr(args, "seed", None), device)
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"Talking to {args.run_dir} ({options.method} search). "
              "Type `quit` or press Ctrl-D to leave.")
    converse(
        model, text, _terminal_lines() if interactive else sys.stdin, options,
        max_input_length=args.max_input_length, generator=generator, scripted=not interactive,
    )
    return 0
