"""The trainer: resume, early stopping, time limit, signals, DDP, the log, ``padless train``."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch

from padless.cli import main as cli_main
from padless.data.dataset import PreparedData
from padless.data.loader import make_batches
from padless.models import build_model
from padless.models.scoring import teacher_forced_scores
from padless.runs.checkpoint import Checkpoint
from padless.runs.directory import RunDirectory
from padless.training.config import load_config
from padless.training.runlog import RunLog, shown_figures
from padless.training.trainer import train
from tests.helpers import (
    AS_TRANSFORMER,
    TINY_TRAIN,
    WORDS,
    free_port,
    read_log,
    subprocess_env,
)


def run_config(*extra: str):
    return load_config(None, [*TINY_TRAIN, *extra])


def model_state(run_dir: Path, which: str = "latest") -> dict[str, torch.Tensor]:
    return Checkpoint.load(run_dir / f"{which}.pt").weights


def test_resume_continues_exactly(reversal_data: PreparedData, tmp_path: Path) -> None:
    # Dropout and per-token teacher-forcing coins: the RNG states must be restored too.
    extra = ("model.dropout=0.3", "train.teacher_forcing_ratio=0.5",
             "train.teacher_forcing=token", "train.accumulate=2", "train.valid_every=3",
             "train.decay=linear", "train.decay_steps=8", "train.warmup_steps=2",
             "train.max_steps=8")
    whole = train(run_config(*extra), reversal_data.text, reversal_data.splits, tmp_path / "whole")
    assert (whole.step, whole.stop_reason) == (8, "max_steps")

    first = train(run_config(*extra, "train.max_steps=5"), reversal_data.text, reversal_data.splits,
                  tmp_path / "split")
    assert first.step == 5
    second = train(run_config(*extra), reversal_data.text, reversal_data.splits,
                   tmp_path / "split", resume=True)
    assert second.step == 8

    a, b = model_state(tmp_path / "whole"), model_state(tmp_path / "split")
    for name in a:
        assert torch.equal(a[name], b[name]), name
    full = Checkpoint.load(tmp_path / "whole" / "latest.pt")
    resumed = Checkpoint.load(tmp_path / "split" / "latest.pt")
    assert full.sampler == resumed.sampler
    assert torch.equal(full.rng[0]["torch"], resumed.rng[0]["torch"])
    # The log of the resumed run has every step once.
    with open(tmp_path / "split" / "log.csv") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f) if r["kind"] == "train"]
    assert steps == list(range(1, 9))


def test_a_transformer_resumes_exactly(reversal_data: PreparedData, tmp_path: Path) -> None:
    """Attention, residual and feed-forward dropout draw from the restored random states."""
    extra = (*AS_TRANSFORMER, "model.dropout=0.3", "train.accumulate=2", "train.valid_every=3",
             "train.warmup_steps=2", "train.decay=inverse_sqrt", "train.max_steps=6")
    train(run_config(*extra), reversal_data.text, reversal_data.splits, tmp_path / "whole")
    train(run_config(*extra, "train.max_steps=4"), reversal_data.text, reversal_data.splits,
          tmp_path / "split")
    train(run_config(*extra), reversal_data.text, reversal_data.splits, tmp_path / "split",
          resume=True)
    a, b = model_state(tmp_path / "whole"), model_state(tmp_path / "split")
    assert any("self_attention" in name for name in a)
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_a_moving_average_is_validated_saved_and_resumed(
    reversal_data: PreparedData, tmp_path: Path
) -> None:
    """``train.ema_decay``: best.pt holds the averaged weights that scored the logged loss; a
    resumed run goes on training the optimiser's own weights and the same average."""
    extra = ("model.dropout=0.3", "train.ema_decay=0.9", "train.valid_every=3",
             "train.max_steps=7")
    train(run_config(*extra), reversal_data.text, reversal_data.splits, tmp_path / "whole")
    latest = Checkpoint.load(tmp_path / "whole" / "latest.pt")
    assert latest.ema_weights is not None and latest.decoding_weights is latest.ema_weights
    assert any(not torch.equal(latest.ema_weights[k], latest.weights[k]) for k in latest.weights)
    assert latest.weights_only().ema_weights is not None  # weights only: both kept
    model = latest.build_model()  # what every command decodes with: the average
    batches = list(make_batches(reversal_data.splits["valid"],
                                [list(range(len(reversal_data.splits["valid"])))]))
    score = teacher_forced_scores(model, batches)
    assert score.loss == pytest.approx(latest.valid["loss"], rel=1e-5)

    train(run_config(*extra, "train.max_steps=4"), reversal_data.text, reversal_data.splits,
          tmp_path / "split")
    train(run_config(*extra), reversal_data.text, reversal_data.splits, tmp_path / "split",
          resume=True)
    resumed = Checkpoint.load(tmp_path / "split" / "latest.pt")
    for name in latest.weights:
        assert torch.equal(latest.ema_weights[name], resumed.ema_weights[name]), name
        assert torch.equal(latest.weights[name], resumed.weights[name]), name


