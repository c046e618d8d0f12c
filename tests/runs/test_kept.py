"""Kept checkpoints (train.keep_best / keep_last) and their average (`padless average`)."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from padless.cli import main
from padless.data.dataset import PreparedData
from padless.runs.averaging import average_run
from padless.runs.checkpoint import Checkpoint
from padless.runs.directory import RunDirectory
from padless.runs.kept import average_checkpoints, keep_checkpoint, kept_checkpoints
from padless.runs.loading import load_model
from padless.training.config import load_config
from padless.training.trainer import train
from tests.helpers import TINY_TRAIN


def valid_losses(run_dir: Path) -> dict[int, float]:
    with open(run_dir / "log.csv", newline="") as f:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(f) if r["kind"] == "valid"}


@pytest.fixture(scope="module")
def kept_run(reversal_data: PreparedData, reversal_data_dir: Path,
             tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("kept") / "run"
    config = load_config(None, [*TINY_TRAIN, "train.max_steps=8", "train.valid_every=1",
                                "train.keep_best=3", "train.keep_last=2", "train.lr=3e-2"])
    train(config, reversal_data.text, reversal_data.splits, run_dir, data_dir=reversal_data_dir)
    return run_dir


def test_the_run_keeps_the_best_and_the_last_validations(kept_run: Path) -> None:
    losses = valid_losses(kept_run)
    assert sorted(losses) == list(range(1, 9))
    best = sorted(losses, key=lambda s: (losses[s], -s))[:3]
    expected = sorted(set(best) | {7, 8})
    kept = kept_checkpoints(RunDirectory(kept_run))
    assert [k.step for k in kept] == expected
    assert sorted(p.name for p in (kept_run / "checkpoints").glob("*.pt")) == [
        f"step-{s:08d}.pt" for s in expected]
    for k in kept:
        assert k.loss == pytest.approx(losses[k.step], rel=1e-5)
        checkpoint = Checkpoint.load(k.path)
        assert checkpoint.step == k.step and checkpoint.optimizer is None  # weights only


def test_average_is_the_float64_mean_of_the_weights(kept_run: Path) -> None:
    paths = [k.path for k in kept_checkpoints(RunDirectory(kept_run))[:3]]
    averaged = average_checkpoints(paths)
    states = [Checkpoint.load(p).decoding_weights for p in paths]
    assert averaged.ema_weights is None
    for name, tensor in averaged.weights.items():
        expected = sum(s[name].double() for s in states) / 3
        assert tensor.dtype == states[0][name].dtype
        torch.testing.assert_close(tensor.double(), expected, atol=1e-6, rtol=0)
    assert averaged.step == max(Checkpoint.load(p).step for p in paths)


def test_checkpoints_of_another_model_are_not_averaged(
    kept_run: Path, reversal_data: PreparedData, tmp_path: Path
) -> None:
    other = load_config(None, [*TINY_TRAIN, "model.hidden_size=8", "model.embedding_size=8",
                               "train.max_steps=1"])
    train(other, reversal_data.text, reversal_data.splits, tmp_path)
    with pytest.raises(ValueError, match="only checkpoints of one run") as caught:
        average_checkpoints([kept_checkpoints(RunDirectory(kept_run))[0].path,
                             tmp_path / "latest.pt"])
    assert str(caught.value).startswith(str(tmp_path / "latest.pt"))


def test_a_resumed_run_forgets_kept_checkpoints_from_after_its_start(
    kept_run: Path, tmp_path: Path
) -> None:
    run = RunDirectory(tmp_path)
    checkpoint = Checkpoint.load(kept_checkpoints(RunDirectory(kept_run))[0].path)
    for step, loss in ((1, 3.0), (2, 2.0), (3, 1.0)):
        keep_checkpoint(run, at_step(checkpoint, step, loss), keep_best=5, keep_last=0)
    keep_checkpoint(run, at_step(checkpoint, 2, 2.5), keep_best=5, keep_last=0)
    assert [(k.step, k.loss) for k in kept_checkpoints(run)] == [(1, 3.0), (2, 2.5)]
    assert not (tmp_path / "checkpoints" / "step-00000003.pt").exists()


def at_step(checkpoint: Checkpoint, step: int, loss: float) -> Checkpoint:
    return replace(checkpoint, state=replace(checkpoint.state, step=step), valid={"loss": loss})


def test_only_the_files_it_kept_are_deleted(kept_run: Path, tmp_path: Path) -> None:
    """A user's backup beside the kept checkpoints stays (it once matched ``step-*.pt``)."""
    run = RunDirectory(tmp_path)
    checkpoint = Checkpoint.load(kept_checkpoints(RunDirectory(kept_run))[0].path)
    keep_checkpoint(run, at_step(checkpoint, 5, 3.0), keep_best=1, keep_last=0)
    backup = run.kept_dir / "step-00000006-my-backup.pt"
    stray = run.kept_dir / "step-00000009.pt"  # not in the index: not the run's
    backup.write_bytes(b"mine")
    stray.write_bytes(b"mine too")
    keep_checkpoint(run, at_step(checkpoint, 6, 2.0), keep_best=1, keep_last=0)
    keep_checkpoint(run, at_step(checkpoint, 7, 1.0), keep_best=1, keep_last=0)
    assert sorted(p.name for p in run.kept_dir.iterdir()) == [
        "kept.json", "step-00000006-my-backup.pt", "step-00000007.pt", "step-00000009.pt"]


