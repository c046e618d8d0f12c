"""An imported Marian model of opus-mt-en-fr's size: padless against Hugging Face, fine-tuning
and decoding, on the same batches and the same weights.

The model is ``transformers``' MarianMTModel with random weights and opus-mt-en-fr's sizes
(d_model 512, 6+6 layers, 8 heads, FFN 2048, a vocabulary of 59,514: a sentencepiece model
trained on the corpus, its vocabulary padded with unused entries to that size), saved and
imported with ``padless import``; the corpus is LibreOffice's EN-FR help (docs/data.md),
prepared with ``--text-from`` the imported run, so both see the same ids.

Fine-tuning: the same batches of ``--batch-size`` pairs in one fixed order, either random
(``transformers``' default) or grouped by length (its ``group_by_length``); padless runs its
training step (packed real tokens, the chunked projection + loss), ``transformers`` a plain
loop with ``DataCollatorForSeq2Seq`` and the model's own loss; both with fused Adam(W) in
float32, steps alternating between the two. Target tokens per second: real target tokens
(EOS included) over the step's time, median of the steps. Peak memory: a fresh process per
system and batch order runs ``--memory-steps`` steps; the peak resident memory above the
memory with the model and its optimiser state in place (``VmHWM`` after resetting it).

Decoding: greedy and beam 4 (no length penalty on either side, padless's plain search), of
the test split's sources, at batches of 64 and of 1, padless against ``generate()``; the
answers are checked equal first.

    python -m benchmarks.bench_pretrained                      # writes RESULTS.md
    python -m benchmarks.bench_pretrained --quick --no-write
"""

from __future__ import annotations

import argparse
import io
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks.results import publish
from padless.data.batch import Batch
from padless.data.dataset import PreparedData
from padless.decoding.batched import decode_ids
from padless.decoding.options import SearchOptions
from padless.runs.importing import import_pretrained
from padless.runs.loading import load_model
from padless.training.config import TrainConfig
from padless.training.step import make_optimizer

HERE = Path(__file__).parent
CORPUS = HERE / "data" / "libreoffice-en-fr.tsv"
SIZES = dict(d_model=512, encoder_layers=6, decoder_layers=6, encoder_attention_heads=8,
             decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=2048,
             vocab=59_514)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=HERE / "data" / "pretrained",
                        help="where the model, the run and the data go (kept between runs)")
    parser.add_argument("--batch-size", type=int, default=32, help="pairs per batch")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per system and order")
    parser.add_argument("--memory-steps", type=int, default=3)
    parser.add_argument("--sentences", type=int, default=128, help="decoded at batches of 64")
    parser.add_argument("--lone", type=int, default=8, help="decoded one at a time")
    parser.add_argument("--quick", action="store_true", help="fewer steps and sentences")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--memory-of", help=argparse.SUPPRESS)  # SYSTEM,ORDER: a child run
    return parser.parse_args(argv)


# -- the model and the data ----------------------------------------------------------------

