"""The PyTorch chatbot tutorial's model and training loop, written here from its
description, for the benchmarks that compare padless with it (``bench_train``,
``bench_quality``), and the candidates they train in turns: :class:`Candidate`,
:func:`make_tutorial` (the tutorial's algorithm) and :func:`make_padless` (what ``padless
train --config tutorial`` runs).

The tutorial's settings: hidden 500, 2 layers, dot attention, dropout 0.1, batches of 64
pairs, Adam lr 1e-4 with the decoder's lr x5, gradient clipping at 50, teacher forcing 1.0.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from padless.data.batch import Batch
from padless.data.dataset import PreparedData
from padless.data.loader import TrainingBatches
from padless.data.vocabulary import BOS_ID, EOS_ID, PAD_ID
from padless.models.scoring import teacher_forced_scores
from padless.runs.directory import RunDirectory
from padless.training.config import load_config
from padless.training.distributed import World
from padless.training.trainer import Trainer

Pair = tuple[list[int], list[int]]

HIDDEN, LAYERS, DROPOUT, BATCH = 500, 2, 0.1, 64
LR, DECODER_LR_RATIO, CLIP = 1e-4, 5.0, 50.0
WARMUP_STEPS = 3  # first steps of each candidate: allocator and cache warm-up, not timed


# --- (a) the tutorial's model and training step, as the tutorial writes them --------------


class TutorialEncoderRNN(nn.Module):
    """The tutorial's ``EncoderRNN``: sorted packed input, directions summed."""

    def __init__(self, hidden_size: int, embedding: nn.Embedding, n_layers: int, dropout: float):
        super().__init__()
        self.hidden_size = hidden_size
        self.embedding = embedding
        self.gru = nn.GRU(
            hidden_size, hidden_size, n_layers, dropout=0 if n_layers == 1 else dropout,
            bidirectional=True,
        )

    def forward(self, input_seq: Tensor, input_lengths: Tensor) -> tuple[Tensor, Tensor]:
        """``[S, B]`` ids sorted by decreasing length -> ``([S, B, H], [2 * layers, B, H])``."""
        packed = nn.utils.rnn.pack_padded_sequence(self.embedding(input_seq), input_lengths)
        outputs, hidden = self.gru(packed)
        outputs, _ = nn.utils.rnn.pad_packed_sequence(outputs)
        outputs = outputs[:, :, : self.hidden_size] + outputs[:, :, self.hidden_size :]
        return outputs, hidden


class TutorialAttn(nn.Module):
    """The tutorial's ``Attn`` with the ``dot`` score; no source mask."""

    def forward(self, hidden: Tensor, encoder_outputs: Tensor) -> Tensor:
        """``[1, B, H]``, ``[S, B, H]`` -> weights ``[B, 1, S]`` (pads get weight too)."""
        attn_energies = torch.sum(hidden * encoder_outputs, dim=2).t()
        return F.softmax(attn_energies, dim=1).unsqueeze(1)


class TutorialLuongAttnDecoderRNN(nn.Module):
    """The tutorial's ``LuongAttnDecoderRNN``: one step, returns probabilities (softmax)."""

    def __init__(
        self, embedding: nn.Embedding, hidden_size: int, output_size: int, n_layers: int,
        dropout: float,
    ):
        super().__init__()
        self.n_layers = n_layers
        self.embedding = embedding
        self.embedding_dropout = nn.Dropout(dropout)
        self.gru = nn.GRU(
            hidden_size, hidden_size, n_layers, dropout=0 if n_layers == 1 else dropout
        )
        self.concat = nn.Linear(hidden_size * 2, hidden_size)
        self.out = nn.Linear(hidden_size, output_size)
        self.attn = TutorialAttn()

    def forward(
        self, input_step: Tensor, last_hidden: Tensor, encoder_outputs: Tensor
    ) -> tuple[Tensor, Tensor]:
        """``[1, B]`` ids -> ``(probabilities [B, V], hidden [layers, B, H])``."""
        embedded = self.embedding_dropout(self.embedding(input_step))
        rnn_output, hidden = self.gru(embedded, last_hidden)
        attn_weights = self.attn(rnn_output, encoder_outputs)
        context = attn_weights.bmm(encoder_outputs.transpose(0, 1))
        concat_input = torch.cat((rnn_output.squeeze(0), context.squeeze(1)), 1)
        concat_output = torch.tanh(self.concat(concat_input))
        return F.softmax(self.out(concat_output), dim=1), hidden


def mask_nll_loss(inp: Tensor, target: Tensor, mask: Tensor) -> tuple[Tensor, int]:
    """The seed's ``maskNLLLoss``: mean of ``-log(p)`` over one step's real tokens."""
    n_total = mask.sum()
    cross_entropy = -torch.log(torch.gather(inp, 1, target.view(-1, 1)).squeeze(1))
    return cross_entropy.masked_select(mask).mean(), int(n_total.item())


