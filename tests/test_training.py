"""The trainer: exact normalisation, resume, signals, DDP, checkpoints, ``padless train``."""

from __future__ import annotations

import csv
import json
import os
import pickletools
import random
import re
import signal
import socket
import subprocess
import sys
import time
import types
import zipfile
from pathlib import Path

import pytest
import torch

from padless.batch import Batch
from padless.checkpoint import load_checkpoint, load_model
from padless.cli import main as cli_main
from padless.config import load_config
from padless.dataset import PreparedData, write_split
from padless.distributed import World
from padless.model import ModelConfig, Seq2Seq
from padless.runlog import RunLog
from padless.steps import StepLoss, accumulate_gradients, evaluate, lr_factor
from padless.text import TextProcessor
from padless.training import train
from padless.vocabulary import BOS_ID, EOS_ID, PAD_ID, Vocabulary

WORDS = [f"w{i}" for i in range(12)]
CPU = World(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
# A model small enough that a step takes milliseconds.
TINY = ["model.embedding_size=16", "model.hidden_size=16", "model.num_layers=1",
        "model.attention=general", "model.tie_output=false", "train.precision=fp32",
        "train.max_tokens=null", "train.batch_size=8", "train.lr=3e-3", "train.clip=1.0",
        "train.warmup_steps=0", "train.decay=constant", "train.label_smoothing=0.0",
        "train.patience=null", "train.log_every=1"]


def reversal_pairs(n: int, seed: int) -> list[tuple[list[str], list[str]]]:
    """Reverse a random word sequence: learnable by a tiny model in a few dozen steps."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        src = [rng.choice(WORDS) for _ in range(rng.randint(1, 6))]
        pairs.append((src, src[::-1]))
    return pairs


def write_dataset(directory: Path, n_train: int = 240) -> Path:
    """A prepared dataset written with the data pipeline's API."""
    directory.mkdir(parents=True, exist_ok=True)
    TextProcessor(Vocabulary(WORDS), normalize="none").save(directory)
    for name, n, seed in (("train", n_train, 0), ("valid", 24, 1), ("test", 8, 2)):
        write_split(directory / f"{name}.tsv", reversal_pairs(n, seed))
    (directory / "metadata.json").write_text(json.dumps({"format": "padless-prepared"}))
    return directory


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one intra-op thread is faster, and immune to a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def data(data_dir: Path) -> PreparedData:
    return PreparedData.load(data_dir)


def id_pairs(n: int, seed: int) -> list[tuple[list[int], list[int]]]:
    vocab = Vocabulary(WORDS)
    return [(vocab.encode(s), vocab.encode(t)) for s, t in reversal_pairs(n, seed)]


def make_batch(pairs: list) -> Batch:
    return Batch.from_pairs(pairs, pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID)


def tiny_model(dropout: float = 0.0) -> Seq2Seq:
    torch.manual_seed(0)
    config = ModelConfig(embedding_size=8, hidden_size=8, num_layers=2, attention="general",
                         dropout=dropout)
    return Seq2Seq(config, len(WORDS) + 4, PAD_ID).double()


def grads(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p)
            for p in model.parameters()]


# -- exact normalisation -------------------------------------------------------------------

def test_accumulated_micro_batches_give_the_gradient_of_one_big_batch() -> None:
    tc = load_config(None, TINY).train
    pairs = id_pairs(12, seed=3)
    # Very different token counts per micro-batch: a mean of per-batch means would be off.
    pairs.sort(key=lambda p: len(p[1]))
    micro = [make_batch(pairs[:2]), make_batch(pairs[2:9]), make_batch(pairs[9:])]
    big = make_batch(pairs)
    assert len({b.n_tokens for b in micro}) == 3

    model = tiny_model()
    loss_sum, tokens = accumulate_gradients(StepLoss(model, tc), micro, tc, CPU)
    accumulated = grads(model)
    assert tokens == big.n_tokens

    reference_model = tiny_model()
    loss = reference_model.loss(big, reduction="mean").loss  # per-token mean, one batch
    loss.backward()
    reference = grads(reference_model)
    assert loss_sum.item() / tokens == pytest.approx(loss.item(), rel=1e-6)
    for got, want in zip(accumulated, reference, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)

    # The test can tell: the tutorial-style average of micro-batch means differs.
    naive_model = tiny_model()
    for b in micro:
        (naive_model.loss(b, reduction="mean").loss / len(micro)).backward()
    differences = [(a - b).abs().max().item()
                   for a, b in zip(grads(naive_model), reference, strict=True)]
    assert max(differences) > 1e-3


