"""``padless train`` never mixes two runs, never loses a run to a bad value, and stops a run
that diverged; every refusal is one line (exit 2)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

from padless.cli import main
from padless.runs.checkpoint import Checkpoint
from padless.runtime.lock import exclusive_lock
from padless.training import trainer as trainer_module
from padless.training.config import Config, load_config
from padless.training.guards import DivergenceGuard
from tests.helpers import (
    TINY_TRAIN,
    assert_one_line_error,
    full_disk,
    reversal_pairs,
    write_dataset,
)

SET = [a for option in TINY_TRAIN for a in ("--set", option)]


def train_cli(data: Path, out: Path, *extra: str) -> int:
    return main(["train", "--data", str(data), "--out", str(out), *SET, *extra])


@pytest.fixture()
def trained(reversal_data_dir: Path, tmp_path: Path) -> Path:
    """A run of two steps with a validation (latest.pt, best.pt)."""
    out = tmp_path / "run"
    assert train_cli(reversal_data_dir, out, "--max-steps", "2",
                     "--set", "train.valid_every=2") == 0
    return out


def test_a_second_run_on_the_same_directory_is_refused(reversal_data_dir, tmp_path,
                                                       capsys) -> None:
    out = tmp_path / "run"
    with exclusive_lock(out / ".lock", f"run directory {out}", "padless train"):
        code = train_cli(reversal_data_dir, out, "--max-steps", "1")
        assert_one_line_error(code, capsys.readouterr().err, "train",
                              f"run directory {out} is in use by another padless train "
                              f"(pid {os.getpid()})")
        assert sorted(p.name for p in out.iterdir()) == [".lock"]  # it wrote nothing
    assert train_cli(reversal_data_dir, out, "--max-steps", "1") == 0
    assert not (out / ".lock").exists()


@pytest.mark.parametrize(("extra", "words"), [
    (["--max-time", "inf"], ["argument --max-time", "'inf'"]),
    (["--set", "train.max_time=.inf"], ["train.max_time: expected a finite number, got inf"]),
    (["--set", "train.weight_decay=nan"], ["train.weight_decay: expected a finite number"]),
    (["--set", "train.lr=inf"], ["train.lr: expected a finite number"]),
    (["--set", "train.betas=[0.9, .nan]"], ["train.betas[1]: expected a finite number"]),
    (["--set", "train.max_length=0"], ["train.max_length: must be an integer >= 1, got 0"]),
    (["--set", "train.seed=-1"], ["train.seed: must be an integer >= 0 and <= 2147483647, got -1"]),
    (["--set", "train.device=meta"], ["train.device: device 'meta' is not supported"]),
    (["--set", "train.device=mps"], ["train.device: device 'mps' is not supported"]),
    (["--set", "train.device=xpu"], ["train.device: device 'xpu' is not supported"]),
])
def test_values_that_are_not_finite_or_in_range_are_refused(
        reversal_data_dir, tmp_path, capsys, extra, words) -> None:
    code = train_cli(reversal_data_dir, tmp_path / "run", "--max-steps", "1", *extra)
    assert_one_line_error(code, capsys.readouterr().err, "train", *words)
    assert not (tmp_path / "run").exists()


def test_a_model_too_large_for_the_memory_is_one_line_with_its_size(reversal_data_dir, tmp_path,
                                                                   capsys) -> None:
    """model.hidden_size=1000000 used to end in "DefaultCPUAllocator: can't allocate 22 GB"
    and leave an empty run directory."""
    code = train_cli(reversal_data_dir, tmp_path / "run", "--max-steps", "1",
                     "--set", "model.hidden_size=1000000", "--set", "model.embedding_size=100000")
    assert_one_line_error(code, capsys.readouterr().err, "train", "the model has ",
                          " parameters: training needs ", "GiB", "free; choose a smaller model")
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is there")
def test_cuda_without_a_gpu_is_one_line(reversal_data_dir, tmp_path, capsys) -> None:
    code = train_cli(reversal_data_dir, tmp_path / "run", "--set", "train.device=cuda")
    assert_one_line_error(code, capsys.readouterr().err, "train",
                          "train.device: device 'cuda' asked for, but CUDA is not available")


def test_an_out_that_is_a_file_is_one_line(reversal_data_dir, tmp_path, capsys) -> None:
    (tmp_path / "afile").write_text("mine")
    code = train_cli(reversal_data_dir, tmp_path / "afile", "--max-steps", "1")
    assert_one_line_error(code, capsys.readouterr().err, "train", "afile: is a file")
    assert (tmp_path / "afile").read_text() == "mine"


def test_an_empty_training_split_is_one_line(tmp_path, capsys) -> None:
    data = write_dataset(tmp_path / "data", {"train": [], "valid": reversal_pairs(8, 1),
                                             "test": reversal_pairs(8, 2)})
    code = train_cli(data, tmp_path / "run", "--max-steps", "1")
    assert_one_line_error(code, capsys.readouterr().err, "train",
                          f"the training split of {data} is empty")


@pytest.mark.parametrize("damage", ["truncated", "random"])
def test_resuming_from_a_damaged_checkpoint_is_one_line(trained, damage, capsys) -> None:
    latest = trained / "latest.pt"
    data = latest.read_bytes()
    latest.write_bytes(data[: len(data) // 2] if damage == "truncated" else os.urandom(4096))
    code = train_cli(Path("unused"), trained, "--resume", "--max-steps", "3")
    assert_one_line_error(code, capsys.readouterr().err, "train", f"{latest}:")


@pytest.mark.parametrize("copied", ["averaged", "kept"])
def test_resuming_from_a_checkpoint_of_weights_only_is_one_line(reversal_data_dir, trained,
                                                                 copied, capsys) -> None:
    """An averaged.pt or a kept step-*.pt copied as latest.pt used to end in
    ``AttributeError: 'NoneType' object has no attribute 'copy'``."""
    latest = trained / "latest.pt"
    if copied == "averaged":
        assert main(["average", str(trained), "--last", "1"]) == 0
        latest.write_bytes((trained / "averaged.pt").read_bytes())
    else:
        Checkpoint.load(latest).weights_only().save(latest)
    capsys.readouterr()
    code = train_cli(reversal_data_dir, trained, "--resume", "--max-steps", "3")
    assert_one_line_error(code, capsys.readouterr().err, "train", f"{latest}: holds weights "
                          "only", "--init-from")


def test_resuming_with_data_of_another_vocabulary_is_one_line(trained, qa_data_dir,
                                                              capsys) -> None:
    code = train_cli(qa_data_dir, trained, "--resume", "--max-steps", "3")
    assert_one_line_error(code, capsys.readouterr().err, "train",
                          "vocabulary differs from the checkpoint's")


@pytest.mark.parametrize(("extra", "words"), [
    (["--set", "train.seed=5"], ["the state has seed 0, this sampler 5", "train.seed"]),
    (["--set", "train.max_length=4"], ["this split has", "train.max_length"]),
    (["--set", "train.batch_size=4"], ["the state has batch_size 8, this sampler 4",
                                       "train.batch_size"]),
    (["--set", "train.batch_size=null", "--set", "train.max_tokens=64"],
     ["the state has batch_size 8, this sampler None", "train.max_tokens"]),
])
def test_resuming_with_another_seed_or_split_is_one_line(reversal_data_dir, trained, extra,
                                                          words, capsys) -> None:
    code = train_cli(reversal_data_dir, trained, "--resume", "--max-steps", "3", *extra)
    assert_one_line_error(code, capsys.readouterr().err, "train", *words)


def test_a_full_disk_at_a_checkpoint_is_one_line_and_keeps_the_last_one(
        reversal_data_dir, trained, monkeypatch, capsys) -> None:
    """torch.save used to hide the ENOSPC behind "RuntimeError: unexpected pos"."""
    before = {name: (trained / name).read_bytes() for name in ("latest.pt", "best.pt")}
    with full_disk(monkeypatch, room=16_000):  # config.yaml and run.json fit; no checkpoint
        code = train_cli(reversal_data_dir, trained, "--resume", "--max-steps", "4",
                         "--set", "train.valid_every=2")
    err = capsys.readouterr().err
    assert_one_line_error(code, err, "train", "No space left on device", str(trained))
    assert ".pt" in err.strip().splitlines()[-1]
    assert {name: (trained / name).read_bytes() for name in before} == before
    assert not list(trained.rglob("*.tmp"))
    assert train_cli(reversal_data_dir, trained, "--resume", "--max-steps", "4") == 0


def test_a_log_with_a_field_past_the_csv_limit_resumes_and_plots(reversal_data_dir, trained,
                                                                 capsys) -> None:
    """A field over csv's 128 KiB limit (an edited log, a damaged disk) used to stop --resume
    with _csv.Error."""
    log = trained / "log.csv"
    header, *rows = log.read_text().splitlines()
    huge = rows[0].split(",")
    huge[-1] = "9" * (200 * 1024)
    log.write_text("\n".join([header, ",".join(huge), *rows[1:]]) + "\n")
    assert train_cli(reversal_data_dir, trained, "--resume", "--max-steps", "4") == 0
    assert (trained / "loss.png").exists()
    kept = log.read_text().splitlines()
    assert len(max(kept, key=len)) < 1000  # the row that did not parse is gone
    assert [row.split(",")[1] for row in kept[1:]][-1] == "4"


@pytest.mark.parametrize("config_yaml", ["missing", "partial", "garbage"])
def test_resuming_takes_the_config_from_the_checkpoint(reversal_data_dir, trained,
                                                       config_yaml) -> None:
    """config.yaml is a copy for reading: a partial one used to fall back to default train.*
    values silently."""
    path = trained / "config.yaml"
    if config_yaml == "missing":
        path.unlink()
    else:
        path.write_text("model:\n  hidden_size: 16\n" if config_yaml == "partial" else "{[")
    assert train_cli(reversal_data_dir, trained, "--resume", "--max-steps", "3") == 0
    resumed = Config.from_dict(Checkpoint.load(trained / "latest.pt").config)
    assert resumed.train.lr == 3e-3 and resumed.train.batch_size == 8  # TINY_TRAIN's, not defaults
    assert load_config(str(path)) == resumed  # rewritten, whole


def test_leftovers_of_killed_writes_are_removed_at_the_next_start(reversal_data_dir, trained,
                                                                  capsys) -> None:
    leftovers = [trained / ".latest.pt.a1b2c3d4.tmp", trained / "text" / ".vocab.json.zz9_x8y7.tmp"]
    for path in leftovers:
        path.write_bytes(b"\0" * 1000)  # what `kill -9` during a checkpoint write leaves
    assert train_cli(reversal_data_dir, trained, "--resume", "--max-steps", "3") == 0
    assert not any(path.exists() for path in leftovers)
    assert "removed 2 temporary file(s)" in capsys.readouterr().out


def test_a_stop_signal_during_the_final_validation_ends_it_at_the_next_batch(
        tmp_path, monkeypatch, capsys) -> None:
    """A SIGTERM in the last validation of a 49k-pair split was honoured only after it (9
    minutes). The validation stops at the next batch; latest.pt is saved; exit 143."""
    train = reversal_pairs(240, 0)
    data = write_dataset(tmp_path / "data", {"train": train, "valid": train * 20,  # 4,800
                                             "test": reversal_pairs(8, 2)})  # pairs: 600 of 8
    seen: list[int] = []
    real_scores = trainer_module.teacher_forced_scores

    def scores_with_a_sigterm_at_the_second_batch(model, batches, **kwargs):
        def batches_seen():
            for i, batch in enumerate(batches):
                seen.append(i)
                if i == 1:
                    os.kill(os.getpid(), signal.SIGTERM)  # handled in this (the main) thread
                yield batch
        return real_scores(model, batches_seen(), **kwargs)

    monkeypatch.setattr(trainer_module, "teacher_forced_scores",
                        scores_with_a_sigterm_at_the_second_batch)
    code = train_cli(data, tmp_path / "run", "--max-steps", "2",
                     "--set", "train.valid_every=100000")
    assert code == 128 + signal.SIGTERM
    assert len(seen) <= 3  # of 600
    assert "SIGTERM: saved" in capsys.readouterr().out
    assert Checkpoint.load(tmp_path / "run" / "latest.pt").step == 2


def test_a_diverging_run_stops_with_one_line(reversal_data_dir, tmp_path, capsys) -> None:
    """lr 1e38 makes the weights inf within a few steps; then no gradient is finite again."""
    code = train_cli(reversal_data_dir, tmp_path / "run", "--max-steps", "100",
                     "--set", "train.lr=1e38", "--set", "train.clip=null")
    assert_one_line_error(code, capsys.readouterr().err, "train",
                          "training diverged", "10 steps in a row", "train.lr=1e+38")


def test_the_divergence_guard_forgives_a_bad_batch_now_and_then() -> None:
    guard = DivergenceGuard(limit=3)
    for step, updated in enumerate([False, False, True, False, False, True], 1):
        guard.update(updated, step, 1e-3, Path("run"))
    with pytest.raises(ValueError, match="3 steps in a row"):
        for step in range(7, 10):
            guard.update(False, step, 1e-3, Path("run"))


def test_training_leaves_out_a_runaway_pair(tmp_path, capsys) -> None:
    data = write_dataset(tmp_path / "data", {
        "train": [*reversal_pairs(40, 0), (["w1"] * 5000, ["w2"])],
        "valid": reversal_pairs(24, 1), "test": reversal_pairs(8, 2)})
    assert train_cli(data, tmp_path / "run", "--max-steps", "2") == 0
    assert "left out 1 train pairs longer than 1000 tokens" in capsys.readouterr().out


def test_a_huge_time_limit_does_not_break_the_log(reversal_data_dir, tmp_path) -> None:
    """--max-time inf crashed at the first log row and lost the run; inf is refused now, and
    a finite limit too large for a clock still logs."""
    assert train_cli(reversal_data_dir, tmp_path / "run", "--max-steps", "2",
                     "--max-time", "1e306") == 0
    assert Checkpoint.load(tmp_path / "run" / "latest.pt").step == 2
