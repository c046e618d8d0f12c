"""Plain helpers the test folders share (fixtures are in ``conftest.py``)."""

from __future__ import annotations

import io
import json
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from padless.cli import main
from padless.data.batch import Batch
from padless.data.dataset import write_split
from padless.data.text import TextProcessor
from padless.data.vocabulary import EOS_ID, Vocabulary
from padless.models.config import ModelConfig
from padless.models.seq2seq import Seq2Seq
from padless.runtime.precision import Precision
from padless.training.distributed import World

WORDS = [f"w{i}" for i in range(12)]
QUESTIONS = [
    "hello there", "how are you ?", "what is your name ?", "where do you live ?",
    "do you like music ?", "good morning", "see you tomorrow", "what time is it ?",
    "are you a robot ?", "tell me a joke", "i am tired today", "it is raining again",
]
ANSWERS = [
    "hi !", "fine , thanks .", "my name is bot .", "in a computer .", "yes , i like jazz .",
    "good morning to you", "bye , see you .", "it is late .", "maybe i am .",
    "no jokes today .", "go to sleep then .", "take an umbrella .",
]


def random_pairs(n: int, vocab: int, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """``n`` id pairs, 1 to 9 ids a side, ids below ``vocab``."""
    rng = random.Random(seed)
    return [([rng.randrange(vocab) for _ in range(rng.randint(1, 9))],
             [rng.randrange(vocab) for _ in range(rng.randint(1, 9))]) for _ in range(n)]


# `--set` options for a model small enough that a step takes milliseconds, in fp32
TINY_MODEL = ["model.embedding_size=16", "model.hidden_size=16", "model.num_layers=1",
              "model.dropout=0.0", "train.precision=fp32"]
# ... for the commands' tests: batches of at most 256 padded tokens
TINY_RUN = [*TINY_MODEL, "train.max_tokens=256"]
# ... for the trainer's own tests: plain Adam, batches of 8 pairs, a log row every step
TINY_TRAIN = [*TINY_MODEL, "model.attention=general", "model.tie_output=false",
              "train.max_tokens=null", "train.batch_size=8", "train.lr=3e-3", "train.clip=1.0",
              "train.warmup_steps=0", "train.decay=constant", "train.label_smoothing=0.0",
              "train.patience=null", "train.log_every=1"]
# added to any of them: the same sizes as a Transformer
AS_TRANSFORMER = ["model.arch=transformer", "model.num_heads=2", "model.ffn_size=32"]
CPU = World(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
FP32 = Precision("fp32", "fp32", "as asked", "test")


def reversal_pairs(n: int, seed: int) -> list[tuple[list[str], list[str]]]:
    """Reverse a random word sequence: learnable by a tiny model in a few dozen steps."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        src = [rng.choice(WORDS) for _ in range(rng.randint(1, 6))]
        pairs.append((src, src[::-1]))
    return pairs


def reversal_id_pairs(n: int, seed: int) -> list[tuple[list[int], list[int]]]:
    vocab = Vocabulary(WORDS)
    return [(vocab.encode(s), vocab.encode(t)) for s, t in reversal_pairs(n, seed)]


def make_batch(pairs: list, batch_first: bool = False) -> Batch:
    """The Batch of ``(source ids, target ids)`` pairs (PAD 0, BOS 1, EOS 2)."""
    return Batch.from_pairs(pairs, batch_first=batch_first)


def write_reversal_dataset(directory: Path, n_train: int = 240) -> Path:
    """A prepared dataset written with the data pipeline's API."""
    directory.mkdir(parents=True, exist_ok=True)
    TextProcessor(Vocabulary(WORDS), normalize="none").save(directory)
    for name, n, seed in (("train", n_train, 0), ("valid", 24, 1), ("test", 8, 2)):
        write_split(directory / f"{name}.tsv", reversal_pairs(n, seed))
    (directory / "metadata.json").write_text(json.dumps({"format": "padless-prepared"}))
    return directory


def reversal_gru(dropout: float = 0.0) -> Seq2Seq:
    """A float64 GRU model (2 layers, general attention) over the reversal vocabulary, the
    same weights every call: for exact comparisons of losses and gradients."""
    torch.manual_seed(0)
    config = ModelConfig(embedding_size=8, hidden_size=8, num_layers=2, attention="general",
                         dropout=dropout)
    return Seq2Seq(config, len(WORDS) + 4).double()


def random_gru(vocab_size: int = 12, seed: int = 0, eos_bias: float = 0.0) -> Seq2Seq:
    """A seeded float32 GRU model (dot attention) of random weights, in eval mode, for
    decoding; ``eos_bias`` makes EOS likelier, so some answers finish early."""
    torch.manual_seed(seed)
    config = ModelConfig(embedding_size=8, hidden_size=8, num_layers=2, dropout=0.0)
    model = Seq2Seq(config, vocab_size).eval()
    with torch.no_grad():
        model.decoder.out.bias[EOS_ID] += eos_bias
    return model


def fit(model: torch.nn.Module, batch: Batch, lr: float, steps: int) -> list[float]:
    """Train ``model`` on one batch with Adam; the mean loss per token before each step."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = model.loss(batch, reduction="mean").loss
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def grads(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p)
            for p in model.parameters()]


def run_cli(argv: list[str], stdin: str | bytes | None, monkeypatch: pytest.MonkeyPatch | None,
            capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``padless ARGV < stdin`` in this process: (exit code, stdout, stderr).

    stdin is not a terminal (the scripted mode) and holds these bytes (UTF-8 if text); None
    leaves stdin alone, for a command that does not read it.
    """
    if stdin is not None:
        data = stdin.encode("utf-8") if isinstance(stdin, str) else stdin
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, command: str, *words: str) -> None:
    """Exit 2 and one line ``padless COMMAND: error: ...`` holding ``words``; no traceback."""
    assert code == 2, err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"padless {command}: error: "), err
    for word in words:
        assert word in last, (word, err)