def test_early_stopping_and_the_time_limit(reversal_data: PreparedData, tmp_path: Path) -> None:
    # lr 1e-30 leaves every weight unchanged in float32: validation never improves again.
    frozen = run_config("train.lr=1e-30", "train.patience=2", "train.valid_every=1",
                        "train.max_steps=50", "train.decoder_lr_ratio=5")
    result = train(frozen, reversal_data.text, reversal_data.splits, tmp_path / "early")
    assert (result.step, result.stop_reason, result.exit_code) == (3, "early_stopping", 0)
    best = Checkpoint.load(tmp_path / "early" / "best.pt")
    assert best.step == 1 and best.state.best_loss == result.best_valid_loss
    lrs = [group["lr"] for group in best.optimizer["param_groups"]]
    assert lrs == pytest.approx([1e-30, 5e-30], rel=1e-12)  # encoder; decoder x ratio

    timed = run_config("train.max_time=1e-9", "train.max_steps=50")
    result = train(timed, reversal_data.text, reversal_data.splits, tmp_path / "timed")
    assert (result.step, result.stop_reason) == (0, "max_time")
    assert Checkpoint.load(tmp_path / "timed" / "latest.pt").valid is not None


def train_lrs(run_dir: Path) -> dict[int, float]:
    with open(run_dir / "log.csv") as f:
        return {int(r["step"]): float(r["lr"]) for r in csv.DictReader(f) if r["kind"] == "train"}


def test_plateau_schedule_halves_the_lr_at_each_validation_without_a_new_best(
    reversal_data: PreparedData, tmp_path: Path
) -> None:
    # lr 1e-30: the loss never changes, so every validation after the first is not a best
    extra = ("train.lr=1e-30", "train.valid_every=2", "train.plateau_factor=0.5",
             "train.max_steps=8")
    train(run_config(*extra), reversal_data.text, reversal_data.splits, tmp_path / "whole")
    lrs = train_lrs(tmp_path / "whole")
    # validations at steps 2 (best), 4, 6 (not): the lr halves from the step after each
    expected = {1: 1, 2: 1, 3: 1, 4: 1, 5: 0.5, 6: 0.5, 7: 0.25, 8: 0.25}
    assert lrs == pytest.approx({s: 1e-30 * f for s, f in expected.items()}, rel=1e-6, abs=0)
    assert Checkpoint.load(tmp_path / "whole" / "latest.pt").state.lr_scale == 0.125

    # a run stopped at a validation and resumed goes on with the reduced rate
    train(run_config(*extra, "train.max_steps=4"), reversal_data.text, reversal_data.splits,
          tmp_path / "split")
    train(run_config(*extra), reversal_data.text, reversal_data.splits, tmp_path / "split",
          resume=True)
    assert train_lrs(tmp_path / "split") == pytest.approx(lrs, rel=1e-6, abs=0)


def test_valid_every_auto_is_half_an_epoch_within_bounds() -> None:
    tc = run_config("train.valid_every=auto", "train.accumulate=2").train
    assert [tc.valid_steps(n) for n in (40, 400, 1000, 4000)] == [50, 100, 250, 500]
    assert run_config("train.valid_every=7").train.valid_steps(400) == 7
    with pytest.raises(ValueError, match="train.valid_every"):
        run_config("train.valid_every=sometimes")


