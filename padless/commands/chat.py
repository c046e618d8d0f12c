"""``padless chat RUN_DIR``: talk to a trained model.

At a terminal it is an interactive prompt with line editing and history (``readline``).
With stdin not a terminal it answers one line per input line, so it can be scripted::

    printf 'hello\\nhow are you?\\n' | padless chat runs/chatbot

Input goes through the run's own normalisation and tokenizer; unknown words become UNK and
the model still answers. At the prompt ``quit`` (or Ctrl-D) exits; scripted, every line is
answered (``quit`` too) until the end of the input. The answers come from
:func:`padless.decoding.batched.reply`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TextIO

import torch

from padless.commands.inputs import integer, stdin_lines
from padless.commands.options import add_decoding_arguments, load_run, search_options
from padless.data.text import TextProcessor
from padless.decoding.batched import make_generator, reply
from padless.decoding.options import SearchOptions
from padless.models import EncoderDecoder

__all__ = ["add_arguments", "converse", "run"]

QUIT_WORDS = ("quit", "exit", ":q")  # at the prompt only: in a script every line is data
HISTORY_FILE = Path.home() / ".padless_history"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``padless chat``."""
    add_decoding_arguments(parser, sampling=True)
    parser.add_argument("--max-input-length", type=integer(1), default=50, metavar="N",
                        help="longer inputs are cut to their first N tokens (default 50)")


def _terminal_lines() -> Iterator[str]:
    """Lines typed at the prompt, with readline's editing and a history kept across runs."""
    try:
        import readline  # importing it gives input() line editing and history
    except ImportError:  # not on every platform (e.g. Windows without pyreadline)
        readline = None
    loaded = load_history(readline, HISTORY_FILE) if readline is not None else 0
    try:
        while True:
            try:
                yield input("> ")
            except EOFError:  # Ctrl-D
                print()
                return
            except UnicodeDecodeError:  # bytes the terminal's encoding cannot read
                print("(that line is not text in your terminal's encoding; try again)")
    finally:
        if readline is not None:
            save_history(readline, HISTORY_FILE, loaded)


HISTORY_LENGTH = 1000


def load_history(readline: ModuleType, path: Path) -> int:
    """Read ``path`` into readline's history; returns how many entries it then holds."""
    try:
        readline.read_history_file(path)
    except OSError:  # first run, or an unreadable file: start with an empty history
        pass
    readline.set_history_length(HISTORY_LENGTH)
    return readline.get_current_history_length()


def save_history(readline: ModuleType, path: Path, loaded: int) -> None:
    """Append the entries typed since :func:`load_history` to ``path`` (kept to the last
    ``HISTORY_LENGTH``). Appending, not rewriting: two chats at once both keep their lines."""
    try:
        path.touch(exist_ok=True)  # readline appends only to a file that exists
        typed = readline.get_current_history_length() - loaded
        readline.append_history_file(max(0, typed), path)
    except OSError:  # a read-only home must not break the chat
        pass


def converse(
    model: EncoderDecoder,
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
    """Answer each line until the end of ``lines``; returns the lines answered.

    Replies go to ``out`` (default stdout). ``scripted``: write exactly one output line per
    input line (an empty one when there is nothing to answer), every line included, and
    notices to ``err`` (default stderr), so the output lines up with the input. Otherwise
    (at the prompt) a line ``quit``, ``exit`` or ``:q`` ends the conversation.
    """
    out, err = out or sys.stdout, err or sys.stderr
    answered = 0
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not scripted and line.strip().lower() in QUIT_WORDS:
            break
        shown = _Shown(out) if not scripted else None  # at a terminal: words as they come
        answer = reply(model, text, line, options, max_input_length=max_input_length,
                       generator=generator, on_text=None if shown is None else shown.update)
        if answer.notice is not None:
            print(answer.notice, file=err if scripted else out, flush=True)
        if scripted:
            print(answer.text or "", file=out, flush=True)
        elif answer.text is not None:  # at a terminal, show that an empty answer is one
            shown.finish(answer.text or "(an empty answer)")
        answered += 1
    return answered


class _Shown:
    """An answer written to a terminal as it grows: each update prints what is new."""

    def __init__(self, out: TextIO) -> None:
        self.out, self.text = out, ""

    def update(self, text: str) -> None:
        if text.startswith(self.text):
            self.out.write(text[len(self.text):])
        else:  # detokenising more changed what was shown (rare): show it anew
            self.out.write("\r" + text)
        self.out.flush()
        self.text = text

    def finish(self, text: str) -> None:
        """The whole answer shown, and the line ended."""
        self.update(text)
        self.out.write("\n")
        self.out.flush()


def run(args: argparse.Namespace) -> int:
    """Chat until ``quit`` or the end of the input; exit code 0.

    A bad option, run directory or input raises ``UserError``, which ``padless.cli.main``
    reports in one line (exit 2).
    """
    options = search_options(args)
    interactive = sys.stdin is not None and sys.stdin.isatty()
    lines = _terminal_lines() if interactive else stdin_lines()
    model, text = load_run(args)
    generator = make_generator(getattr(args, "seed", None), model.device)
    if interactive:
        print(f"Talking to {args.run_dir} ({options.method} search). "
              "Type `quit` or press Ctrl-D to leave.")
    converse(
        model, text, lines, options,
        max_input_length=args.max_input_length, generator=generator, scripted=not interactive,
    )
    return 0
