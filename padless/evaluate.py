"""``padless evaluate RUN_DIR --data DATA_DIR``: how good is a trained model?

Reports on a split of the prepared data: the per-token loss and perplexity (teacher-forced,
over real target tokens only), BLEU and chrF of the decoded answers against the references
(``sacrebleu``, on detokenised text: the references are the prepared, normalised targets),
and a few outputs beside their references. ``--attention-plot FILE.png`` draws the
decoder's attention for one input as a heatmap.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import sacrebleu
import torch

from padless.batch import Batch
from padless.model import Seq2Seq
from padless.predict import add_decoding_arguments, decode_ids, load_run, search_options
from padless.search import SearchOptions
from padless.text import TextProcessor
from padless.vocabulary import BOS_ID, EOS_ID, PAD_ID

__all__ = ["Evaluation", "add_arguments", "corpus_loss", "evaluate", "plot_attention", "run"]

Pair = tuple[list[int], list[int]]


@dataclass
class Evaluation:
    """Results on one split; ``samples`` holds ``(source, output, reference)`` texts."""

    split: str
    n_pairs: int
    n_tokens: int
    loss: float
    perplexity: float
    n_decoded: int
    bleu: float
    chrf: float
    samples: list[tuple[str, str, str]] = field(default_factory=list)

    def report(self) -> str:
        """A few lines for the user."""
        lines = [
            f"{self.split}: {self.n_pairs} pairs, {self.n_tokens} target tokens",
            f"  loss per token {self.loss:.4f}   perplexity {self.perplexity:.2f}",
            f"  BLEU {self.bleu:.2f}   chrF {self.chrf:.2f}   (sacrebleu, {self.n_decoded} "
            "decoded answers vs. their references)",
        ]
        for source, output, reference in self.samples:
            lines += [f"  > {source}", f"    model:     {output}", f"    reference: {reference}"]
        return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``padless evaluate``."""
    add_decoding_arguments(parser)
    parser.add_argument("--data", metavar="DATA_DIR",
                        help="a prepared dataset (default: the one the run was trained on)")
    parser.add_argument("--split", choices=("test", "valid"), default="test")
    parser.add_argument("--batch-size", type=int, default=64, metavar="N")
    parser.add_argument("--limit", type=int, metavar="N",
                        help="decode only the first N pairs for BLEU/chrF (the loss uses all)")
    parser.add_argument("--samples", type=int, default=5, metavar="N",
                        help="outputs shown beside their references (default 5)")
    parser.add_argument("--attention-plot", metavar="FILE.png",
                        help="draw the decoder's attention for --input (or the first pair)")
    parser.add_argument("--input", metavar="TEXT", help="the sentence of --attention-plot")


@torch.no_grad()
def corpus_loss(
    model: Seq2Seq, pairs: Sequence[Pair], *, batch_size: int = 64
) -> tuple[float, int]:
    """``(mean loss per real target token, number of target tokens)`` over ``pairs``.

    Teacher-forced; EOS counts as a target token. Pairs are batched by length so the
    batches carry little padding (padding costs nothing in the loss, only in time).
    """
    device = next(model.parameters()).device
    ordered = sorted((p for p in pairs if p[0]), key=lambda p: (len(p[0]), len(p[1])))
    total, n_tokens = 0.0, 0
    for start in range(0, len(ordered), batch_size):
        batch = Batch.from_pairs(
            ordered[start : start + batch_size], pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID
        ).to(device)
        out = model.loss(batch, reduction="sum")
        total += float(out.loss)
        n_tokens += int(out.n_tokens)
    return total / max(n_tokens, 1), n_tokens


def text_scores(hypotheses: Sequence[str], references: Sequence[str]) -> tuple[float, float]:
    """Corpus ``(BLEU, chrF)`` of detokenised hypotheses against one reference each."""
    bleu = sacrebleu.corpus_bleu(list(hypotheses), [list(references)])
    chrf = sacrebleu.corpus_chrf(list(hypotheses), [list(references)])
    return bleu.score, chrf.score


