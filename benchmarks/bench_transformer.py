"""The pad-free Transformer: training speed against ``torch.nn.Transformer``, decoding speed
against the GRU model.

Training (forward + backward, real target tokens per second): padless's
:class:`~padless.models.transformer.Transformer` (real tokens packed to ``[N, H]``, attention
on masked per-sequence blocks, only real tokens projected to the vocabulary) against
``torch.nn.Transformer`` (``norm_first=True``, the same sizes and dropout) fed padded
``[L, B]`` batches with ``src/tgt/memory_key_padding_mask`` and a causal mask, with the same
embeddings, sinusoidal positions and output layer, and ``F.cross_entropy(ignore_index=PAD)``
on the padded logits: the way a padded Transformer is usually trained. Both start from the
same weights (copied), and the benchmark first checks that they compute the same loss.
They run the same batches, in two settings: random batches of 64 pairs (the padding a
plain shuffled loader gives) and length-bucketed batches of at most ``--max-tokens`` padded
tokens (``BucketBatchSampler``, what padless trains on). No optimiser step: the weights stay
put, so every round times the same work. Candidates alternate round by round; figures are
medians over rounds.

Decoding (sentences per second, greedy and beam 5, ``padless.decoding.batched.decode_ids``):
the Transformer against the GRU model (the ``chatbot`` config, its hidden size chosen so the
parameter counts are close), both randomly initialised, on the first validation sources.
Random models seldom say EOS, so both decode about ``--max-length`` steps per sentence: the
figures compare the cost of a step.

    python -m benchmarks.bench_transformer                 # writes its RESULTS.md section
    python -m benchmarks.bench_transformer --quick         # smoke run, nothing written
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks.data import load_data
from benchmarks.machine import bf16_is_native, matmul_gflops
from benchmarks.models import gru_like
from benchmarks.results import publish
from padless.data.batch import Batch
from padless.data.dataset import PreparedData
from padless.data.sampler import random_batches
from padless.data.vocabulary import PAD_ID
from padless.decoding.batched import decode_ids
from padless.decoding.options import SearchOptions
from padless.models import build_model
from padless.models.transformer import Transformer
from padless.models.transformer_layers import sinusoids
from padless.runtime.timing import alternating_times
from padless.training.config import load_config

RANDOM_BATCH = 64  # pairs per random batch


class TorchTransformer(nn.Module):
    """``torch.nn.Transformer`` with padless's embeddings, positions and output layer, run
    the padded way; built with a copy of a padless :class:`Transformer`'s weights."""

    def __init__(self, model: Transformer) -> None:
        super().__init__()
        c = model.config
        self.transformer = nn.Transformer(
            c.hidden_size, c.num_heads, c.num_layers, c.num_layers, c.transformer_ffn_size,
            c.dropout, norm_first=True)
        self.embedding = nn.Embedding.from_pretrained(model.src_embedding.weight.detach().clone(),
                                                      freeze=False)
        self.output = nn.Linear(c.hidden_size, model.vocab_size)
        self.output.weight = self.embedding.weight  # tied, as in the padless model
        self.output.bias = nn.Parameter(model.output.bias.detach().clone())
        self.dropout = nn.Dropout(c.dropout)
        self.scale = math.sqrt(c.hidden_size)
        self.register_buffer("positions", sinusoids(512, c.hidden_size).float())
        with torch.no_grad():
            self._copy(model)

    def _copy(self, model: Transformer) -> None:
        for mine, theirs in zip(self.transformer.encoder.layers, model.encoder_layers,
                                strict=True):
            _copy_attention(mine.self_attn, theirs.self_attention)
            _copy_rest(mine, theirs, ("norm1", "norm2"))
        for mine, theirs in zip(self.transformer.decoder.layers, model.decoder_layers,
                                strict=True):
            _copy_attention(mine.self_attn, theirs.self_attention)
            cross = theirs.cross_attention
            mine.multihead_attn.in_proj_weight.copy_(
                torch.cat([cross.query.weight, cross.key_value.weight]))
            mine.multihead_attn.in_proj_bias.copy_(
                torch.cat([cross.query.bias, cross.key_value.bias])
            )
            mine.multihead_attn.out_proj.load_state_dict(cross.out.state_dict())
            _copy_rest(mine, theirs, ("norm1", "norm2", "norm3"))
        self.transformer.encoder.norm.load_state_dict(model.encoder_norm.state_dict())
        self.transformer.decoder.norm.load_state_dict(model.decoder_norm.state_dict())

    def _embed(self, ids: Tensor) -> Tensor:
        return self.dropout(self.embedding(ids) * self.scale
                            + self.positions[: ids.shape[0]].unsqueeze(1))

    def loss(self, batch: Batch) -> Tensor:
        """Summed cross-entropy over the real target tokens of a time-major batch."""
        steps = batch.tgt_in.shape[0]
        causal = torch.ones(steps, steps, dtype=torch.bool, device=batch.src.device).triu(1)
        src_pads, tgt_pads = ~batch.src_mask.t(), ~batch.tgt_mask.t()  # True at pads
        states = self.transformer(
            self._embed(batch.src), self._embed(batch.tgt_in), tgt_mask=causal,
            src_key_padding_mask=src_pads, tgt_key_padding_mask=tgt_pads,
            memory_key_padding_mask=src_pads, tgt_is_causal=True)
        logits = self.output(states)  # [T, B, V]: pads projected too
        return F.cross_entropy(logits.flatten(0, 1).float(), batch.tgt_out.flatten(),
                               ignore_index=PAD_ID, reduction="sum")


