"""The ``padless`` command: one subcommand per module of :mod:`padless.commands`."""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType

# subcommand -> one-line help; padless.commands.<subcommand> has add_arguments(parser) and
# run(args) -> int, and is imported only when needed
COMMANDS: dict[str, str] = {
    "demo": "the seed document's masked-loss example, done right",
    "prepare": "turn a corpus into splits, a vocabulary and metadata",
    "train": "train the seq2seq model on a prepared dataset",
    "chat": "talk to a trained model (interactive, or one answer per line)",
    "translate": "decode a file: one output line per input line",
    "evaluate": "loss, perplexity, BLEU, chrF and samples on a split",
    "quickstart": "prepare, train, evaluate and try the default chatbot",
    "serve": "an HTTP API and a web chat page for a trained model",
}


# import names of the `app` extra's packages (pyproject.toml): the library needs none of them
APP_DEPENDENCIES = {"chitchat_dataset", "yaml", "tqdm", "sacrebleu", "sentencepiece",
                    "matplotlib", "fastapi", "uvicorn"}


def _command(name: str) -> ModuleType:
    return importlib.import_module(f"padless.commands.{name}")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (imports every subcommand module)."""
    parser = argparse.ArgumentParser(
        prog="padless",
        description="Seq2seq training on variable-length batches where padding costs nothing.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        _command(name).add_arguments(sub_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    try:
        args = build_parser().parse_args(argv)
        return _command(args.command).run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as e:
        if e.name is None or e.name.split(".")[0] not in APP_DEPENDENCIES:
            raise
        print(f"padless: the command needs the application's dependencies (missing: {e.name}); "
              "install them with: pip install 'padless[app]'", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