def build(work: Path) -> tuple[Path, Path]:
    """The Marian folder, the imported run and the prepared data (built once)."""
    import sentencepiece as spm
    import transformers as hf

    model_dir, run, data = work / "marian", work / "run", work / "data"
    if (data / "metadata.json").exists():
        return run, data
    if not CORPUS.exists():
        sys.exit(f"{CORPUS}: missing; build it as docs/data.md, 'A translation corpus', says")
    model_dir.mkdir(parents=True, exist_ok=True)
    sides = [side for line in CORPUS.read_text(encoding="utf-8").splitlines()
             for side in line.split("\t")]
    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(sides), model_writer=proto,
                                   vocab_size=8000, minloglevel=2, num_threads=2)
    for name in ("source.spm", "target.spm"):
        (model_dir / name).write_bytes(proto.getvalue())
    pieces = spm.SentencePieceProcessor(model_proto=proto.getvalue())
    vocab = {"</s>": 0, "<unk>": 1}
    for i in range(pieces.get_piece_size()):
        vocab.setdefault(pieces.id_to_piece(i), len(vocab))
    while len(vocab) < SIZES["vocab"] - 1:
        vocab[f"<unused {len(vocab)}>"] = len(vocab)
    vocab["<pad>"] = len(vocab)
    (model_dir / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    tokenizer = hf.MarianTokenizer(*(str(model_dir / n) for n in
                                     ("source.spm", "target.spm", "vocab.json")))
    tokenizer.save_pretrained(str(model_dir))
    sizes = {k: v for k, v in SIZES.items() if k != "vocab"}
    config = hf.MarianConfig(vocab_size=len(vocab), **sizes, activation_function="swish",
                             scale_embedding=True, pad_token_id=len(vocab) - 1,
                             eos_token_id=0, decoder_start_token_id=len(vocab) - 1,
                             max_position_embeddings=512, dropout=0.1)
    torch.manual_seed(0)
    hf.MarianMTModel(config).save_pretrained(str(model_dir))
    import_pretrained(model_dir, run)
    subprocess.run([sys.executable, "-m", "padless", "prepare", str(CORPUS), "--out", str(data),
                    "--text-from", str(run), "--max-length", "60"], check=True)
    return run, data


def batches(data: PreparedData, batch_size: int, grouped: bool, count: int,
            ) -> list[list[tuple[list[int], list[int]]]]:
    """``count`` batches of the training split in a seeded random order, or grouped by length
    (pairs sorted by length within a seeded sample of 50 batches' worth, as
    ``group_by_length``'s mega-batches are)."""
    train = data.splits["train"]
    rng = random.Random(0)
    chosen = rng.sample(range(len(train)), batch_size * (50 if grouped else count))
    if grouped:
        chosen.sort(key=lambda i: len(train[i][0]) + len(train[i][1]))
    cut = [chosen[k:k + batch_size] for k in range(0, len(chosen), batch_size)]
    if grouped:
        cut = rng.sample(cut, count)
    return [[(list(train[i][0]), list(train[i][1])) for i in indices] for indices in cut]


# -- one training step each ----------------------------------------------------------------

class PadlessStep:
    def __init__(self, run: Path) -> None:
        self.model, text, _ = load_model(run, device="cpu")
        self.model.train()
        self.specials = text.vocab.specials
        tc = TrainConfig(lr=5e-5, decoder_lr_ratio=1.0, betas=(0.9, 0.98))
        self.optimizer = make_optimizer(self.model, tc, torch.device("cpu"))

    def __call__(self, pairs) -> int:
        batch = Batch.from_pairs(pairs, specials=self.specials)
        loss = self.model.loss(batch, reduction="sum").loss / batch.n_tokens
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return batch.n_tokens


class HFStep:
    def __init__(self, run: Path, model_dir: Path) -> None:
        import transformers as hf

        self.model = hf.MarianMTModel.from_pretrained(str(model_dir)).train()
        tokenizer = hf.AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        self.collate = hf.DataCollatorForSeq2Seq(tokenizer, model=self.model)
        self.eos = self.model.config.eos_token_id
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=5e-5, betas=(0.9, 0.98),
                                           weight_decay=0.0, fused=True)

    def __call__(self, pairs) -> int:
        features = [{"input_ids": s, "attention_mask": [1] * len(s), "labels": [*t, self.eos]}
                    for s, t in pairs]
        inputs = self.collate(features)
        loss = self.model(**inputs).loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return int((inputs["labels"] != -100).sum())


def steppers(run: Path, work: Path) -> dict:
    return {"padless": PadlessStep(run), "transformers": HFStep(run, work / "marian")}


def memory_child(args: argparse.Namespace, run: Path, data: PreparedData) -> int:
    """Peak resident memory of ``--memory-steps`` steps of one system, above its model and
    optimiser state (printed as JSON)."""
    system, order = args.memory_of.split(",")
    step = steppers(run, args.work)[system]
    chosen = batches(data, args.batch_size, order == "grouped", args.memory_steps + 1)
    step(chosen[0])  # the optimiser state exists now
    status = Path("/proc/self/status")

    def field(name: str) -> int:
        line = next(x for x in status.read_text().splitlines() if x.startswith(name))
        return int(line.split()[1]) * 1024

    Path("/proc/self/clear_refs").write_text("5")  # the peak starts again from here
    base = field("VmRSS")
    for pairs in chosen[1:]:
        step(pairs)
    print(json.dumps({"base": base, "peak": field("VmHWM")}))
    return 0


def measure_memory(args: argparse.Namespace, system: str, order: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_pretrained",
                           "--work", str(args.work), "--batch-size", str(args.batch_size),
                           "--memory-steps", str(args.memory_steps),
                           "--memory-of", f"{system},{order}"],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- decoding ------------------------------------------------------------------------------