def _copy_attention(attention: nn.MultiheadAttention, theirs: nn.Module) -> None:
    attention.in_proj_weight.copy_(theirs.qkv.weight)
    attention.in_proj_bias.copy_(theirs.qkv.bias)
    attention.out_proj.load_state_dict(theirs.out.state_dict())


def _copy_rest(mine: nn.Module, theirs: nn.Module, norms: Sequence[str]) -> None:
    for name in norms:
        getattr(mine, name).load_state_dict(getattr(theirs, name).state_dict())
    mine.linear1.load_state_dict(theirs.feed_forward.linear1.state_dict())
    mine.linear2.load_state_dict(theirs.feed_forward.linear2.state_dict())


# --- measuring -----------------------------------------------------------------------------


def batch_padding(batches: Sequence[Batch]) -> tuple[float, float]:
    """Fractions of padding (source, target) over ``batches``."""
    src = 1 - sum(int(b.src_mask.sum()) for b in batches) / sum(b.src.numel() for b in batches)
    tgt = 1 - sum(b.n_tokens for b in batches) / sum(b.tgt_in.numel() for b in batches)
    return src, tgt


def time_training(
    candidates: dict[str, tuple[nn.Module, Callable[[Batch], Tensor]]],
    batches: Sequence[Batch], rounds: int, precision: str,
) -> dict[str, list[float]]:
    """Real target tokens/s of forward + backward over ``batches``, per candidate per round."""
    tokens = sum(b.n_tokens for b in batches)
    autocast = torch.autocast("cpu", torch.bfloat16) if precision == "bf16" else nullcontext()

    def train(module: nn.Module, loss_of: Callable[[Batch], Tensor]) -> None:
        module.train()
        for batch in batches:
            module.zero_grad(set_to_none=True)
            with autocast:
                loss = loss_of(batch)
            loss.backward()

    times = alternating_times({name: partial(train, *pair) for name, pair in candidates.items()},
                              rounds=rounds, rotate=True)
    return {name: [tokens / t for t in spent] for name, spent in times.items()}


def check_same_function(model: Transformer, reference: TorchTransformer, batch: Batch) -> None:
    """The two candidates compute the same loss from the same weights (dropout off)."""
    model.eval(), reference.eval()
    with torch.no_grad():
        mine, theirs = model.loss(batch).loss, reference.loss(batch)
    model.train(), reference.train()
    if not math.isclose(mine.item(), theirs.item(), rel_tol=1e-4):
        raise SystemExit(f"the candidates differ: padless loss {mine.item()}, "
                         f"nn.Transformer loss {theirs.item()}")


def time_decoding(models: dict[str, nn.Module], sources: list[list[int]], rounds: int,
                  max_length: int) -> dict[str, list[float]]:
    """Sentences/s of greedy and beam 5 for every model, alternating, per round."""
    searches = {"greedy": SearchOptions(max_length=max_length),
                "beam 5": SearchOptions(method="beam", beam_size=5, max_length=max_length)}
    jobs = {f"{name}, {search}": (model, options) for name, model in models.items()
            for search, options in searches.items()}
    times = alternating_times({name: partial(decode_ids, model.eval(), sources, options,
                                             batch_size=64)
                               for name, (model, options) in jobs.items()}, rounds=rounds)
    return {name: [len(sources) / t for t in spent] for name, spent in times.items()}


# --- the report ----------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path,
                        default=Path(__file__).with_name("data") / "chitchat-max30",
                        help="prepared dataset; prepared from the bundled chitchat corpus "
                             "(--max-length 30 --min-count 3) if missing")
    parser.add_argument("--config", default="transformer",
                        help="bundled config or YAML file whose model is measured")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--batches", type=int, default=8, help="batches per setting")
    parser.add_argument("--max-tokens", type=int, default=2048,
                        help="padded tokens per bucketed batch")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sentences", type=int, default=128, help="sentences decoded")
    parser.add_argument("--max-length", type=int, default=20, help="decoding steps at most")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 2 batches, 1 round, 16 sentences, nothing written")
    parser.add_argument("--results", type=Path,
                        default=Path(__file__).with_name("RESULTS.md"),
                        help="file whose bench_transformer section is rewritten (not --quick)")
    args = parser.parse_args(argv)
    if args.quick:
        args.batches, args.rounds, args.sentences = 2, 1, 16
    # emulated bf16 (some 40x below fp32) would take most of the run and say nothing new
    args.precisions = ("fp32", "bf16") if bf16_is_native() else ("fp32",)
    return args