def evaluate(
    model: Seq2Seq,
    text: TextProcessor,
    pairs: Sequence[Pair],
    options: SearchOptions,
    *,
    split: str = "test",
    batch_size: int = 64,
    limit: int | None = None,
    n_samples: int = 5,
    progress: bool = False,
) -> Evaluation:
    """Loss and perplexity on all ``pairs``; BLEU/chrF on the first ``limit`` (all if None)."""
    if not pairs:
        raise ValueError(f"the {split} split is empty: nothing to evaluate")
    loss, n_tokens = corpus_loss(model, pairs, batch_size=batch_size)
    decoded_pairs = list(pairs[:limit] if limit is not None else pairs)
    nbests = decode_ids(
        model, [s for s, _ in decoded_pairs], options, batch_size=batch_size, progress=progress
    )
    outputs = [text.decode(nbest[0].tokens) for nbest in nbests]
    references = [text.decode(t) for _, t in decoded_pairs]
    bleu, chrf = text_scores(outputs, references)
    samples = [
        (text.decode(s), output, reference)
        for (s, _), output, reference in zip(decoded_pairs, outputs, references, strict=True)
    ][:n_samples]
    return Evaluation(
        split, len(pairs), n_tokens, loss, math.exp(min(loss, 700.0)), len(outputs), bleu, chrf,
        samples,
    )


def plot_attention(
    model: Seq2Seq, text: TextProcessor, sentence: str, options: SearchOptions, path: str | Path
) -> Path:
    """Decode ``sentence`` and save a heatmap of the ``[output, source]`` attention to ``path``.

    Raises:
        ValueError: if the sentence has no token.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    ids = text.encode(sentence)
    if not ids:
        raise ValueError(f"--input {sentence!r} has no token to attend to")
    ((hyp, *_),) = decode_ids(model, [ids], options, return_attention=True)
    outputs = [text.vocab.id_to_token(i) for i in hyp.tokens] + (["</s>"] if hyp.finished else [])
    sources = [text.vocab.id_to_token(i) for i in ids]
    weights = hyp.attention.numpy()  # [T, S]
    size = (max(4.0, 2.0 + 0.5 * len(sources)), max(3.0, 1.5 + 0.35 * len(outputs)))  # inches
    fig, ax = plt.subplots(figsize=size)
    image = ax.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(sources)), sources, rotation=60, ha="right")
    ax.set_yticks(range(len(outputs)), outputs)
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    fig.colorbar(image, ax=ax, label="attention weight")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run(args: argparse.Namespace) -> int:
    """Evaluate and print the report; exit code 0, or 2 on a bad run, data or option."""
    from padless.checkpoint import read_run_info
    from padless.dataset import PreparedData

    try:
        options = search_options(args)
        data_dir = args.data or read_run_info(args.run_dir).get("data_dir")
        if data_dir is None and args.attention_plot is None:
            raise ValueError(f"{args.run_dir} does not record its data: give --data DATA_DIR")
        model, text = load_run(args)
        data = PreparedData.load(data_dir) if data_dir is not None else None
        if data is not None and data.vocab != text.vocab:
            raise ValueError(f"{data_dir}: its vocabulary differs from {args.run_dir}'s")
        if data is not None:
            result = evaluate(
                model, text, data.splits[args.split], options, split=args.split,
                batch_size=args.batch_size, limit=args.limit, n_samples=args.samples,
                progress=True,
            )
            print(result.report())
        if args.attention_plot is not None:
            sentence = args.input
            if sentence is None:
                if data is None or not data.splits[args.split]:
                    raise ValueError("--attention-plot needs --input TEXT (or --data)")
                sentence = text.decode(data.splits[args.split][0][0])
            path = plot_attention(model, text, sentence, options, args.attention_plot)
            print(f"attention for {sentence!r}: {path}")
    except ValueError as e:
        print(f"padless evaluate: {e}", file=sys.stderr)
        return 2
    return 0
