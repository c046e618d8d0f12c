"""A run directory written by padless's main of 2026-12-02 (version-1 checkpoints, a moving
average, kept checkpoints: ``tests/fixtures/run-v1``) still decodes, averages and resumes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from padless.cli import main
from padless.decoding.greedy import greedy_search
from padless.decoding.options import SearchOptions
from padless.masking import pad_batch
from padless.runs.checkpoint import Checkpoint
from padless.runs.directory import RunDirectory
from padless.runs.info import read_run_info
from padless.runs.kept import kept_checkpoints
from padless.runs.loading import load_model
from tests.helpers import write_reversal_dataset

FIXTURE = Path(__file__).parents[1] / "fixtures" / "run-v1"


@pytest.fixture()
def old_run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    return run


def test_its_checkpoints_read_as_version_2(old_run: Path) -> None:
    raw = torch.load(old_run / "latest.pt", weights_only=True)
    assert raw["version"] == 1 and raw["optimized"] is not None  # what main wrote
    latest = Checkpoint.load(old_run / "latest.pt")
    assert latest.step == raw["step"] == 5 and latest.state.best_step == 5
    assert latest.state.best_loss == raw["early_stopping"]["loss"]
    for name in raw["model"]:  # v1's model was the moving average, optimized the weights
        assert torch.equal(latest.ema_weights[name], raw["model"][name])
        assert torch.equal(latest.weights[name], raw["optimized"][name])
    assert not read_run_info(RunDirectory(old_run)).marked


def test_it_decodes_with_the_moving_average(old_run: Path) -> None:
    model, text, config = load_model(old_run, "best", device="cpu")
    raw = torch.load(old_run / "best.pt", weights_only=True)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, raw["model"][name])
    assert config.hidden_size == 8 and len(text.vocab) == model.vocab_size


def test_its_kept_checkpoints_average(old_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kept = kept_checkpoints(RunDirectory(old_run))
    assert [k.step for k in kept] == [4, 5]
    assert main(["average", str(old_run), "--best", "2"]) == 0
    out, err = capsys.readouterr()
    assert "averaged 2 checkpoints" in out and "reversal-data is gone: not scored" in err
    load_model(old_run, "averaged", device="cpu")


def test_it_resumes_and_is_then_marked_as_padless_s_own(
    old_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_reversal_dataset(tmp_path / "data", n_train=60)  # what it was trained on
    argv = ["train", "--data", str(data), "--out", str(old_run), "--resume", "--max-steps", "7"]
    assert main(argv) == 0
    assert "resumed" in capsys.readouterr().out
    latest = Checkpoint.load(old_run / "latest.pt")
    assert latest.step == 7 and latest.ema_weights is not None
    info = read_run_info(RunDirectory(old_run))
    assert info.marked and info.data_dir == str(data.resolve())
    assert main(["evaluate", str(old_run), "--limit", "2"]) == 0  # run.json's data now
    assert "BLEU" in capsys.readouterr().out


TRANSFORMER_RUN = Path(__file__).parents[1] / "fixtures" / "run-transformer-2026-12-06"


def test_a_transformer_run_of_main_before_the_pretrained_variants_decodes_as_it_did() -> None:
    """Written by main at 813e3a4 (before ModelConfig grew norm_position, activation,
    positions, embedding_scale and embedding_norm): the same log-probabilities (float64) and
    the same greedy answers as that main computed (``expected.json``)."""
    expected = json.loads((TRANSFORMER_RUN / "expected.json").read_text())
    model, _, config = load_model(TRANSFORMER_RUN, "best", device="cpu")
    assert (config.norm_position, config.positions, config.embedding_norm) == (
        "pre", "sinusoidal", "none")
    model = model.double()
    src, lengths = pad_batch(expected["sources"])
    state, prev = model.start_decoding(src, lengths), torch.full((3,), 1, dtype=torch.long)
    with torch.no_grad():
        for then in expected["log_probs"]:
            log_probs, state, _ = model.decode_step(prev, state)
            torch.testing.assert_close(log_probs, torch.tensor(then, dtype=torch.float64),
                                       rtol=0, atol=1e-12)
            prev = log_probs.argmax(-1)
        result = greedy_search(model, src, lengths, SearchOptions.plain(max_length=8))
    assert [h[0].tokens for h in result.hypotheses] == expected["greedy"]
