"""Kept checkpoints (train.keep_best / keep_last) and their average (`padless average`)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from padless.cli import main
from padless.data.dataset import PreparedData
from padless.training.averaging import average_run
from padless.training.checkpoint import (
    Checkpoint,
    average_checkpoints,
    keep_checkpoint,
    kept_checkpoints,
    load_model,
)
from padless.training.config import load_config
from padless.training.trainer import train
from tests.helpers import TINY


def valid_losses(run_dir: Path) -> dict[int, float]:
    with open(run_dir / "log.csv", newline="") as f:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(f) if r["kind"] == "valid"}


@pytest.fixture(scope="module")
def kept_run(reversal_data: PreparedData, reversal_data_dir: Path,
             tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("kept") / "run"
    config = load_config(None, [*TINY, "train.max_steps=8", "train.valid_every=1",
                                "train.keep_best=3", "train.keep_last=2", "train.lr=3e-2"])
    train(config, reversal_data.text, reversal_data.splits, run_dir, data_dir=reversal_data_dir)
    return run_dir


def test_the_run_keeps_the_best_and_the_last_validations(kept_run: Path) -> None:
    losses = valid_losses(kept_run)
    assert sorted(losses) == list(range(1, 9))
    best = sorted(losses, key=lambda s: (losses[s], -s))[:3]
    expected = sorted(set(best) | {7, 8})
    kept = kept_checkpoints(kept_run)
    assert [k.step for k in kept] == expected
    assert sorted(p.name for p in (kept_run / "checkpoints").glob("*.pt")) == [
        f"step-{s:08d}.pt" for s in expected]
    for k in kept:
        assert k.loss == pytest.approx(losses[k.step], rel=1e-5)
        checkpoint = Checkpoint.load(k.path)
        assert checkpoint.step == k.step and checkpoint.optimizer is None  # weights only


def test_average_is_the_float64_mean_of_the_weights(kept_run: Path) -> None:
    paths = [k.path for k in kept_checkpoints(kept_run)[:3]]
    averaged = average_checkpoints(paths)
    states = [Checkpoint.load(p).model for p in paths]
    for name, tensor in averaged.model.items():
        expected = sum(s[name].double() for s in states) / 3
        assert tensor.dtype == states[0][name].dtype
        torch.testing.assert_close(tensor.double(), expected, atol=1e-6, rtol=0)
    assert averaged.step == max(Checkpoint.load(p).step for p in paths)


def test_checkpoints_of_another_model_are_not_averaged(
    kept_run: Path, reversal_data: PreparedData, tmp_path: Path
) -> None:
    other = load_config(None, [*TINY, "model.hidden_size=8", "model.embedding_size=8",
                               "train.max_steps=1"])
    train(other, reversal_data.text, reversal_data.splits, tmp_path)
    with pytest.raises(ValueError, match="only checkpoints of one run") as caught:
        average_checkpoints([kept_checkpoints(kept_run)[0].path, tmp_path / "latest.pt"])
    assert str(caught.value).startswith(str(tmp_path / "latest.pt"))


def test_a_resumed_run_forgets_kept_checkpoints_from_after_its_start(
    kept_run: Path, tmp_path: Path
) -> None:
    checkpoint = Checkpoint.load(kept_checkpoints(kept_run)[0].path)
    for step, loss in ((1, 3.0), (2, 2.0), (3, 1.0)):
        keep_checkpoint(tmp_path, Checkpoint(**{**checkpoint.__dict__, "step": step,
                                                 "valid": {"loss": loss}}),
                        keep_best=5, keep_last=0)
    keep_checkpoint(tmp_path, Checkpoint(**{**checkpoint.__dict__, "step": 2,
                                             "valid": {"loss": 2.5}}), keep_best=5, keep_last=0)
    assert [(k.step, k.loss) for k in kept_checkpoints(tmp_path)] == [(1, 3.0), (2, 2.5)]
    assert not (tmp_path / "checkpoints" / "step-00000003.pt").exists()


def test_padless_average_writes_a_checkpoint_every_command_loads(
    qa_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    assert main(["train", "--data", str(qa_data_dir), "--out", str(run_dir), "--max-steps", "4",
                 *(f"--set={kv}" for kv in TINY), "--set", "train.valid_every=1",
                 "--set", "train.keep_best=2"]) == 0
    capsys.readouterr()
    assert main(["average", str(run_dir), "--best", "2"]) == 0
    out = capsys.readouterr().out
    assert "averaged 2 checkpoints" in out and "best single checkpoint" in out
    averaged = Checkpoint.load(run_dir / "averaged.pt")
    result = average_run(run_dir, best=2, out=tmp_path / "again.pt")
    assert averaged.valid["loss"] == pytest.approx(result.valid_loss)
    model, _, _ = load_model(run_dir, "averaged")
    assert not model.training

    assert main(["evaluate", str(run_dir), "--checkpoint", "averaged", "--limit", "2"]) == 0
    assert "BLEU" in capsys.readouterr().out

    assert main(["average", str(run_dir), "--last", "5"]) == 2
    err = capsys.readouterr().err
    assert "--last 5 needs 5" in err and "train.keep_last=5" in err and "\n" == err[-1]
    assert err.count("\n") == 1
