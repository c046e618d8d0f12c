"""``padless quickstart`` end to end with a tiny model and a tiny time budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from padless.cli import main
from padless.commands.quickstart import reserve_minutes
from padless.decoding.metrics import has_repeated_ngram
from padless.runs.checkpoint import Checkpoint
from tests.helpers import TINY_RUN

QUICK = [*TINY_RUN, "train.valid_every=3", "train.log_every=1", "train.warmup_steps=0"]


@pytest.fixture()
def prepared(tmp_path: Path) -> Path:
    """A tiny prepared corpus (the bundled chitchat takes ~15 s to read; its reader has its
    own tests): quickstart reuses an already prepared --data-dir, as on a second run."""
    corpus = tmp_path / "pairs.tsv"
    pairs = [("hi", "hello !"), ("how are you ?", "fine , thanks ."),
             ("do you like music ?", "yes , jazz ."), ("where are you from ?", "from paris .")]
    lines = [f"{q} {i}\t{a}" for i in range(10) for q, a in pairs]
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    data_dir = tmp_path / "data"
    assert main(["prepare", str(corpus), "--format", "tsv", "--out", str(data_dir)]) == 0
    return data_dir


@pytest.mark.slow
@pytest.mark.parametrize(
    "config",
    [["--set=model.num_heads=2", "--set=model.ffn_size=32"], ["--config", "chatbot"]],
    ids=["transformer (default)", "chatbot"])
def test_quickstart_trains_evaluates_and_tells_how_to_chat(
    config: list[str], prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    argv = ["quickstart", "--minutes", "0.3", "--out", str(run_dir), "--data-dir",
            str(prepared), "--max-steps", "4", *(f"--set={kv}" for kv in QUICK), *config]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert (run_dir / "latest.pt").exists()
    arch = "gru" if "chatbot" in config else "transformer"
    assert Checkpoint.load(run_dir / "latest.pt").model_config().arch == arch
    assert "BLEU" in out and "perplexity" in out
    assert "> do you like music ?" in out and "beam 5:" in out
    assert f"padless chat {run_dir}" in out
    # the tiny corpus is not the chitchat corpus, and quickstart says so (it used to print
    # "preparing the chitchat corpus... already prepared")
    assert f"{prepared} holds {prepared.parent / 'pairs.tsv'}, not the chitchat corpus" in out
    assert "preparing the chitchat corpus" not in out
    # a 4-step model answers with random words, yet no answer shown repeats a 3-gram
    answers = [line.split(":", 1)[1].split() for line in out.splitlines()
               if line.strip().startswith(("greedy:", "beam 5:", "model:"))]
    assert len(answers) >= 10 and any(len(a) >= 6 for a in answers)  # 5 prompts x 2, samples
    assert not any(has_repeated_ngram(a, 3) for a in answers)


def test_the_budget_keeps_time_for_what_follows_training() -> None:
    assert reserve_minutes(5) == pytest.approx(0.75)
    assert reserve_minutes(60) == 2.0 and reserve_minutes(0.5) == 0.25
