"""``padless quickstart [--minutes M]``: a working chatbot from a fresh install, in one command.

:func:`quickstart` prepares the bundled chitchat corpus, trains the ``transformer`` config
(or ``--config``; :data:`DEFAULT_CONFIG` says why) for the time left of the budget (with its
progress bar), evaluates the best checkpoint on part of the test split, shows a few
conversations and a summary, and prints the ``padless chat`` command to talk to the model.
Running it again with the same ``--out`` resumes the training for another budget.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from padless.commands.inputs import integer, number
from padless.commands.prepare import format_summary
from padless.commands.train import describe_result
from padless.data.dataset import METADATA_FILE, PreparedData
from padless.data.options import PrepareOptions
from padless.data.prepare import prepare
from padless.data.text import TextProcessor
from padless.decoding.batched import reply
from padless.decoding.evaluation import Evaluation, evaluate
from padless.decoding.options import SearchOptions
from padless.models import EncoderDecoder
from padless.models.decoding_setup import for_decoding
from padless.runs.checkpoint import Checkpoint
from padless.runs.directory import RunDirectory
from padless.runs.kept import kept_checkpoints
from padless.runs.loading import load_model
from padless.runtime.devices import resolve_device
from padless.training.config import bundled_configs, load_config, resumed_config
from padless.training.trainer import train

__all__ = ["PROMPTS", "add_arguments", "quickstart", "run"]

PROMPTS = [
    "hi , how are you ?",
    "what are you doing this weekend ?",
    "do you like music ?",
    "where are you from ?",
    "what is your favourite food ?",
]
EVAL_PAIRS = 500  # test pairs evaluated at most: a rough BLEU in seconds on a CPU
CONVERSATION_SECONDS = 20.0  # kept for the conversations and the summary after evaluating
VALID_PAIRS = 1000  # validation pairs the training checks: picks the best checkpoint in seconds
# Prepared for a short CPU run: words seen fewer than 3 times become UNK (a ~10k vocabulary
# instead of ~38k, so a smaller output layer) and pairs longer than 20 tokens are left out.
PREPARE_OPTIONS = PrepareOptions(min_count=3, max_length=20)
# The Transformer: at equal training time on this corpus (bench_quality, quickstart data, one
# thread each) its validation loss was below the GRU chatbot's at every mark up to 30 minutes;
# see benchmarks/RESULTS.md.
DEFAULT_CONFIG = "transformer"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``padless quickstart`` (and hidden ones that make tests fast)."""
    parser.add_argument("--minutes", type=number(0, open_min=True), default=5.0, metavar="M",
                        help="the whole budget in minutes, most of it training (default 5)")
    parser.add_argument("--out", default="runs/quickstart", metavar="RUN_DIR",
                        help="run directory (default runs/quickstart); an existing run resumes")
    parser.add_argument("--data-dir", default="data/chitchat", metavar="DIR",
                        help="where the prepared corpus goes (default data/chitchat; reused "
                             "when already prepared)")
    parser.add_argument("--config", default=DEFAULT_CONFIG, metavar="NAME|FILE",
                        help=f"bundled config ({', '.join(bundled_configs())}) or a YAML file "
                             f"(default {DEFAULT_CONFIG}; a resumed run keeps its own)")
    # for tests and experiments: a smaller corpus, model or run
    parser.add_argument("--max-pairs", type=integer(1), help=argparse.SUPPRESS)
    parser.add_argument("--set", action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--max-steps", type=integer(1), help=argparse.SUPPRESS)


def _banner(text: str) -> None:
    print(f"\n== {text} ==", flush=True)


def quickstart(
    minutes: float = 5.0,
    run_dir: str | Path = "runs/quickstart",
    data_dir: str | Path = "data/chitchat",
    *,
    config: str = DEFAULT_CONFIG,
    max_pairs: int | None = None,
    overrides: list[str] = (),
    max_steps: int | None = None,
) -> int:
    """Prepare, train, evaluate and converse within ``minutes``, printing as it goes.

    Args:
        minutes: the whole budget, kept also on a busy machine: training gets what preparing
            leaves minus a reserve (:func:`reserve_minutes`) for the final validation, the
            evaluation and the conversations; the evaluation decodes what the time left
            allows (up to ``EVAL_PAIRS`` test pairs).
        run_dir: the run; an existing one is resumed for another budget.
        data_dir: the prepared chitchat corpus; reused when already prepared.
        config: the bundled config name or YAML file of a new run (``"chatbot"`` trains the
            tutorial's GRU); a resumed run keeps its own ``config.yaml``.
        max_pairs, overrides, max_steps: a smaller corpus (``PrepareOptions.max_pairs``),
            ``--set`` config overrides and a step limit, for tests and experiments.

    Returns:
        The exit code: 0, or the training's ``128 + signal`` if a signal stopped it.
    """
    start = time.monotonic()
    deadline = start + minutes * 60
    data_dir, run_dir = Path(data_dir), Path(run_dir)

    if (data_dir / METADATA_FILE).exists():
        data = PreparedData.load(data_dir)
        corpus = data.metadata.get("corpus")
        _banner(f"1/4 using the dataset already prepared in {data_dir}")
        if corpus == ["chitchat"]:
            print(f"the chitchat corpus, prepared before (delete {data_dir} to prepare again)")
        else:  # another corpus: say so, rather than call it the chitchat corpus
            print(f"note: {data_dir} holds {', '.join(map(str, corpus or ['an unknown corpus']))}"
                  f", not the chitchat corpus; quickstart trains on it")
    else:
        _banner(f"1/4 preparing the chitchat corpus into {data_dir}")
        options = replace(PREPARE_OPTIONS, max_pairs=max_pairs)
        print(format_summary(prepare(["chitchat"], data_dir, options), data_dir))
        data = PreparedData.load(data_dir)

    spent = (time.monotonic() - start) / 60
    train_minutes = max(0.05, minutes - spent - reserve_minutes(minutes))
    run = RunDirectory(run_dir)
    resume = run.latest.exists()
    _banner(f"2/4 {'resuming' if resume else 'training'} the chatbot in {run_dir} for "
            f"{train_minutes:.1f} min")
    overrides = [*overrides, f"train.max_time={train_minutes:.3f}"]
    if max_steps is not None:
        overrides.append(f"train.max_steps={max_steps}")
    run_config = resumed_config(run_dir, overrides) if resume else load_config(config, overrides)
    splits = {**data.splits, "valid": data.splits["valid"][:VALID_PAIRS]}
    result = train(run_config, data.text, splits, run_dir, resume=resume, data_dir=data_dir)
    print(describe_result(result, run_dir))
    if result.exit_code != 0:
        return result.exit_code

    _banner("3/4 evaluating the best checkpoint")
    which = "best" if run.best.exists() else "latest"
    model, text, _ = load_model(run_dir, which, resolve_device())
    print(for_decoding(model, "auto").describe())  # cast in place
    pairs = data.splits["test"][:EVAL_PAIRS]
    left = deadline - time.monotonic() - CONVERSATION_SECONDS
    evaluation = evaluate(model, text, pairs, SearchOptions(), split=f"test ({len(pairs)} pairs)",
                          n_samples=3, max_seconds=max(0.0, left))
    print(evaluation.report())

    _show_conversations(model, text)
    _show_summary(run_dir, data_dir, which, evaluation, start)
    return 0


def reserve_minutes(minutes: float) -> float:
    """Minutes of a ``minutes`` budget kept from training for what follows it: the final
    validation, loading the best checkpoint, the evaluation and the conversations (15 %,
    within 0.5 to 2 minutes: on a busy machine each takes longer)."""
    return min(2.0, max(0.5, 0.15 * minutes), 0.5 * minutes)


def _show_conversations(model: EncoderDecoder, text: TextProcessor) -> None:
    _banner("4/4 a few conversations (greedy | beam 5)")
    beam = SearchOptions(method="beam", beam_size=5)
    for prompt in PROMPTS:
        print(f"> {prompt}")
        print(f"  greedy: {reply(model, text, prompt, SearchOptions()).text}")
        print(f"  beam 5: {reply(model, text, prompt, beam).text}")


def _show_summary(
    run_dir: Path, data_dir: Path, which: str, evaluation: Evaluation, start: float
) -> None:
    run = RunDirectory(run_dir)
    checkpoint = Checkpoint.load(run.checkpoint(which), mmap=True)
    _banner("summary")
    print(f"trained {checkpoint.step} steps in {checkpoint.state.train_time_s / 60:.1f} min "
          f"(checkpoint `{which}`); test loss {evaluation.loss:.3f} per token, perplexity "
          f"{evaluation.perplexity:.1f}, BLEU {evaluation.bleu:.2f}, chrF {evaluation.chrf:.2f}")
    print(f"whole quickstart: {(time.monotonic() - start) / 60:.1f} min; run directory {run_dir}")
    print(f"\nTalk to it:      padless chat {run_dir}        (add --beam 5, or --sample)")
    print(f"Train it longer: padless quickstart --out {run_dir} --data-dir {data_dir} "
          "--minutes 30")
    if len(kept_checkpoints(run)) >= 3:
        print(f"Average its 3 best checkpoints: padless average {run_dir} --best 3, then "
              f"padless chat {run_dir} --checkpoint averaged")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``padless quickstart``: its exit code.

    A corpus, config or checkpoint problem raises ``UserError``, which ``padless.cli.main``
    reports in one line (exit 2).
    """
    return quickstart(args.minutes, args.out, args.data_dir, config=args.config,
                      max_pairs=args.max_pairs, overrides=args.set, max_steps=args.max_steps)