def test_lr_schedule_warms_up_then_decays() -> None:
    tc = load_config(None, ["train.warmup_steps=4", "train.decay=linear", "train.max_steps=12",
                            "train.min_lr_ratio=0.5"]).train
    factors = [lr_factor(s, tc) for s in range(13)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[12] == pytest.approx(0.5)
    assert all(a >= b for a, b in zip(factors[3:], factors[4:], strict=False))
    tc.decay = "cosine"
    assert lr_factor(8, tc) == pytest.approx(0.75)  # half-way: half of the way down
    tc.decay = "inverse_sqrt"
    assert lr_factor(15, tc) == pytest.approx(0.5)  # sqrt(4 / 16)
    tc.decay = "constant"
    assert lr_factor(100, tc) == 1.0


def test_evaluate_matches_the_model_loss_and_a_full_projection() -> None:
    model = tiny_model().float().eval()
    batches = [make_batch(id_pairs(5, seed=s)) for s in (1, 2)]
    metrics = evaluate(model, batches, CPU)
    tokens = sum(b.n_tokens for b in batches)
    with torch.no_grad():
        loss_sum = sum(model.loss(b, reduction="sum").loss.item() for b in batches)
        correct = 0
        for b in batches:  # brute force: project every position, count the real ones
            enc = model.encode(b.src, b.src_lengths)
            states, _, _ = model.decoder(b.tgt_in, enc.hidden, enc.memory, enc.src_mask)
            hits = model.decoder.out(states).argmax(-1) == b.tgt_out
            correct += (hits & b.tgt_mask).sum().item()
    assert metrics["tokens"] == tokens
    assert metrics["loss"] == pytest.approx(loss_sum / tokens, rel=1e-5)
    assert metrics["accuracy"] == correct / tokens


# -- checkpoints and resume ----------------------------------------------------------------

def run_config(*extra: str):
    return load_config(None, [*TINY, *extra])


def model_state(run_dir: Path, which: str = "latest") -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / f"{which}.pt")["model"]


def test_resume_continues_exactly(data: PreparedData, tmp_path: Path) -> None:
    # Dropout and per-token teacher-forcing coins: the RNG states must be restored too.
    extra = ("model.dropout=0.3", "train.teacher_forcing_ratio=0.5",
             "train.teacher_forcing=token", "train.accumulate=2", "train.valid_every=3",
             "train.decay=linear", "train.decay_steps=8", "train.warmup_steps=2",
             "train.max_steps=8")
    whole = train(run_config(*extra), data.text, data.splits, tmp_path / "whole")
    assert (whole.step, whole.stop_reason) == (8, "max_steps")

    first = train(run_config(*extra, "train.max_steps=5"), data.text, data.splits,
                  tmp_path / "split")
    assert first.step == 5
    second = train(run_config(*extra), data.text, data.splits, tmp_path / "split", resume=True)
    assert second.step == 8

    a, b = model_state(tmp_path / "whole"), model_state(tmp_path / "split")
    for name in a:
        assert torch.equal(a[name], b[name]), name
    full = load_checkpoint(tmp_path / "whole" / "latest.pt")
    resumed = load_checkpoint(tmp_path / "split" / "latest.pt")
    assert full["sampler"] == resumed["sampler"]
    assert torch.equal(full["rng"][0]["torch"], resumed["rng"][0]["torch"])
    # The log of the resumed run has every step once.
    with open(tmp_path / "split" / "log.csv") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f) if r["kind"] == "train"]
    assert steps == list(range(1, 9))


def allowed_global(name: str) -> bool:
    return (name == "collections.OrderedDict" or name.startswith("torch._utils._rebuild_tensor")
            or re.fullmatch(r"torch\.\w+Storage", name) is not None)


def test_checkpoint_holds_only_tensors_and_plain_types(data: PreparedData, tmp_path) -> None:
    train(run_config("train.max_steps=2", "train.valid_every=1"), data.text, data.splits,
          tmp_path)
    for which in ("latest", "best"):
        path = tmp_path / f"{which}.pt"
        state = torch.load(path, weights_only=True)
        assert state["step"] == 2 and state["config"]["model"]["hidden_size"] == 16
        with zipfile.ZipFile(path) as z:
            (pkl,) = [n for n in z.namelist() if n.endswith("data.pkl")]
            ops = list(pickletools.genops(z.read(pkl)))
        names = {arg.replace(" ", ".") for op, arg, _ in ops if op.name == "GLOBAL"}
        assert names and all(allowed_global(n) for n in names), names
        assert not any(op.name == "STACK_GLOBAL" for op, _, _ in ops)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files

    model, text, config = load_model(tmp_path, "best")
    assert not model.training and config.model.hidden_size == 16
    assert text.vocab == data.vocab
    state = model_state(tmp_path)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state[name])


