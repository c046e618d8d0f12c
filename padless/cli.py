"""The ``padless`` command: one subcommand per module of :mod:`padless.commands`.

:func:`main` is the boundary where a command runs, and the one place that turns expected
failures into one line on stderr and an exit code (``docs/reliability.md``): a
:class:`padless.runtime.errors.UserError` or an ``OSError`` exits 2, Ctrl-C 130, SIGTERM
143 (both unwind the command, so its temporaries are removed and its worker processes
ended), a closed output pipe 141 (as a process killed by SIGPIPE); anything else is a bug
and keeps its traceback (exit 1).
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from types import ModuleType
from typing import NoReturn

from padless.runtime.errors import UserError
from padless.runtime.threads import configure_threads

# subcommand -> one-line help; padless.commands.<subcommand> has add_arguments(parser) and
# run(args) -> int, and is imported only when needed
COMMANDS: dict[str, str] = {
    "demo": "the seed document's masked-loss example, done right",
    "prepare": "turn a corpus into splits, a vocabulary and metadata",
    "train": "train the seq2seq model on a prepared dataset",
    "chat": "talk to a trained model (interactive, or one answer per line)",
    "translate": "decode a file: one output line per input line",
    "evaluate": "loss, perplexity, BLEU, chrF, dialogue metrics and samples on a split",
    "score": "the model's log-probability of each source<TAB>target pair on stdin",
    "average": "average a run's kept checkpoints into averaged.pt",
    "export": "write a Transformer run as a CTranslate2 model",
    "import": "a Hugging Face seq2seq model folder (Marian, BART) as a padless run",
    "quickstart": "prepare, train, evaluate and try the default chatbot",
    "serve": "an HTTP API and a web chat page for a trained model",
}


# import names of the `app` extra's packages (pyproject.toml): the library needs none of them
APP_DEPENDENCIES = {"chitchat_dataset", "numpy", "yaml", "tqdm", "sacrebleu", "sentencepiece",
                    "matplotlib", "fastapi", "uvicorn", "zstandard"}


class _Parser(argparse.ArgumentParser):
    """argparse, with a bad option reported in one line and a pointer to ``--help`` (not
    the dozen lines of usage before it)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _command(name: str) -> ModuleType:
    return importlib.import_module(f"padless.commands.{name}")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (imports every subcommand module)."""
    parser = _Parser(
        prog="padless",
        description="Seq2seq training on variable-length batches where padding costs nothing.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        _command(name).add_arguments(sub_parser)
    return parser


def subcommand_parsers(parser: argparse.ArgumentParser | None = None,
                       ) -> dict[str, argparse.ArgumentParser]:
    """Each subcommand's parser, by name (of ``parser``, or of a new :func:`build_parser`)."""
    parser = parser or build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def describe_os_error(error: OSError) -> str:
    """``FILE: reason`` for an ``OSError`` (both files for a failed rename)."""
    reason = error.strerror or str(error) or type(error).__name__
    files = [f for f in (error.filename, error.filename2) if f is not None]
    return f"{' -> '.join(map(str, files))}: {reason}" if files else reason


class _NamedStream:
    """A stream whose write errors name it (``stdout: No space left on device``, for
    ``padless chat RUN > /dev/full``): a write's ``OSError`` names no file of its own."""

    def __init__(self, stream: object, name: str) -> None:
        self._stream, self._name = stream, name

    def __getattr__(self, attribute: str) -> object:
        return getattr(self._stream, attribute)

    def write(self, text: str) -> int:
        return self._named(self._stream.write, text)

    def flush(self) -> None:
        self._named(self._stream.flush)

    def _named(self, call, *args):
        try:
            return call(*args)
        except OSError as e:
            if e.filename is not None or e.errno is None:
                raise
            raise OSError(e.errno, e.strerror, self._name) from None  # BrokenPipe stays one


def _silence_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null: the flush at exit must not fail too."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout closed, replaced or not a file
        pass


class _Terminated(BaseException):
    """SIGTERM, raised where the command was (not Python's default of dying on the spot),
    so that it unwinds as for Ctrl-C. ``train`` and ``serve`` install their own handlers
    while they run (a clean stop: train saves first)."""


def _terminate(signum: int, frame: object) -> NoReturn:
    raise _Terminated


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    arguments = sys.argv[1:] if argv is None else argv
    # before any command imports torch; a server keeps a core for its event loop
    configure_threads(reserve=1 if arguments[:1] == ["serve"] else 0)
    name = "padless"
    real_stdout = sys.stdout
    if real_stdout is not None:
        sys.stdout = _NamedStream(real_stdout, "stdout")
    previous_sigterm = None
    if threading.current_thread() is threading.main_thread():  # where handlers may be set
        previous_sigterm = signal.signal(signal.SIGTERM, _terminate)
    try:
        try:
            parser = build_parser()
            args, unknown = parser.parse_known_args(arguments)
            if unknown:  # said by the subcommand's parser, whose options they are not
                subcommand_parsers(parser)[args.command].error(
                    f"unrecognized arguments: {' '.join(unknown)}")
        except SystemExit as e:  # argparse printed a usage error (2) or the help (0)
            return e.code if isinstance(e.code, int) else 2
        name = f"padless {args.command}"
        return _command(args.command).run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except _Terminated:
        print("terminated", file=sys.stderr)
        return 143
    except BrokenPipeError:  # the reader of our output is gone (`padless chat RUN | head`)
        _silence_stdout()
        return 141
    except UserError as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        if e.name is None or e.name.split(".")[0] not in APP_DEPENDENCIES:
            raise
        print(f"padless: the command needs the application's dependencies (missing: {e.name}); "
              "install them with: pip install 'padless[app]'", file=sys.stderr)
        return 2
    except OSError as e:  # a missing or unreadable file, a read-only directory, a full disk
        print(f"{name}: error: {describe_os_error(e)}", file=sys.stderr)
        return 2
    finally:
        sys.stdout = real_stdout
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)


if __name__ == "__main__":
    sys.exit(main())
