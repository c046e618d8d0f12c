"""How good is a trained model? :func:`evaluate` on a split, :func:`plot_attention` for one input.

:func:`evaluate` reports the per-token loss and perplexity (teacher-forced, over real target
tokens only), BLEU and chrF of the decoded answers against the references (``sacrebleu``, on
detokenised text: the references are the prepared, normalised targets), the dialogue metrics
of the answers (:func:`padless.decoding.metrics.dialogue_scores`: distinct-1/2, answers with
a repeated 3-gram, mean length against the references'), and a few outputs beside their
references.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from padless.data.batch import IdPair
from padless.data.text import TextProcessor
from padless.decoding.batched import cap_sources, decode_ids
from padless.decoding.metrics import DialogueScores, dialogue_scores, text_scores
from padless.decoding.options import SearchOptions
from padless.models import EncoderDecoder
from padless.models.scoring import corpus_scores
from padless.runtime.errors import UserError
from padless.runtime.files import atomic_write, check_writable

__all__ = ["Evaluation", "evaluate", "image_format_of", "plot_attention"]


@dataclass
class Evaluation:
    """Results on one split; ``samples`` holds ``(source, output, reference)`` texts.

    ``n_decoded`` answers were decoded (all of ``limit``, or fewer if ``max_seconds`` ran
    out); BLEU, chrF and ``dialogue`` are over them. ``n_truncated``: decoded sources cut to
    the input cap (the samples show them whole). ``loss`` and ``perplexity`` are NaN for a
    model without teacher-forced scores (an ensemble).
    """

    split: str
    n_pairs: int
    n_tokens: int
    loss: float
    perplexity: float
    n_decoded: int
    bleu: float
    chrf: float
    dialogue: DialogueScores
    samples: list[tuple[str, str, str]] = field(default_factory=list)
    n_truncated: int = 0

    def report(self) -> str:
        """A few lines for the user."""
        d = self.dialogue
        lines = [
            f"{self.split}: {self.n_pairs} pairs, {self.n_tokens} target tokens",
            f"  loss per token {self.loss:.4f}   perplexity {self.perplexity:.2f}"
            if self.loss == self.loss else "  loss per token n/a (an ensemble decodes only)",
            f"  BLEU {self.bleu:.2f}   chrF {self.chrf:.2f}   (sacrebleu, {self.n_decoded} "
            "decoded answers vs. their references)",
            f"  distinct-1 {d.distinct_1:.3f}   distinct-2 {d.distinct_2:.3f}   answers with a "
            f"repeated 3-gram {100 * d.repeated_3gram:.1f}%",
            f"  mean answer length {d.mean_length:.1f} tokens (references "
            f"{d.reference_mean_length:.1f})",
        ]
        if self.n_truncated:
            lines.append(f"  {self.n_truncated} sources longer than the input cap were cut "
                         "before decoding")
        for source, output, reference in self.samples:
            lines += [f"  > {source}", f"    model:     {output}", f"    reference: {reference}"]
        return "\n".join(lines)


def evaluate(
    model: EncoderDecoder,
    text: TextProcessor,
    pairs: Sequence[IdPair],
    options: SearchOptions,
    *,
    split: str = "test",
    batch_size: int = 64,
    limit: int | None = None,
    n_samples: int = 5,
    max_input_length: int | None = None,
    progress: bool = False,
    max_seconds: float | None = None,
) -> Evaluation:
    """Loss and perplexity on all ``pairs``; BLEU, chrF and the dialogue metrics of the
    answers to the first ``limit`` (all if None).

    Sources longer than ``max_input_length`` tokens are cut before decoding (counted in
    ``n_truncated``; None: no cap); the loss is computed on the pairs as they are.
    ``max_seconds`` bounds the time: after the loss, pairs are decoded ``batch_size`` at a
    time, in order, until the time is up (at least one batch); ``n_decoded`` says how many
    were.

    Raises:
        UserError: on an empty split or a bad argument, before any work.
    """
    if not pairs:
        raise UserError(f"the {split} split is empty: nothing to evaluate")
    checks = {  # name -> (value, whether it is allowed)
        "batch_size": (batch_size, batch_size >= 1),
        "limit": (limit, limit is None or limit >= 1),
        "n_samples": (n_samples, n_samples >= 0),
        "max_input_length": (max_input_length, max_input_length is None or max_input_length >= 1),
    }
    for name, (value, ok) in checks.items():
        if not ok:
            raise UserError(f"evaluate: bad {name}={value!r}")
    started = time.monotonic()
    if model.teacher_forced:
        scores = corpus_scores(model, pairs, batch_size=batch_size)
        n_tokens, loss, perplexity = scores.n_tokens, scores.loss, scores.perplexity
    else:  # an ensemble: no teacher-forced scores
        n_tokens, loss, perplexity = sum(len(t) + 1 for _, t in pairs), math.nan, math.nan
    to_decode = list(pairs[:limit] if limit is not None else pairs)
    sources, _ = cap_sources([s for s, _ in to_decode], max_input_length)
    chunk = len(to_decode) if max_seconds is None else batch_size
    answers: list[list[int]] = []
    for start in range(0, len(to_decode), chunk):
        if answers and time.monotonic() - started > max_seconds:
            break
        nbests = decode_ids(model, sources[start : start + chunk], options,
                            batch_size=batch_size, progress=progress)
        answers += [nbest[0].tokens for nbest in nbests]
    decoded_pairs = to_decode[: len(answers)]
    n_truncated = sum(len(s) != len(c) for (s, _), c in zip(decoded_pairs, sources, strict=False))
    outputs = [text.decode(tokens) for tokens in answers]
    references = [text.decode(t) for _, t in decoded_pairs]
    bleu, chrf = text_scores(outputs, references)
    dialogue = dialogue_scores(answers, [t for _, t in decoded_pairs])
    samples = [
        (text.decode(s), output, reference)
        for (s, _), output, reference in zip(decoded_pairs, outputs, references, strict=True)
    ][:n_samples]
    return Evaluation(split, len(pairs), n_tokens, loss, perplexity, len(outputs), bleu, chrf,
                      dialogue, samples, n_truncated)


def image_format_of(path: str | Path) -> str:
    """The image format a plot written to ``path`` gets (its suffix), checked before any work.

    Raises:
        UserError: if ``path``'s directory does not exist or cannot be written in, or its
            suffix is no image format.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    if not path.parent.is_dir():
        raise UserError(f"{path}: the directory {path.parent} does not exist; create it first")
    if path.is_dir():
        raise UserError(f"{path}: is a directory; give the plot's file name (e.g. "
                        f"{path / 'attention.png'})")
    image_format = path.suffix[1:].lower()
    formats = FigureCanvasAgg(Figure()).get_supported_filetypes()
    if image_format not in formats:
        raise UserError(f"{path}: not an image file name; end it in one of "
                        f"{', '.join('.' + f for f in sorted(formats))}")
    check_writable(path)
    return image_format