def test_early_stopping_and_the_time_limit(data: PreparedData, tmp_path: Path) -> None:
    # lr 1e-30 leaves every weight unchanged in float32: validation never improves again.
    frozen = run_config("train.lr=1e-30", "train.patience=2", "train.valid_every=1",
                        "train.max_steps=50", "train.decoder_lr_ratio=5")
    result = train(frozen, data.text, data.splits, tmp_path / "early")
    assert (result.step, result.stop_reason, result.exit_code) == (3, "early_stopping", 0)
    best = load_checkpoint(tmp_path / "early" / "best.pt")
    assert best["step"] == 1 and best["early_stopping"]["loss"] == result.best_valid_loss
    lrs = [group["lr"] for group in best["optimizer"]["param_groups"]]
    assert lrs == pytest.approx([1e-30, 5e-30], rel=1e-12)  # encoder; decoder x ratio

    timed = run_config("train.max_time=1e-9", "train.max_steps=50")
    result = train(timed, data.text, data.splits, tmp_path / "timed")
    assert (result.step, result.stop_reason) == (0, "max_time")
    assert load_checkpoint(tmp_path / "timed" / "latest.pt")["valid"] is not None


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
    log = RunLog(tmp_path, enabled=True)
    log.log("valid", 7, epoch=1, loss=1.5, accuracy=0.25, tokens=10)
    log.close()
    assert calls[0] == ("open", str(tmp_path / "tb"), None)
    assert {("valid/loss", 1.5, 7), ("valid/accuracy", 0.25, 7), ("valid/tokens", 10, 7)} <= set(
        calls[1:-1])
    assert calls[-1] == "close"
    with open(tmp_path / "log.csv") as f:  # a new log: the stale file is gone
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["kind"] == "valid" and rows[0]["accuracy"] == "0.25"


# -- the command ---------------------------------------------------------------------------

def read_log(run_dir: Path, kind: str) -> list[dict[str, str]]:
    with open(run_dir / "log.csv") as f:
        return [r for r in csv.DictReader(f) if r["kind"] == kind]


@pytest.mark.slow
def test_padless_train_end_to_end_loss_falls(data_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    args = ["train", "--data", str(data_dir), "--out", str(out),
            *[a for o in TINY for a in ("--set", o)],
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

    # An existing run is not overwritten; --max-steps trains on from where it stopped.
    assert cli_main(args) == 2
    assert "--resume" in capsys.readouterr().err
    assert cli_main([*args, "--max-steps", "70", "--resume"]) == 0
    assert load_checkpoint(out / "latest.pt")["step"] == 70
    assert cli_main([*args, "--resume", "--set", "model.hidden_size=8"]) == 2
    assert "model.hidden_size" in capsys.readouterr().err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_saves_a_checkpoint_and_exits_cleanly(
    sig: signal.Signals, data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    command = [sys.executable, "-m", "padless", "train", "--data", str(data_dir),
               "--out", str(out), *[a for o in TINY for a in ("--set", o)],
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
    step = load_checkpoint(out / "latest.pt")["step"]
    assert step >= 3
    assert max(int(r["step"]) for r in read_log(out, "train")) == step


@pytest.mark.slow
def test_two_processes_match_one(data_dir: Path, tmp_path: Path) -> None:
    """torchrun with 2 gloo processes == 1 process on the same global batches."""
    steps = "4"
    # No dropout: masks drawn by two processes cannot match those of one.
    common = ["train", "--data", str(data_dir), *[a for o in TINY for a in ("--set", o)],
              "--set", "model.dropout=0", "--set", "train.accumulate=2",
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

    one, two = load_checkpoint(single / "latest.pt"), load_checkpoint(ddp / "latest.pt")
    assert two["world_size"] == 2 and len(two["rng"]) == 2
    initial = Seq2Seq(load_config(None, TINY).model, len(WORDS) + 4)
    moved = 0.0
    for name, tensor in one["model"].items():
        # Float error only: sums of gradients in a different order, through Adam.
        torch.testing.assert_close(two["model"][name], tensor, rtol=1e-5, atol=1e-6)
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
    assert one["sampler"] == two["sampler"]
