"""Plain helpers the test folders share (fixtures are in ``conftest.py``)."""

from __future__ import annotations

import csv
import io
import json
import os
import random
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from padless.cli import main
from padless.data.batch import Batch
from padless.data.dataset import text_files, write_split
from padless.data.store import write_token_split
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


TokenPairs = list[tuple[list[str], list[str]]]


def write_dataset(directory: Path, splits: dict[str, TokenPairs]) -> Path:
    """A prepared dataset of these word pairs over the vocabulary of :data:`WORDS`, written
    as ``padless prepare`` writes one (with the data pipeline's own writers): the token store
    training reads, the TSV files, the text pipeline and ``metadata.json``."""
    directory.mkdir(parents=True, exist_ok=True)
    text = TextProcessor(Vocabulary(WORDS), normalize="none")
    text.save(directory)
    store = {}
    for name, pairs in splits.items():
        write_split(directory / f"{name}.tsv", pairs)
        store[name] = write_token_split(directory, name, [
            (text.vocab.encode(s), text.vocab.encode(t)) for s, t in pairs], len(text.vocab))
    (directory / "metadata.json").write_text(json.dumps(
        {"format": "padless-prepared", "version": 2, "vocab_size": len(text.vocab),
         "store": store, "text_files": text_files(directory)}))
    return directory


def write_reversal_dataset(directory: Path, n_train: int = 240) -> Path:
    """A prepared dataset of the reversal task (:func:`write_dataset`)."""
    return write_dataset(directory, {name: reversal_pairs(n, seed) for name, n, seed in (
        ("train", n_train, 0), ("valid", 24, 1), ("test", 8, 2))})


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


# -- pretrained models, built as Hugging Face's own tests build them ----------------------

HF_TEXT = ["the cat sat on the mat", "a dog ran in the park", "hello there how are you ?",
           "le chat est sur le tapis", "un chien court dans le parc", "fine thanks ."]
HF_KINDS = ("marian", "bart", "blenderbot-small")


def hf_tokenizer_files(kind: str, directory: Path, extra_tokens: int = 0) -> None:
    """A tokenizer of ``kind`` trained on :data:`HF_TEXT`, saved into ``directory``: Marian's
    sentencepiece models and vocab.json, BART's byte-level BPE, BlenderbotSmall's BPE.
    ``extra_tokens`` more entries in Marian's vocab.json (a large vocabulary)."""
    import sentencepiece as spm
    from tokenizers import ByteLevelBPETokenizer, Tokenizer, models, pre_tokenizers, trainers
    from transformers import BartTokenizer, BlenderbotSmallTokenizer, MarianTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    corpus = HF_TEXT * 20
    if kind == "marian":
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus), model_writer=model,
                                       vocab_size=40, hard_vocab_limit=False, minloglevel=2)
        for name in ("source.spm", "target.spm"):
            (directory / name).write_bytes(model.getvalue())
        pieces = spm.SentencePieceProcessor(model_proto=model.getvalue())
        vocab = {"</s>": 0, "<unk>": 1}
        for piece in (pieces.id_to_piece(i) for i in range(pieces.get_piece_size())):
            vocab.setdefault(piece, len(vocab))
        for i in range(extra_tokens):
            vocab[f"extra{i}"] = len(vocab)
        vocab["<pad>"] = len(vocab)
        (directory / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        tokenizer = MarianTokenizer(*(str(directory / n) for n in
                                      ("source.spm", "target.spm", "vocab.json")))
    elif kind == "bart":
        bpe = ByteLevelBPETokenizer()
        bpe.train_from_iterator(corpus, vocab_size=300, show_progress=False,
                                special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
        bpe.save_model(str(directory))
        tokenizer = BartTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"))
    else:  # BlenderbotSmall's BPE: "@@" after a piece that a word goes on from
        bpe = Tokenizer(models.BPE(unk_token="__unk__", end_of_word_suffix="</w>"))
        bpe.pre_tokenizer = pre_tokenizers.Whitespace()
        bpe.train_from_iterator(corpus, trainers.BpeTrainer(
            vocab_size=200, end_of_word_suffix="</w>", show_progress=False,
            special_tokens=["__null__", "__start__", "__end__", "__unk__"]))
        learned = json.loads(bpe.to_str())["model"]
        vocab: dict[str, int] = {}
        for token, _ in sorted(learned["vocab"].items(), key=lambda item: item[1]):
            name = (token[:-4] if token.endswith("</w>") else
                    token if token.startswith("__") else token + "@@")
            vocab.setdefault(name, len(vocab))
        (directory / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        merges = [m if isinstance(m, str) else " ".join(m) for m in learned["merges"]]
        (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n",
                                              encoding="utf-8")
        tokenizer = BlenderbotSmallTokenizer(str(directory / "vocab.json"),
                                             str(directory / "merges.txt"))
    tokenizer.save_pretrained(str(directory))


def hf_model(kind: str, directory: Path, *, seed: int = 0, train_steps: int = 80,
             extra_tokens: int = 0, **sizes: int):
    """A ``transformers`` model of ``kind``, saved with its tokenizer into ``directory``;
    returned in eval mode. Its random weights (with non-trivial norms and output bias) are
    trained ``train_steps`` Adam steps to copy :data:`HF_TEXT`, so that its answers have
    lengths of their own (a random post-norm model repeats one token to the end)."""
    import transformers as hf

    hf_tokenizer_files(kind, directory, extra_tokens)
    tokenizer = hf.AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    common = dict(vocab_size=len(tokenizer), d_model=16, encoder_layers=2, decoder_layers=2,
                  encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                  decoder_ffn_dim=32, max_position_embeddings=64, dropout=0.0,
                  scale_embedding=True)
    common.update(sizes)
    if kind == "marian":
        pad = tokenizer.pad_token_id
        config = hf.MarianConfig(**common, pad_token_id=pad, eos_token_id=0,
                                 decoder_start_token_id=pad, activation_function="swish")
        model = hf.MarianMTModel(config)
    elif kind == "bart":
        config = hf.BartConfig(**common, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                               decoder_start_token_id=2, forced_bos_token_id=None)
        model = hf.BartForConditionalGeneration(config)
    else:
        config = hf.BlenderbotSmallConfig(**common, pad_token_id=0, bos_token_id=1,
                                          eos_token_id=2, decoder_start_token_id=1)
        model = hf.BlenderbotSmallForConditionalGeneration(config)
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
        model.final_logits_bias.normal_(std=0.1)
    inputs = tokenizer(HF_TEXT, text_target=HF_TEXT, padding=True, return_tensors="pt")
    labels = inputs.pop("labels")
    if kind == "blenderbot-small":  # its tokenizer adds no EOS: the answers must end
        lengths = (labels != config.pad_token_id).sum(1)
        labels = torch.cat([labels, labels.new_full((len(labels), 1), config.pad_token_id)], 1)
        labels[torch.arange(len(labels)), lengths] = config.eos_token_id
    labels = labels.masked_fill(labels == config.pad_token_id, -100)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(train_steps):
        optimizer.zero_grad()
        model(**inputs, labels=labels).loss.backward()
        optimizer.step()
    model.save_pretrained(str(directory))
    return model.eval()


def read_log(run_dir: Path, kind: str) -> list[dict[str, str]]:
    """The rows of ``kind`` ("train", "valid") of a run's ``log.csv``."""
    with open(run_dir / "log.csv") as f:
        return [r for r in csv.DictReader(f) if r["kind"] == kind]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def subprocess_env() -> dict[str, str]:
    """This environment for a child ``padless`` or ``torchrun``: one thread, unbuffered, and
    none of the variables of a process group this test may run in."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env