@pytest.mark.parametrize("index", [
    '[{"step": 1e400, "loss": 1.0}]', '[{"step": 3, "loss": NaN}]', '{"step": 3}',
    '[{"step": true, "loss": 1.0}]', '[{"loss": 1.0}]', "[[[[" * 1000,
])
def test_a_damaged_index_is_one_line(tmp_path: Path, index: str) -> None:
    run = RunDirectory(tmp_path)
    run.kept_dir.mkdir()
    run.kept_index.write_text(index)
    with pytest.raises(ValueError, match="kept.json: a damaged index of kept checkpoints"):
        kept_checkpoints(run)


def test_padless_average_writes_a_checkpoint_every_command_loads(
    qa_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    assert main(["train", "--data", str(qa_data_dir), "--out", str(run_dir), "--max-steps", "4",
                 *(f"--set={kv}" for kv in TINY_TRAIN), "--set", "train.valid_every=1",
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


@pytest.mark.parametrize("target", ["latest.pt", "best.pt", "checkpoints/step-00000008.pt",
                                    "config.yaml", "checkpoints/kept.json"])
def test_average_never_writes_over_a_file_of_the_run(
    kept_run: Path, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = kept_run / target
    before = path.read_bytes()
    assert main(["average", str(kept_run), "--best", "2", "--out", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a file of the run" in err and "averaged.pt" in err
    assert path.read_bytes() == before


@pytest.mark.parametrize("target", ["/dev/null", "another run's latest.pt",
                                    "a dataset's train.tokens", "a user's notes.txt",
                                    "a folder"])
def test_average_writes_only_a_new_file_or_a_checkpoint(
    kept_run: Path, reversal_data_dir: Path, qa_run_dir: Path, tmp_path: Path, target: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """It used to overwrite each of these with exit 0 (/dev/null became a 2.2 MB file)."""
    (tmp_path / "notes.txt").write_text("mine")
    path, words = {
        "/dev/null": (Path("/dev/null"), "not a regular file"),
        "another run's latest.pt": (qa_run_dir / "latest.pt", "inside the run"),
        "a dataset's train.tokens": (reversal_data_dir / "train.tokens",
                                     "inside the prepared dataset"),
        "a user's notes.txt": (tmp_path / "notes.txt", "is not a checkpoint"),
        "a folder": (tmp_path, "is a directory"),
    }[target]
    is_file = path.is_file() and not path.is_char_device()
    before = path.read_bytes() if is_file else None
    assert main(["average", str(kept_run), "--best", "2", "--out", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err and f"--out {path}" in err, err
    assert path.is_char_device() if target == "/dev/null" else True
    if is_file:
        assert path.read_bytes() == before
    # a file an earlier average wrote is a checkpoint: written again
    out = tmp_path / "avg.pt"
    assert main(["average", str(kept_run), "--best", "2", "--out", str(out)]) == 0
    assert main(["average", str(kept_run), "--best", "3", "--out", str(out)]) == 0


def test_average_beside_the_run_and_data_of_another_vocabulary(
    kept_run: Path, qa_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["average", str(kept_run), "--best", "2", "--out", str(kept_run / "a.pt")]) == 0
    assert Checkpoint.load(kept_run / "a.pt").valid is not None
    (kept_run / "a.pt").unlink()
    capsys.readouterr()
    out = tmp_path / "avg.pt"
    assert main(["average", str(kept_run), "--best", "2", "--out", str(out),
                 "--data", str(qa_data_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "vocabulary differs" in err and not out.exists()
