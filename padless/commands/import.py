"""``padless import MODEL_DIR --out RUN_DIR``: a Hugging Face model folder as a padless run.

The work is :func:`padless.runs.importing.import_pretrained`; nothing is downloaded (fetch a
model yourself, e.g. ``huggingface-cli download Helsinki-NLP/opus-mt-en-fr --local-dir
opus-mt-en-fr``).
"""

from __future__ import annotations

import argparse

from padless.runs.importing import ARCHITECTURES, import_pretrained

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``padless import``."""
    parser.add_argument("model_dir", metavar="MODEL_DIR",
                        help="a local Hugging Face model folder (config.json, model.safetensors "
                             f"or pytorch_model.bin, the tokenizer's files) of a "
                             f"{', '.join(ARCHITECTURES)} model")
    parser.add_argument("--out", required=True, metavar="RUN_DIR",
                        help="the run directory to write (new or empty)")


def run(args: argparse.Namespace) -> int:
    """Import and say what came in; exit code 0 (bad input: one line, exit 2)."""
    imported = import_pretrained(args.model_dir, args.out)
    config = imported.config
    print(f"imported {imported.model_type} from {args.model_dir} into {args.out}: "
          f"{imported.parameters:,} parameters, {config.num_layers}+{config.num_layers} layers "
          f"of {config.hidden_size}, a vocabulary of {imported.vocab_size:,}")
    print(f"try it: echo 'Hello, world!' | padless translate {args.out}")
    return 0