def generate(hf_model, sources: list[list[int]], pad: int, eos: int, beams: int,
             batch_size: int, max_length: int) -> list[list[int]]:
    answers = []
    for start in range(0, len(sources), batch_size):
        chunk = sources[start:start + batch_size]
        width = max(map(len, chunk))
        ids = torch.tensor([s + [pad] * (width - len(s)) for s in chunk])
        with torch.no_grad():
            rows = hf_model.generate(input_ids=ids, attention_mask=(ids != pad).long(),
                                     num_beams=beams, do_sample=False, length_penalty=0.0,
                                     max_new_tokens=max_length, forced_eos_token_id=None,
                                     bad_words_ids=[[pad]], early_stopping=False)
        for row in rows.tolist():
            answer = row[1:]
            answers.append(answer[:answer.index(eos)] if eos in answer else
                           [t for t in answer if t != pad])
    return answers


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.quick:
        args.steps, args.sentences, args.lone = 2, 64, 2
    torch.manual_seed(0)
    run, data_dir = build(args.work)
    data = PreparedData.load(data_dir)
    if args.memory_of:
        return memory_child(args, run, data)
    body = ["### Fine-tuning", "",
            "| batches | system | target tokens/s | ratio | peak memory above weights + "
            "optimiser | ratio |", "|---|---|---|---|---|---|"]
    for order in ("random", "grouped"):
        chosen = batches(data, args.batch_size, order == "grouped", args.steps + 1)
        systems = steppers(run, args.work)
        rates: dict[str, list[float]] = {name: [] for name in systems}
        for step in systems.values():
            step(chosen[0])  # warm-up: kernels, the optimiser state
        for pairs in chosen[1:]:
            for name, step in systems.items():
                started = time.perf_counter()
                tokens = step(pairs)
                rates[name].append(tokens / (time.perf_counter() - started))
                print(f"{order} {name}: {rates[name][-1]:,.0f} tokens/s", flush=True)
        del systems
        memory = {name: measure_memory(args, name, order) for name in rates}
        ours, theirs = (statistics.median(rates[n]) for n in ("padless", "transformers"))
        used = {n: (m["peak"] - m["base"]) / 2**20 for n, m in memory.items()}
        for name, rate in (("padless", ours), ("transformers", theirs)):
            body.append(f"| {order} | {name} | {rate:,.0f} | {rate / theirs:.2f}x | "
                        f"{used[name]:,.0f} MiB | {used[name] / used['transformers']:.2f}x |")
    body += ["", "### Decoding (sentences/s)", "",
             "| search | batch | padless | generate() | ratio |", "|---|---|---|---|---|"]
    model, text, _ = load_model(run, device="cpu")
    import transformers as hf

    hf_model = hf.MarianMTModel.from_pretrained(str(args.work / "marian")).eval()
    specials = text.vocab.specials
    sources = [s for s, _ in list(data.splits["test"])[: args.sentences]]
    for search, beams in (("greedy", 1), ("beam 4", 4)):
        options = SearchOptions.plain("greedy" if beams == 1 else "beam", beam_size=beams,
                                      alpha=0.0, max_length=40)
        generate(hf_model, sources[:1], specials.pad, specials.eos, beams, 1, 40)  # warm-up
        for batch_size, chosen in ((64, sources), (1, sources[: args.lone])):
            ours = [n[0].tokens for n in decode_ids(model, chosen, options,
                                                    batch_size=batch_size)]
            started = time.perf_counter()
            decode_ids(model, chosen, options, batch_size=batch_size)
            ours_s = len(chosen) / (time.perf_counter() - started)
            started = time.perf_counter()
            theirs = generate(hf_model, chosen, specials.pad, specials.eos, beams, batch_size,
                              40)
            theirs_s = len(chosen) / (time.perf_counter() - started)
            same = sum(a == b for a, b in zip(ours, theirs, strict=True))
            body.append(f"| {search} | {batch_size} | {ours_s:.2f} | {theirs_s:.2f} | "
                        f"{ours_s / theirs_s:.2f}x ({same}/{len(chosen)} answers equal) |")
    publish("bench_pretrained", "A Marian model of opus-mt-en-fr's size: padless against "
            "transformers (`bench_pretrained.py`)", "bench_pretrained.py", argv,
            f"; random weights, LibreOffice EN-FR (training pairs of at most 60 pieces a side), "
            f"float32, batches of {args.batch_size} pairs, median of {args.steps} steps each, "
            f"alternating; memory over {args.memory_steps} steps in a fresh process each.",
            body, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