def training_table(data: PreparedData, model: Transformer, reference: TorchTransformer,
                   args: argparse.Namespace) -> tuple[list[str], dict[str, float]]:
    """Rows of the training table, and padless's speed-up per setting (fp32)."""
    train = data.splits["train"]
    settings = {
        f"random batches of {RANDOM_BATCH} pairs":
            random_batches(len(train), RANDOM_BATCH, seed=1)[: args.batches],
        f"bucketed batches of <= {args.max_tokens} tokens": list(
            data.sampler("train", max_tokens=args.max_tokens, seed=1))[: args.batches],
    }
    candidates = {"torch.nn.Transformer (padded)": (reference, reference.loss),
                  "padless Transformer (packed)": (model, lambda b: model.loss(b).loss)}
    rows = ["| batches | padding src / tgt | precision | candidate | real target tokens/s "
            "(median) | min-max | speed-up |", "|---|---:|---|---|---:|---:|---:|"]
    speedups = {}
    for setting, index_lists in settings.items():
        batches = list(data.batches("train", index_lists))
        check_same_function(model, reference, batches[0])
        src_pad, tgt_pad = batch_padding(batches)
        for precision in args.precisions:
            rates = time_training(candidates, batches, args.rounds, precision)
            base = statistics.median(rates["torch.nn.Transformer (padded)"])
            for name, values in rates.items():
                median = statistics.median(values)
                rows.append(f"| {setting} | {100 * src_pad:.0f}% / {100 * tgt_pad:.0f}% | "
                            f"{precision} | {name} | {median:,.0f} | {min(values):,.0f}-"
                            f"{max(values):,.0f} | {median / base:.2f}x |")
                if precision == "fp32" and name.startswith("padless"):
                    speedups[setting] = median / base
            print(rows[-2], rows[-1], sep="\n", flush=True)
    return rows, speedups


def decoding_table(data: PreparedData, model: Transformer,
                   args: argparse.Namespace) -> tuple[list[str], str]:
    n_params = sum(p.numel() for p in model.parameters())
    gru = gru_like(n_params, len(data.vocab))
    gru_params = sum(p.numel() for p in gru.parameters())
    sources = [s for s, _ in data.splits["valid"][: args.sentences]]
    rates = time_decoding({"GRU": gru, "Transformer": model}, sources, args.rounds,
                          args.max_length)
    rows = ["| model, search | sentences/s (median) | min-max | vs the GRU |",
            "|---|---:|---:|---:|"]
    for name, values in rates.items():
        gru_name = "GRU," + name.split(",", 1)[1]
        ratio = statistics.median(values) / statistics.median(rates[gru_name])
        rows.append(f"| {name} | {statistics.median(values):.1f} | {min(values):.1f}-"
                    f"{max(values):.1f} | {ratio:.2f}x |")
    what = (f"Transformer {n_params / 1e6:.2f} M parameters; GRU (`chatbot` config, hidden "
            f"{gru.config.hidden_size}) {gru_params / 1e6:.2f} M; {len(sources)} validation "
            f"sources, batches of 64, at most {args.max_length} tokens, random weights")
    return rows, what


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    data = load_data(args.data, "--max-length 30 --min-count 3")
    config = load_config(args.config).model
    torch.manual_seed(0)
    model = build_model(config, len(data.vocab))
    reference = TorchTransformer(model)
    fp32_peak, bf16_peak = (matmul_gflops(d, torch.device("cpu"))
                            for d in (torch.float32, torch.bfloat16))
    train_rows, speedups = training_table(data, model, reference, args)
    decode_rows, decode_what = decoding_table(data, model, args)

    random_name, bucket_name = list(speedups)
    body = [
        f"- Model (`{args.config}` config): hidden {config.hidden_size}, {config.num_layers} + "
        f"{config.num_layers} layers, {config.num_heads} heads, FFN "
        f"{config.transformer_ffn_size}, dropout {config.dropout}, tied embeddings; "
        f"vocabulary {len(data.vocab)} (`{args.data.name}`).",
        f"- Training: forward + backward (no optimiser step) over the same {args.batches} "
        f"batches per setting, both from the same weights (checked: same loss); median of "
        f"{args.rounds} alternating rounds. Matmul reference (square, up to 2048^3): fp32 "
        f"{fp32_peak:.0f}, "
        f"bf16 {bf16_peak:.0f} GFLOP/s."
        + ("" if "bf16" in args.precisions else " bf16 training not timed: it is emulated on "
           "this CPU."), "",
        *train_rows, "",
        f"Targets (fp32): random batches at least 1.5x: "
        f"**{'met' if speedups[random_name] >= 1.5 else 'missed'}** "
        f"({speedups[random_name]:.2f}x); bucketed batches not slower: "
        f"**{'met' if speedups[bucket_name] >= 1.0 else 'missed'}** "
        f"({speedups[bucket_name]:.2f}x).", "",
        f"Decoding: {decode_what}.", "", *decode_rows,
    ]
    publish("bench_transformer",
            "Transformer: padless (packed) vs `torch.nn.Transformer` (padded), and decoding "
            "(`benchmarks/bench_transformer.py`)", "bench_transformer.py", argv, ".", body,
            write=not args.quick, results=args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