class GatedModel:
    """A model whose decoding steps wait at a gate: ``entered`` is set when a step arrives,
    and the step goes on once ``release`` is set; so a test can look at a server (or a
    batcher) while the model is busy, without guessing how long a step takes."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.entered, self.release = threading.Event(), threading.Event()

    def __getattr__(self, name: str):
        return getattr(self.model, name)

    def decode_step(self, prev, state):
        self.entered.set()
        assert self.release.wait(60), "the test never opened the gate"
        return self.model.decode_step(prev, state)


def wait_until(condition, what: str, timeout: float = 60.0) -> None:
    """Until ``condition()`` holds (checked every millisecond); fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} never happened"
        time.sleep(0.001)


@contextmanager
def serve_in_thread(app: object) -> Iterator[str]:
    """Run ``app`` (an ASGI application) under uvicorn on a free loopback port, in a thread;
    yields its base URL (``http://127.0.0.1:PORT``) and stops the server on exit."""
    import uvicorn

    from padless.serving.server import bind

    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


@contextmanager
def full_disk(monkeypatch: pytest.MonkeyPatch, room: int) -> Iterator[None]:
    """Every file :func:`padless.runtime.files.atomic_write` writes fails as on a full disk
    (``ENOSPC``) once it holds more than ``room`` bytes; smaller files are written."""
    import errno
    import os

    real_fdopen = os.fdopen

    class FullFile:
        def __init__(self, file) -> None:
            self.file, self.written = file, 0

        def write(self, data) -> int:
            self.written += len(data)
            if self.written > room:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.file.write(data)

        def __getattr__(self, name: str):
            return getattr(self.file, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.file.close()

    with monkeypatch.context() as patch:
        patch.setattr("padless.runtime.files.os.fdopen",
                      lambda fd, mode: FullFile(real_fdopen(fd, mode)))
        yield