@dataclass
class TutorialBatch:
    """``batch2TrainData``'s output: sources with EOS sorted by length, time-major."""

    input_variable: Tensor  # [S, B]
    lengths: Tensor  # [B], decreasing
    target_variable: Tensor  # [T, B], targets with EOS
    mask: Tensor  # [T, B] bool
    max_target_len: int


def tutorial_batch(pairs: Sequence[Pair]) -> TutorialBatch:
    """The tutorial's ``batch2TrainData`` on already-indexed pairs (EOS appended to both)."""
    pairs = sorted(pairs, key=lambda p: len(p[0]), reverse=True)
    inputs = [[*s, EOS_ID] for s, _ in pairs]
    outputs = [[*t, EOS_ID] for _, t in pairs]
    input_variable = nn.utils.rnn.pad_sequence(
        [torch.tensor(s) for s in inputs], padding_value=PAD_ID
    )
    target_variable = nn.utils.rnn.pad_sequence(
        [torch.tensor(t) for t in outputs], padding_value=PAD_ID
    )
    return TutorialBatch(
        input_variable,
        torch.tensor([len(s) for s in inputs]),
        target_variable,
        target_variable != PAD_ID,
        target_variable.shape[0],
    )


class TutorialModel(nn.Module):
    """Encoder + decoder sharing one embedding, as the tutorial builds them."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        embedding = nn.Embedding(vocab_size, HIDDEN)
        self.encoder = TutorialEncoderRNN(HIDDEN, embedding, LAYERS, DROPOUT)
        self.decoder = TutorialLuongAttnDecoderRNN(embedding, HIDDEN, vocab_size, LAYERS, DROPOUT)

    def step_probs(self, batch: TutorialBatch, device: torch.device) -> list[Tensor]:
        """Teacher-forced decoder outputs, one ``[B, V]`` probability tensor per step."""
        encoder_outputs, encoder_hidden = self.encoder(
            batch.input_variable.to(device), batch.lengths
        )
        target = batch.target_variable.to(device)
        decoder_input = torch.full((1, target.shape[1]), BOS_ID, device=device)
        # The tutorial's layer mix-up: [layer0-fwd, layer0-bwd] for decoder layers 0 and 1.
        decoder_hidden = encoder_hidden[: self.decoder.n_layers]
        probs = []
        for t in range(batch.max_target_len):
            decoder_output, decoder_hidden = self.decoder(
                decoder_input, decoder_hidden, encoder_outputs
            )
            decoder_input = target[t].view(1, -1)
            probs.append(decoder_output)
        return probs


# --- the candidates -------------------------------------------------------------------------


def step_flops(src_lengths: Sequence[int], tgt_lengths: Sequence[int], vocab_size: int) -> float:
    """Useful training FLOPs of one batch: real tokens only, forward x 3 (backward = 2x).

    ``src_lengths``/``tgt_lengths`` are the real lengths each model reads and predicts.
    """
    h, e = HIDDEN, HIDDEN
    encoder = sum(2 * 2 * 3 * h * ((e if i == 0 else 2 * h) + h) for i in range(LAYERS))
    decoder = sum(2 * 3 * h * ((e if i == 0 else h) + h) for i in range(LAYERS))
    decoder += 2 * (2 * h) * h + 2 * h * vocab_size  # concat layer, output projection
    forward = encoder * sum(src_lengths) + decoder * sum(tgt_lengths)
    # dot scores and context: 2 * 2H flops per (target step, source position) of a pair
    forward += sum(4 * h * s * t for s, t in zip(src_lengths, tgt_lengths, strict=True))
    return 3.0 * forward


@dataclass
class Candidate:
    """One training setup and what it measured, turn by turn."""

    name: str
    step: Callable[[], tuple[int, float]]  # one optimiser step -> (target tokens, FLOPs)
    evaluate: Callable[[list[list[int]]], float]  # valid batches -> per-token loss
    steps: int = 0
    train_seconds: float = 0.0
    turns: list[tuple[int, float, float]] = field(default_factory=list)  # tokens, s, FLOPs

    def train_for(self, seconds: float) -> None:
        """Run whole optimiser steps until ``seconds`` have passed (the last step overruns).

        The turn's real target tokens, step seconds (forward, backward, optimiser; batch
        building excluded) and FLOPs are recorded, without the first ``WARMUP_STEPS`` steps.
        """
        start = time.perf_counter()
        tokens, busy, flops = 0, 0.0, 0.0
        while time.perf_counter() - start < seconds:
            t0 = time.perf_counter()
            n, f = self.step()
            elapsed = time.perf_counter() - t0
            self.steps += 1
            if self.steps > WARMUP_STEPS:
                tokens, busy, flops = tokens + n, busy + elapsed, flops + f
        self.train_seconds += time.perf_counter() - start
        if busy > 0:
            self.turns.append((tokens, busy, flops))

    def tokens_per_second(self) -> float:
        """Median over turns of real target tokens per second of training steps (NaN: none)."""
        return statistics.median(n / s for n, s, _ in self.turns) if self.turns else math.nan

    def gflops_per_second(self) -> float:
        """Median over turns of useful GFLOP per second of training steps (NaN: none)."""
        return statistics.median(f / s / 1e9 for _, s, f in self.turns) if self.turns else math.nan


def make_tutorial(
    train: list[Pair], valid: list[Pair], vocab_size: int, device: torch.device, seed: int
) -> Candidate:
    """Candidate (a): the tutorial's ``trainIters``/``train`` and its random batches."""
    torch.manual_seed(seed)
    model = TutorialModel(vocab_size).to(device)
    # Two optimisers as in the tutorial; the shared embedding is in both and gets two updates.
    encoder_optimizer = torch.optim.Adam(model.encoder.parameters(), lr=LR)
    decoder_optimizer = torch.optim.Adam(model.decoder.parameters(), lr=LR * DECODER_LR_RATIO)
    rng = random.Random(seed)

    def step() -> tuple[int, float]:
        batch = tutorial_batch([rng.choice(train) for _ in range(BATCH)])
        model.train()
        encoder_optimizer.zero_grad()
        decoder_optimizer.zero_grad()
        loss = torch.zeros((), device=device)
        print_losses, n_totals = [], 0
        mask = batch.mask.to(device)
        target = batch.target_variable.to(device)
        for t, probs in enumerate(model.step_probs(batch, device)):
            mask_loss, n_total = mask_nll_loss(probs, target[t], mask[t])
            loss = loss + mask_loss
            print_losses.append(mask_loss.item() * n_total)
            n_totals += n_total
        loss.backward()
        nn.utils.clip_grad_norm_(model.encoder.parameters(), CLIP)
        nn.utils.clip_grad_norm_(model.decoder.parameters(), CLIP)
        encoder_optimizer.step()
        decoder_optimizer.step()
        src = batch.lengths.tolist()
        tgt = batch.mask.sum(0).tolist()
        return n_totals, step_flops(src, tgt, vocab_size)

    @torch.no_grad()
    def evaluate(index_batches: list[list[int]]) -> float:
        model.eval()
        total, count = 0.0, 0
        for indices in index_batches:
            batch = tutorial_batch([valid[i] for i in indices])
            target = batch.target_variable.to(device)
            mask = batch.mask.to(device)
            for t, probs in enumerate(model.step_probs(batch, device)):
                nll = -torch.log(probs.gather(1, target[t].view(-1, 1)).squeeze(1))
                total += float(nll[mask[t]].sum())
                count += int(mask[t].sum())
        return total / count

    return Candidate("tutorial (a)", step, evaluate)