def test_tensorboard_events_when_tensorboard_imports(tmp_path: Path, monkeypatch) -> None:
    calls: list = []

    class SummaryWriter:  # stands in for tensorboard, an optional dependency
        def __init__(self, logdir: str, purge_step: int | None = None) -> None:
            calls.append(("open", logdir, purge_step))

        def add_scalar(self, tag: str, value: float, step: int) -> None:
            calls.append((tag, value, step))

        def close(self) -> None:
            calls.append("close")

    module = types.ModuleType("torch.utils.tensorboard")
    module.SummaryWriter = SummaryWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", module)
    (tmp_path / "log.csv").write_text("left by a run that never saved a checkpoint\n")
    log = RunLog(RunDirectory(tmp_path), enabled=True)
    log.log("valid", 7, epoch=1, loss=1.5, accuracy=0.25, tokens=10)
    log.close()
    assert calls[0] == ("open", str(tmp_path / "tb"), None)
    assert {("valid/loss", 1.5, 7), ("valid/accuracy", 0.25, 7), ("valid/tokens", 10, 7)} <= set(
        calls[1:-1])
    assert calls[-1] == "close"
    with open(tmp_path / "log.csv") as f:  # a new log: the stale file is gone
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["kind"] == "valid" and rows[0]["accuracy"] == "0.25"


@pytest.mark.parametrize("enabled", [True, False])
def test_shown_figures_quote_the_logged_row(tmp_path: Path, enabled: bool) -> None:
    """What the bar and the log line show is rounded from log.csv's cells, never from the
    float itself: 13250.54 tokens/s is logged as 13250.5, which shows as 13,250 (half to
    even), where the float would show 13,251; a loss of 1.2345004 logs as 1.2345 and shows
    1.234, where the float shows 1.235. Rank > 0 (a disabled log) rounds the same way."""
    log = RunLog(RunDirectory(tmp_path), enabled=enabled)
    row = log.log("train", 3, loss=1.2345004, tokens_per_s=13250.54, tokens=7)
    log.close()
    assert shown_figures(row) == {"loss": "1.234", "tok_s": "13,250"}
    if enabled:
        (written,) = read_log(tmp_path, "train")
        assert {k: written[k] for k in row} == row


# -- the command ---------------------------------------------------------------------------

