"""``model.arch=transformer`` through the commands: train, resume, translate, chat, evaluate."""

from __future__ import annotations

from pathlib import Path

import pytest

from padless.cli import main
from padless.decoding.batched import decode_texts
from padless.decoding.options import SearchOptions
from padless.models.transformer import Transformer
from padless.runs.checkpoint import Checkpoint
from padless.runs.loading import load_model
from tests.helpers import AS_TRANSFORMER, TINY_RUN, run_cli

pytestmark = pytest.mark.slow  # trains a model twice (about 15 s on a busy machine)

TRANSFORMER = [*TINY_RUN, *AS_TRANSFORMER, "train.valid_every=2"]
LINES = ["what is your name ?", "hi", "", "where do you live today my friend ?", "unknownword"]


@pytest.fixture(scope="module")
def transformer_run(qa_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Transformer trained 3 steps by `padless train`, then resumed to 4."""
    run_dir = tmp_path_factory.mktemp("transformer") / "run"
    argv = ["train", "--data", str(qa_data_dir), "--out", str(run_dir),
            *(f"--set={kv}" for kv in TRANSFORMER)]
    assert main([*argv, "--max-steps", "3"]) == 0
    assert main([*argv, "--max-steps", "4", "--resume"]) == 0
    return run_dir


def test_train_writes_a_transformer_checkpoint_that_resumes(transformer_run: Path) -> None:
    checkpoint = Checkpoint.load(transformer_run / "latest.pt")
    assert checkpoint.step == 4 and checkpoint.valid is not None
    assert checkpoint.model_config().arch == "transformer"
    model, _, _ = load_model(transformer_run, "latest", device="cpu")
    assert isinstance(model, Transformer) and not model.training


@pytest.mark.parametrize("search", [[], ["--beam", "3"]], ids=["greedy", "beam"])
def test_translate_decodes_with_greedy_and_beam_search(
    transformer_run: Path, search: list[str], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["translate", str(transformer_run), "--batch-size", "2", "--max-length", "8",
            "--device", "cpu", *search]
    code, out, _ = run_cli(argv, "\n".join(LINES) + "\n", monkeypatch, capsys)
    assert code == 0
    model, text, _ = load_model(transformer_run, device="cpu")
    options = SearchOptions(method="beam" if search else "greedy", beam_size=3, max_length=8)
    alone = [decode_texts(model, text, [line], options)[0] for line in LINES]
    assert out.splitlines() == alone  # batched, length-sorted: the same as one at a time
    assert len(out.splitlines()) == len(LINES) and out.splitlines()[2] == ""


def test_chat_and_evaluate_with_the_attention_plot(
    transformer_run: Path, qa_data_dir: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run_cli(["chat", str(transformer_run), "--beam", "2", "--max-length", "6"],
                           "hello there\nhow are you ?\n", monkeypatch, capsys)
    assert code == 0 and len(out.splitlines()) == 2
    png = tmp_path / "attention.png"
    code, out, _ = run_cli(["evaluate", str(transformer_run), "--data", str(qa_data_dir),
                            "--limit", "4", "--attention-plot", str(png)], "", monkeypatch,
                           capsys)
    assert code == 0 and "BLEU" in out and "perplexity" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_teacher_forcing_below_one_is_refused_in_one_line(
    qa_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--data", str(qa_data_dir), "--out", str(tmp_path / "run"),
            *(f"--set={kv}" for kv in TRANSFORMER), "--set", "train.teacher_forcing_ratio=0.5"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "train.teacher_forcing_ratio" in err and "1.0" in err
