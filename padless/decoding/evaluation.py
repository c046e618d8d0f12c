"""How good is a trained model? :func:`evaluate` on a split, :func:`plot_attention` for one input.

:func:`evaluate` reports the per-token loss and perplexity (teacher-forced, over real target
tokens only), BLEU and chrF of the decoded answers against the references (``sacrebleu``, on
detokenised text: the references are the prepared, normalised targets), and a few outputs
beside their references.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from padless.data.batch import IdPair, make_batches
from padless.data.text import TextProcessor
from padless.decoding.batched import cap_sources, decode_ids
from padless.decoding.metrics import text_scores
from padless.decoding.search import SearchOptions
from padless.models import EncoderDecoder
from padless.models.scoring import Scores, teacher_forced_scores
from padless.runtime.errors import UserError
from padless.runtime.files import atomic_write

__all__ = ["Evaluation", "corpus_scores", "evaluate", "image_format_of", "plot_attention"]


@dataclass
class Evaluation:
    """Results on one split; ``samples`` holds ``(source, output, reference)`` texts.

    ``n_truncated``: decoded sources cut to the input cap (the samples show them whole).
    """

    split: str
    n_pairs: int
    n_tokens: int
    loss: float
    perplexity: float
    n_decoded: int
    bleu: float
    chrf: float
    samples: list[tuple[str, str, str]] = field(default_factory=list)
    n_truncated: int = 0

    def report(self) -> str:
        """A few lines for the user."""
        lines = [
            f"{self.split}: {self.n_pairs} pairs, {self.n_tokens} target tokens",
            f"  loss per token {self.loss:.4f}   perplexity {self.perplexity:.2f}",
            f"  BLEU {self.bleu:.2f}   chrF {self.chrf:.2f}   (sacrebleu, {self.n_decoded} "
            "decoded answers vs. their references)",
        ]
        if self.n_truncated:
            lines.append(f"  {self.n_truncated} sources longer than the input cap were cut "
                         "before decoding")
        for source, output, reference in self.samples:
            lines += [f"  > {source}", f"    model:     {output}", f"    reference: {reference}"]
        return "\n".join(lines)


def corpus_scores(
    model: EncoderDecoder, pairs: Sequence[IdPair], *, batch_size: int = 64
) -> Scores:
    """Teacher-forced scores summed over the real target tokens of ``pairs`` (EOS included).

    Pairs are batched by length so the batches carry little padding (padding costs nothing
    in the loss, only in time); pairs with an empty source are left out.
    """
    ordered = sorted((p for p in pairs if p[0]), key=lambda p: (len(p[0]), len(p[1])))
    index_lists = (range(start, min(start + batch_size, len(ordered)))
                   for start in range(0, len(ordered), batch_size))
    return teacher_forced_scores(model, make_batches(ordered, index_lists))


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
) -> Evaluation:
    """Loss and perplexity on all ``pairs``; BLEU/chrF on the first ``limit`` (all if None).

    Sources longer than ``max_input_length`` tokens are cut before decoding (counted in
    ``n_truncated``; None: no cap); the loss is computed on the pairs as they are.

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
    scores = corpus_scores(model, pairs, batch_size=batch_size)
    decoded_pairs = list(pairs[:limit] if limit is not None else pairs)
    sources, n_truncated = cap_sources([s for s, _ in decoded_pairs], max_input_length)
    nbests = decode_ids(model, sources, options, batch_size=batch_size, progress=progress)
    outputs = [text.decode(nbest[0].tokens) for nbest in nbests]
    references = [text.decode(t) for _, t in decoded_pairs]
    bleu, chrf = text_scores(outputs, references)
    samples = [
        (text.decode(s), output, reference)
        for (s, _), output, reference in zip(decoded_pairs, outputs, references, strict=True)
    ][:n_samples]
    return Evaluation(split, len(pairs), scores.n_tokens, scores.loss, scores.perplexity,
                      len(outputs), bleu, chrf, samples, n_truncated)


def image_format_of(path: str | Path) -> str:
    """The image format a plot written to ``path`` gets (its suffix), checked before any work.

    Raises:
        UserError: if ``path``'s directory does not exist or its suffix is no image format.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    if not path.parent.is_dir():
        raise UserError(f"{path}: the directory {path.parent} does not exist; create it first")
    image_format = path.suffix[1:].lower()
    formats = FigureCanvasAgg(Figure()).get_supported_filetypes()
    if image_format not in formats:
        raise UserError(f"{path}: not an image file name; end it in one of "
                        f"{', '.join('.' + f for f in sorted(formats))}")
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