class _Recorder:
    """The trainer's batches, remembering the last one (its lengths give the step's FLOPs)."""

    def __init__(self, batches: TrainingBatches) -> None:
        self.batches = batches
        self.last: Batch | None = None

    def __next__(self) -> Batch:
        self.last = next(self.batches)
        return self.last

    def __getattr__(self, name: str) -> object:
        return getattr(self.batches, name)


def make_padless(
    data: PreparedData, device: torch.device, seed: int, precision: str, run_dir: Path
) -> Candidate:
    """Candidate (b): what ``padless train --config tutorial`` runs (its
    :class:`~padless.training.trainer.Trainer`'s own step: ``Seq2Seq.loss`` on bucketed
    batches, the per-token mean), fp32 or under bf16 autocast."""
    config = load_config("tutorial", [
        f"train.seed={seed}", f"train.precision={precision}", f"train.device={device}",
        "train.max_steps=100000000", "train.valid_every=100000000",
        "train.log_every=100000000"])
    world = World(rank=0, world_size=1, local_rank=0, device=device)
    trainer = Trainer(config, data.text, data.splits, RunDirectory(run_dir / precision), world,
                      progress=False)
    trainer.say = lambda *_: None
    recorder = _Recorder(trainer.batches)
    trainer.batches = recorder  # type: ignore[assignment]
    vocab_size = len(data.vocab)

    def step() -> tuple[int, float]:
        tokens = trainer.window.tokens
        trainer.train_step()
        batch = recorder.last
        flops = step_flops(batch.src_lengths.tolist(), batch.tgt_lengths.tolist(), vocab_size)
        return trainer.window.tokens - tokens, flops

    def evaluate(index_batches: list[list[int]]) -> float:
        return teacher_forced_scores(trainer.model, data.batches("valid", index_batches)).loss

    return Candidate(f"padless {precision}", step, evaluate)