def plot_attention(
    model: EncoderDecoder,
    text: TextProcessor,
    sentence: str,
    options: SearchOptions,
    path: str | Path,
) -> Path:
    """Decode ``sentence`` and save a heatmap of the ``[output, source]`` attention to ``path``.

    Raises:
        UserError: if the sentence has no token, or ``path`` cannot be written (no such
            directory, a suffix that is no image format).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    image_format = image_format_of(path)
    ids = text.encode(sentence)
    if not ids:
        raise UserError(f"{sentence!r} has no token to attend to")
    ((hyp, *_),) = decode_ids(model, [ids], options, return_attention=True)
    outputs = [text.vocab.id_to_token(i) for i in hyp.tokens] + (["</s>"] if hyp.finished else [])
    sources = [text.vocab.id_to_token(i) for i in ids]
    size = (max(4.0, 2.0 + 0.5 * len(sources)), max(3.0, 1.5 + 0.35 * len(outputs)))  # inches
    fig = Figure(figsize=size, layout="tight")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    image = ax.imshow(hyp.attention.numpy(), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(sources)), sources, rotation=60, ha="right")
    ax.set_yticks(range(len(outputs)), outputs)
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    fig.colorbar(image, ax=ax, label="attention weight")
    atomic_write(path, lambda f: fig.savefig(f, dpi=120, format=image_format))
    return path