@pytest.mark.slow
def test_padless_train_end_to_end_loss_falls(
    reversal_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    args = ["train", "--data", str(reversal_data_dir), "--out", str(out),
            *[a for o in TINY_TRAIN for a in ("--set", o)],
            "--set", "train.valid_every=20", "--accumulate", "2"]
    assert cli_main([*args, "--config", "chatbot", "--max-steps", "60"]) == 0
    for name in ("config.yaml", "latest.pt", "best.pt", "log.csv", "loss.png", "text/vocab.json"):
        assert (out / name).exists(), name
    assert load_config(str(out / "config.yaml")).train.accumulate == 2
    train_rows, valid_rows = read_log(out, "train"), read_log(out, "valid")
    first = sum(float(r["loss"]) for r in train_rows[:5]) / 5
    last = sum(float(r["loss"]) for r in train_rows[-5:]) / 5
    assert last < 0.8 * first
    assert [int(r["step"]) for r in valid_rows] == [20, 40, 60]
    assert float(valid_rows[-1]["loss"]) < float(valid_rows[0]["loss"])
    assert 0 < float(valid_rows[-1]["accuracy"]) <= 1
    # stderr is no terminal here: no bar redraws, a line per log row instead
    shown = capsys.readouterr()
    assert "\r" not in shown.err and "step/s" not in shown.err
    lines = [line for line in shown.out.splitlines() if "tokens/s" in line]
    assert lines == [f"step {r['step']}: loss {float(r['loss']):.3f}, "
                     f"{float(r['tokens_per_s']):,.0f} tokens/s" for r in train_rows]
    valid_lines = [line for line in shown.out.splitlines() if ": valid loss" in line]
    assert [line.removesuffix(" (best)") for line in valid_lines] == [
        f"step {r['step']}: valid loss {float(r['loss']):.4f} ppl {float(r['ppl']):.2f} "
        f"acc {float(r['accuracy']):.3f}" for r in valid_rows]

    # An existing run is not overwritten; --max-steps trains on from where it stopped.
    assert cli_main(args) == 2
    assert "--resume" in capsys.readouterr().err
    assert cli_main([*args, "--max-steps", "70", "--resume"]) == 0
    assert Checkpoint.load(out / "latest.pt").step == 70
    assert cli_main([*args, "--resume", "--set", "model.hidden_size=8"]) == 2
    assert "model.hidden_size" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_saves_a_checkpoint_and_exits_cleanly(
    sig: signal.Signals, reversal_data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    command = [sys.executable, "-m", "padless", "train", "--data", str(reversal_data_dir),
               "--out", str(out), *[a for o in TINY_TRAIN for a in ("--set", o)],
               "--set", "train.valid_every=100000", "--max-steps", "1000000"]
    proc = subprocess.Popen(command, env=subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (out / "log.csv").exists() or len(read_log(out, "train")) < 3:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.2)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig, stderr
    assert "Traceback" not in stderr
    assert f"{sig.name}: saved" in stdout and f"({sig.name})" in stdout
    step = Checkpoint.load(out / "latest.pt").step
    assert step >= 3
    assert max(int(r["step"]) for r in read_log(out, "train")) == step


@pytest.mark.slow
@pytest.mark.parametrize("arch", [(), tuple(AS_TRANSFORMER)], ids=["gru", "transformer"])
def test_two_processes_match_one(reversal_data_dir: Path, tmp_path: Path, arch: tuple) -> None:
    """torchrun with 2 gloo processes == 1 process on the same global batches."""
    steps = "4"
    # No dropout, word dropout either: masks drawn by two processes cannot match one's.
    common = ["train", "--data", str(reversal_data_dir),
              *[a for o in (*TINY_TRAIN, *arch) for a in ("--set", o)],
              "--set", "model.dropout=0", "--set", "train.word_dropout=0",
              "--set", "train.accumulate=2", "--set", "train.ema_decay=0.5",
              "--set", "train.valid_every=2",
              "--max-steps", steps]
    single = tmp_path / "single"
    assert cli_main([*common, "--out", str(single)]) == 0
    ddp = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
               "--master_addr=127.0.0.1", f"--master_port={free_port()}",
               "-m", "padless", *common, "--out", str(ddp)]
    done = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]

    one, two = Checkpoint.load(single / "latest.pt"), Checkpoint.load(ddp / "latest.pt")
    assert two.world_size == 2 and len(two.rng) == 2
    torch.manual_seed(0)  # the trainer's seed: the weights the runs started from
    initial = build_model(load_config(None, [*TINY_TRAIN, *arch]).model, len(WORDS) + 4)
    moved = 0.0
    for name, tensor in one.ema_weights.items():  # the moving average, and the weights
        # Float error only: sums of gradients in a different order, through Adam, which
        # divides by sqrt(v): a coordinate whose gradient is at the noise level moves by up
        # to ~1e-5 here (one of 256 attention weights, with the numpy sampler's batch order;
        # every other coordinate agrees to 2e-7). A real error (a lost shard, a wrong scale)
        # moves everything by ~1e-3 and shows in the logged losses and gradient norms below.
        torch.testing.assert_close(two.ema_weights[name], tensor, rtol=1e-5, atol=2e-5)
        torch.testing.assert_close(two.weights[name], one.weights[name], rtol=1e-5,
                                   atol=2e-5)
        moved = max(moved, (tensor - initial.state_dict()[name]).abs().max().item())
    assert moved > 1e-3  # the parameters did move
    # Adam hides a constant gradient factor; the logged gradient norm (before clipping)
    # shows one, e.g. a forgotten world_size in the loss scale.
    for a, b in zip(read_log(single, "train"), read_log(ddp, "train"), strict=True):
        assert (a["step"], a["tokens"]) == (b["step"], b["tokens"])
        for key in ("loss", "grad_norm"):
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-4), (a, b)
    valid_one, valid_two = read_log(single, "valid"), read_log(ddp, "valid")
    assert [r["tokens"] for r in valid_one] == [r["tokens"] for r in valid_two]
    for a, b in zip(valid_one, valid_two, strict=True):
        assert float(a["loss"]) == pytest.approx(float(b["loss"]), rel=1e-4)
    assert one.sampler == two.sampler


def fp16_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """fp16 with a gradient scaler is for CUDA; on a CPU (where autocast and the scaler also
    work) it tests the scaler's path through the trainer."""
    from padless.runtime.precision import Precision

    chosen = Precision("fp16", "fp16", "as asked; with a gradient scaler", "test")
    monkeypatch.setattr("padless.training.trainer.choose_precision", lambda *a, **k: chosen)


