"""The ``padless`` command: one subcommand per module, imported only when it runs."""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module with add_arguments(parser) and run(args) -> int, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("padless.demo", "the seed document's masked-loss example, done right"),
    "prepare": ("padless.prepare", "turn a corpus into splits, a vocabulary and metadata"),
    "train": ("padless.train", "train the seq2seq model on a prepared dataset"),
    "chat": ("padless.chat", "talk to a trained model (interactive, or one answer per line)"),
    "translate": ("padless.translate", "decode a file: one output line per input line"),
    "evaluate": ("padless.evaluate", "loss, perplexity, BLEU, chrF and samples on a split"),
    "quickstart": ("padless.quickstart", "prepare, train, evaluate and try the default chatbot"),
}


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (imports every subcommand module)."""
    parser = argparse.ArgumentParser(
        prog="padless",
        description="Seq2seq training on variable-length batches where padding costs nothing.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).add_arguments(sub_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    args = build_parser().parse_args(argv)
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return module.run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
