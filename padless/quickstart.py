"""``padless quickstart [--minutes M]``: a working chatbot from a fresh install, in one command.

It runs the other commands in turn: ``padless prepare chitchat`` (the bundled corpus),
``padless train --config chatbot`` for the time left of the budget (with its progress bar),
then evaluates the best checkpoint on part of the test split, shows a few conversations and
a summary, and prints the ``padless chat`` command to talk to the model. Running it again
with the same ``--out`` resumes the training for another budget.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from padless.chat import answer
from padless.checkpoint import checkpoint_path, load_checkpoint, load_model
from padless.cli import main as padless_main
from padless.dataset import PreparedData
from padless.evaluate import evaluate
from padless.predict import resolve_device
from padless.search import SearchOptions

__all__ = ["PROMPTS", "add_arguments", "run"]

PROMPTS = [
    "hi , how are you ?",
    "what are you doing this weekend ?",
    "do you like music ?",
    "where are you from ?",
    "what is your favourite food ?",
]
EVAL_PAIRS = 500  # test pairs evaluated: a rough BLEU in seconds on a CPU
# Prepared for a short CPU run: words seen fewer than 3 times become UNK (a ~10k vocabulary
# instead of ~38k, so a smaller output layer) and pairs longer than 20 tokens are left out.
PREPARE_OPTIONS = ["--min-count", "3", "--max-length", "20"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``padless quickstart`` (and hidden ones that make tests fast)."""
    parser.add_argument("--minutes", type=float, default=5.0, metavar="M",
                        help="the whole budget in minutes, most of it training (default 5)")
    parser.add_argument("--out", default="runs/quickstart", metavar="RUN_DIR",
                        help="run directory (default runs/quickstart); an existing run resumes")
    parser.add_argument("--data-dir", default="data/chitchat", metavar="DIR",
                        help="where the prepared corpus goes (default data/chitchat; reused "
                             "when already prepared)")
    # for tests and experiments: a smaller corpus, model or run
    parser.add_argument("--max-pairs", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--set", action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--max-steps", type=int, help=argparse.SUPPRESS)


def _banner(text: str) -> None:
    print(f"\n== {text} ==", flush=True)


def run(args: argparse.Namespace) -> int:
    """Prepare, train, evaluate, converse; exit code 0, or that of the step that failed."""
    if args.minutes <= 0:
        print(f"padless quickstart: --minutes must be > 0, got {args.minutes}", file=sys.stderr)
        return 2
    start = time.monotonic()
    data_dir, run_dir = Path(args.data_dir), Path(args.out)

    _banner(f"1/4 preparing the chitchat corpus into {data_dir}")
    if (data_dir / "metadata.json").exists():
        print(f"already prepared: {data_dir} (delete it to prepare again)")
    else:
        extra = [] if args.max_pairs is None else ["--max-pairs", str(args.max_pairs)]
        code = padless_main(["prepare", "chitchat", "--out", str(data_dir),
                             *PREPARE_OPTIONS, *extra])
        if code != 0:
            return code

    # leave a fifth of the budget (at most 2 minutes) for the trainer's final validation,
    # the evaluation and the samples, which --max-time does not count
    spent = (time.monotonic() - start) / 60
    train_minutes = max(0.05, args.minutes - spent - min(2.0, 0.2 * args.minutes))
    resume = checkpoint_path(run_dir, "latest").exists()
    _banner(f"2/4 {'resuming' if resume else 'training'} the chatbot in {run_dir} for "
            f"{train_minutes:.1f} min")
    argv = ["train", "--data", str(data_dir), "--out", str(run_dir),
            "--max-time", f"{train_minutes:.3f}"]
    argv += ["--resume"] if resume else ["--config", "chatbot"]
    argv += [f"--set={kv}" for kv in args.set]
    if args.max_steps is not None:
        argv += ["--max-steps", str(args.max_steps)]
    code = padless_main(argv)
    if code != 0:
        return code

    _banner("3/4 evaluating the best checkpoint")
    which = "best" if checkpoint_path(run_dir, "best").exists() else "latest"
    model, text, _ = load_model(run_dir, which, resolve_device())
    pairs = PreparedData.load(data_dir).splits["test"][:EVAL_PAIRS]
    result = evaluate(model, text, pairs, SearchOptions(), split=f"test ({len(pairs)} pairs)",
                      n_samples=3)
    print(result.report())

    _banner("4/4 a few conversations (greedy | beam 5)")
    beam = SearchOptions(method="beam", beam_size=5)
    for prompt in PROMPTS:
        print(f"> {prompt}")
        print(f"  greedy: {answer(model, text, prompt, SearchOptions())[0]}")
        print(f"  beam 5: {answer(model, text, prompt, beam)[0]}")

    state = load_checkpoint(checkpoint_path(run_dir, which))
    _banner("summary")
    print(f"trained {state['step']} steps in {state['train_time_s'] / 60:.1f} min "
          f"(checkpoint `{which}`); test loss {result.loss:.3f} per token, perplexity "
          f"{result.perplexity:.1f}, BLEU {result.bleu:.2f}, chrF {result.chrf:.2f}")
    print(f"whole quickstart: {(time.monotonic() - start) / 60:.1f} min; run directory {run_dir}")
    print(f"\nTalk to it:      padless chat {run_dir}        (add --beam 5, or --sample)")
    print(f"Train it longer: padless quickstart --out {run_dir} --data-dir {data_dir} "
          "--minutes 30")
    return 0