def test_fp16_trains_with_a_gradient_scaler_and_resumes_exactly(
    reversal_data: PreparedData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fp16_on_the_cpu(monkeypatch)
    extra = ("train.precision=fp16", "train.valid_every=3", "train.max_steps=6")
    train(run_config(*extra), reversal_data.text, reversal_data.splits, tmp_path / "whole")
    whole = Checkpoint.load(tmp_path / "whole" / "latest.pt")
    assert whole.scaler is not None and whole.scaler["scale"] > 0
    assert whole.weights_only().scaler is None
    train(run_config(*extra, "train.max_steps=4"), reversal_data.text, reversal_data.splits,
          tmp_path / "split")
    at_4 = Checkpoint.load(tmp_path / "split" / "latest.pt").weights
    train(run_config(*extra), reversal_data.text, reversal_data.splits, tmp_path / "split",
          resume=True)
    resumed = Checkpoint.load(tmp_path / "split" / "latest.pt")
    assert resumed.scaler == whole.scaler
    for name in whole.weights:
        assert torch.equal(whole.weights[name], resumed.weights[name]), name
    # the scaler's steps updated the weights (an overflow would have skipped them)
    assert any(not torch.equal(at_4[name], whole.weights[name]) for name in at_4)


def test_the_choice_is_printed_recorded_and_logged(
    reversal_data: PreparedData, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    train(run_config("train.max_steps=2"), reversal_data.text, reversal_data.splits, tmp_path)
    out = capsys.readouterr().out
    assert "precision: fp32 (as asked)" in out
    record = json.loads((tmp_path / "run.json").read_text())["precision"]
    assert record["name"] == "fp32" and record["requested"] == "fp32"
    with open(tmp_path / "log.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["kind"] == "train"]
    assert rows and all(r["precision"] == "fp32" for r in rows)


def test_a_bf16_run_resumes_in_fp32_where_bf16_is_emulated(
    reversal_data: PreparedData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from padless.runtime import precision

    monkeypatch.setattr(precision, "bf16_speedup", lambda workload: 3.0)  # where it started
    train(run_config("train.precision=bf16", "train.max_steps=2"), reversal_data.text,
          reversal_data.splits, tmp_path)
    monkeypatch.setattr(precision, "bf16_speedup", lambda workload: 1 / 38)  # another machine
    monkeypatch.setattr(precision, "hardware", lambda device: "cpu: an AVX2 laptop")
    result = train(run_config("train.precision=bf16", "train.max_steps=4"), reversal_data.text,
                   reversal_data.splits, tmp_path, resume=True)
    assert result.step == 4
    out = capsys.readouterr().out
    assert "precision: fp32 (the run asked for bf16, but" in out and "38x slower" in out
    with open(tmp_path / "log.csv") as f:
        logged = [r["precision"] for r in csv.DictReader(f) if r["kind"] == "train"]
    assert logged == ["bf16", "bf16", "fp32", "fp32"]


def test_train_precision_fp16_on_a_cpu_is_one_line(
    reversal_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train", "--data", str(reversal_data_dir), "--out", str(tmp_path / "run"),
            *[a for o in TINY_TRAIN for a in ("--set", o)], "--max-steps", "1"]
    assert cli_main([*args, "--precision", "fp16", "--set", "train.device=cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "fp16 needs a CUDA GPU" in err
    assert cli_main([*args, "--precision", "fp8"]) == 2
    assert "invalid choice: 'fp8'" in capsys.readouterr().err


def test_an_old_bf16_run_resumes_with_auto(
    reversal_data: PreparedData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run written before ``auto`` existed (``precision: bf16`` and no record of the choice
    in run.json) resumes with ``--precision auto``, and without it."""
    import json

    from padless.runtime import precision

    monkeypatch.setattr(precision, "bf16_speedup", lambda workload: 3.0)
    train(run_config("train.precision=bf16", "train.max_steps=2"), reversal_data.text,
          reversal_data.splits, tmp_path)
    (tmp_path / "run.json").write_text(json.dumps({}))  # as an older padless wrote it
    monkeypatch.setattr(precision, "bf16_speedup", lambda workload: 1.0)
    assert train(run_config("train.precision=auto", "train.max_steps=3"), reversal_data.text,
                 reversal_data.splits, tmp_path, resume=True).step == 3
    assert json.loads((tmp_path / "run.json").read_text())["precision"]["name"] == "fp32"
    assert train(run_config("train.precision=bf16", "train.max_steps=4"), reversal_data.text,
                 reversal_data.splits, tmp_path, resume=True).step == 4
