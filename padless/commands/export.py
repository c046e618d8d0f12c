"""``padless export RUN_DIR --format ctranslate2 --out DIR``: a run for another engine.

Writes a CTranslate2 model directory (with the run's tokenizer and vocabulary beside it)
that ``ctranslate2.Translator(DIR)`` loads; ``--quantization int8`` stores int8 weights. The
work is :func:`padless.runs.export.export_ctranslate2`; Transformer runs only.
"""

from __future__ import annotations

import argparse

from padless.runs.directory import CHECKPOINT_NAMES
from padless.runs.export import FORMATS, QUANTIZATIONS, export_ctranslate2

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``padless export``."""
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory of `padless train`")
    parser.add_argument("--format", choices=FORMATS, default="ctranslate2",
                        help="the engine to export for (default: ctranslate2)")
    parser.add_argument("--out", metavar="DIR", required=True, help="the directory to write")
    parser.add_argument("--checkpoint", choices=CHECKPOINT_NAMES, default="best",
                        help="which checkpoint of the run (default: best)")
    parser.add_argument("--quantization", choices=QUANTIZATIONS,
                        help="the weights' type in the exported model (default: float32; "
                        "CTranslate2 can also quantize when it loads: compute_type='int8')")
    parser.add_argument("--force", action="store_true", help="replace DIR if it exists")


def run(args: argparse.Namespace) -> int:
    """Export and report; exit code 0. A GRU run, an existing ``--out`` without ``--force``
    or a missing ctranslate2 package raise ``UserError`` (one line, exit 2)."""
    out = export_ctranslate2(args.run_dir, args.out, which=args.checkpoint,
                             quantization=args.quantization, force=args.force)
    weights = args.quantization or "float32"
    print(f"wrote {out} (CTranslate2, {weights} weights); load it with "
          f"ctranslate2.Translator({str(out)!r})")
    return 0
