"""The prepare pipeline: a corpus in, a prepared dataset (splits, vocabulary, metadata) out.

The steps, in order, each counted in the summary and in ``metadata.json``:

1. read pairs (:mod:`padless.data.readers`), dropping pairs with an empty side or a missing turn;
2. normalise, dropping pairs a side of which becomes empty (emoji only, say);
3. de-duplicate and split by seed (:func:`padless.data.dataset.split_pairs`);
4. tokenise (training sentencepiece on the training split only, if asked);
5. drop pairs longer than ``max_length`` tokens on either side (default 200: a cap, so a
   runaway line, a whole file without line ends, cannot become a million-token pair);
6. build the vocabulary on the training split (``min_count`` maps rarer words to UNK);
7. with ``drop_unk_pairs`` (the tutorial's behaviour), drop pairs with a word outside it.

Everything is deterministic: the same input and options write byte-identical files. The
dataset is built in a temporary sibling directory and replaces ``out`` as a whole
(:func:`padless.runtime.files.atomic_directory`), under a lock (``.NAME.lock`` beside it),
so a failed, interrupted or concurrent run never leaves a mix of two datasets.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from padless.data.dataset import FORMAT, METADATA_FILE, SPLITS, TokenPair, split_pairs, write_split
from padless.data.readers import FORMATS, CorpusError, ReadStats, detect_format, read_corpus
from padless.data.store import write_token_split
from padless.data.text import (
    NORMALIZERS,
    TOKENIZERS,
    SentencePieceTokenizer,
    TextProcessor,
    WordTokenizer,
    train_sentencepiece,
)
from padless.data.vocabulary import SPECIALS, Vocabulary
from padless.runtime.errors import UserError
from padless.runtime.files import atomic_directory, remove_temporaries, write_json_atomic
from padless.runtime.lock import exclusive_lock

__all__ = ["DATASET_FILES", "DEFAULT_MAX_LENGTH", "HISTOGRAM_BINS", "PrepareOptions", "prepare"]

# Upper bounds of the length-histogram bins (tokens); the last bin is open-ended.
HISTOGRAM_BINS = (5, 10, 20, 50, 100)
# Pairs longer than this many tokens on a side are dropped unless max_length says otherwise:
# 0.3 % of the chitchat corpus, none of the tutorial's or the quickstart's data.
DEFAULT_MAX_LENGTH = 200
# Above this share of <unk> in the training split, the summary warns (min_count too high?).
UNK_WARNING_RATE = 0.2
# What a prepared dataset holds; prepare replaces the whole folder, so it refuses any other.
DATASET_FILES = frozenset({METADATA_FILE, "vocab.json", "text.json",
                           SentencePieceTokenizer.MODEL_FILE,
                           *(f"{name}{suffix}" for name in SPLITS
                             for suffix in (".tsv", ".tokens", ".offsets"))})


@dataclass(frozen=True)
class PrepareOptions:
    """How :func:`prepare` reads, cleans, splits and tokenises a corpus.

    Attributes:
        format: ``"auto"`` (detected from the corpus arguments) or a reader's format.
        normalize: a key of :data:`padless.data.text.NORMALIZERS`.
        tokenizer: ``"word"`` or ``"sentencepiece"``.
        vocab_size: sentencepiece vocabulary size.
        spm_model: sentencepiece model type, ``"unigram"`` or ``"bpe"``.
        min_count: word tokenizer: training words seen fewer times become UNK.
        drop_unk_pairs: drop pairs holding a word outside the vocabulary (the tutorial).
        max_length: drop pairs with more tokens than this on either side (default
            ``DEFAULT_MAX_LENGTH``; None: no limit).
        valid_fraction, test_fraction: shares of the unique pairs in each split.
        seed: split (and sentencepiece) seed.
        skip_bad_lines: count and skip malformed lines instead of stopping at the first.
        max_pairs: read only the first N pairs (None: all).

    Raises:
        UserError: naming the first field with a bad value.
    """

    format: str = "auto"
    normalize: str = "default"
    tokenizer: str = "word"
    vocab_size: int = 8000
    spm_model: str = "unigram"
    min_count: int = 1
    drop_unk_pairs: bool = False
    max_length: int | None = DEFAULT_MAX_LENGTH
    valid_fraction: float = 0.05
    test_fraction: float = 0.05
    seed: int = 0
    skip_bad_lines: bool = False
    max_pairs: int | None = None

    def __post_init__(self) -> None:
        choices = {"format": ("auto", *FORMATS), "normalize": tuple(NORMALIZERS),
                   "tokenizer": TOKENIZERS, "spm_model": ("unigram", "bpe")}
        for name, valid in choices.items():
            if getattr(self, name) not in valid:
                raise UserError(f"PrepareOptions.{name}: must be one of {', '.join(valid)}, "
                                f"got {getattr(self, name)!r}")
        ranges = {"vocab_size": (len(SPECIALS) + 1, None), "min_count": (1, None),
                  "max_length": (1, None), "seed": (0, 2**31 - 1), "max_pairs": (1, None)}
        for name, (low, high) in ranges.items():
            value = getattr(self, name)
            optional = name in ("max_length", "max_pairs")
            if (value is None and optional) or (
                    _is_int(value) and low <= value and (high is None or value <= high)):
                continue
            raise UserError(f"PrepareOptions.{name}: must be an integer >= {low}"
                            f"{f' and <= {high}' if high else ''}"
                            f"{' or None' if optional else ''}, got {value!r}")
        for name in ("valid_fraction", "test_fraction"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and 0 <= value < 1):
                raise UserError(f"PrepareOptions.{name}: must be a number in [0, 1), got {value!r}")
        if self.valid_fraction + self.test_fraction >= 1:
            raise UserError("PrepareOptions.valid_fraction + test_fraction: must leave some "
                            f"training data, got {self.valid_fraction} + {self.test_fraction}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _tokenize(text: TextProcessor, pairs: list[tuple[str, str]]) -> list[TokenPair]:
    tok = text.tokenizer.tokenize
    return [(tok(s), tok(t)) for s, t in pairs]


def _unk_rate(vocab: Vocabulary, pairs: list[TokenPair]) -> float:
    tokens = [tok for s, t in pairs for tok in (*s, *t)]
    return sum(tok not in vocab for tok in tokens) / len(tokens) if tokens else 0.0


def _histogram(lengths: list[int]) -> list[int]:
    counts = [0] * (len(HISTOGRAM_BINS) + 1)
    for n in lengths:
        counts[next((k for k, top in enumerate(HISTOGRAM_BINS) if n <= top), -1)] += 1
    return counts


def bin_labels() -> list[str]:
    """Labels of the length-histogram bins: ``1-5``, ..., ``101+``."""
    lows = [1, *(top + 1 for top in HISTOGRAM_BINS)]
    return [f"{lo}-{hi}" for lo, hi in zip(lows, HISTOGRAM_BINS, strict=False)] + [
        f"{lows[-1]}+"
    ]


def prepare(
    corpus: list[str], out: str | os.PathLike, options: PrepareOptions | None = None
) -> dict:
    """Run the pipeline on ``corpus`` and write the dataset into ``out``.

    Args:
        corpus: one file or folder, two parallel files, or ``["chitchat"]`` (bundled).
        out: the dataset folder; it may hold an earlier prepared dataset, which is replaced
            as a whole once the new one is complete (a failure leaves it untouched).
        options: see :class:`PrepareOptions` (default: its defaults).

    Returns:
        The metadata, also written to ``out/metadata.json``: settings, counts, vocabulary
        size, UNK rates, length histograms, problems and warnings.

    Raises:
        CorpusError: naming the file (and line) of malformed input, or when nothing is left.
        UserError: when ``out`` holds something else, or another prepare is writing it.
    """
    opts = options or PrepareOptions()
    corpus = list(corpus)
    out = Path(out)
    if out.is_symlink():  # replace the dataset the link points to, not the link
        out = out.resolve()
    with exclusive_lock(out.parent / f".{out.name}.lock", f"dataset {out}", "padless prepare"):
        remove_temporaries(out.parent, re.escape(out.name))  # of a prepare that was killed
        _check_out(out)
        fmt = detect_format(corpus) if opts.format == "auto" else opts.format
        text, splits, metadata = _build(corpus, fmt, opts)
        with atomic_directory(out) as tmp:
            text.save(tmp)
            metadata["store"] = {}
            for name in SPLITS:
                write_split(tmp / f"{name}.tsv", splits[name])
                ids = ((text.vocab.encode(s), text.vocab.encode(t)) for s, t in splits[name])
                metadata["store"][name] = write_token_split(tmp, name, ids, len(text.vocab))
            write_json_atomic(tmp / METADATA_FILE, metadata)
    return metadata


def _build(
    corpus: list[str], fmt: str, opts: PrepareOptions
) -> tuple[TextProcessor, dict[str, list[TokenPair]], dict]:
    """Steps 1-7: the TextProcessor, the token pairs of each split and the metadata."""
    stats = ReadStats(skip_bad_lines=opts.skip_bad_lines)
    normalised = _read_normalised(corpus, fmt, opts, stats)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        texts, duplicates = split_pairs(normalised, valid_fraction=opts.valid_fraction,
                                        test_fraction=opts.test_fraction, seed=opts.seed)
    if duplicates:
        stats.drop("duplicate", duplicates)
    if not texts["train"]:
        raise CorpusError(f"{' '.join(corpus)}: no usable pairs (read {stats.pairs_read})")
    text, splits = _tokenized_splits(texts, opts, stats)
    if not splits["train"]:
        raise CorpusError(f"{' '.join(corpus)}: every training pair was filtered out")
    unk_rate = {name: round(_unk_rate(text.vocab, splits[name]), 6) for name in SPLITS}
    notes = [str(w.message) for w in caught] + _warnings(opts, stats, unk_rate["train"])
    kept_pairs = [p for name in SPLITS for p in splits[name]]
    metadata = {
        "format": FORMAT,
        "version": 1,
        "corpus": corpus,
        "corpus_format": fmt,
        "settings": {k: v for k, v in asdict(opts).items() if k != "format"},
        "counts": {
            "read": stats.pairs_read,
            "kept": len(kept_pairs),
            "dropped": dict(sorted(stats.dropped.items())),
            "bad_lines": stats.bad_lines,
            "missing_ids": stats.missing_ids,
            "splits": {name: len(splits[name]) for name in SPLITS},
        },
        "vocab_size": len(text.vocab),
        "unk_rate": unk_rate,
        "length_histogram": {
            "bins": bin_labels(),
            "source": _histogram([len(s) for s, _ in kept_pairs]),
            "target": _histogram([len(t) for _, t in kept_pairs]),
        },
        "problems": stats.problems,
        "warnings": notes,
    }
    return text, splits, metadata


def _warnings(opts: PrepareOptions, stats: ReadStats, train_unk_rate: float) -> list[str]:
    """What the user should know about the result: the length cap dropped pairs, many UNKs."""
    notes = []
    too_long = stats.dropped.get(f"longer than {opts.max_length} tokens", 0)
    if too_long and opts.max_length == DEFAULT_MAX_LENGTH:
        notes.append(f"{too_long} pairs longer than {DEFAULT_MAX_LENGTH} tokens on a side were "
                     "dropped (the default --max-length; give a larger one to keep them)")
    if train_unk_rate > UNK_WARNING_RATE:
        notes.append(f"{train_unk_rate:.0%} of the training tokens are <unk>: the model will "
                     "learn little; lower --min-count (or raise --vocab-size)")
    return notes


def _read_normalised(
    corpus: list[str], fmt: str, opts: PrepareOptions, stats: ReadStats
) -> list[tuple[str, str]]:
    """Steps 1-2: the corpus' pairs, normalised; pairs with a side left empty are dropped."""
    raw = tqdm(read_corpus(corpus, fmt, stats), desc="reading", unit=" pairs",
               disable=None, file=sys.stderr)
    normalize = NORMALIZERS[opts.normalize]
    normalised = []
    for source, target in itertools.islice(raw, opts.max_pairs):
        source, target = normalize(source), normalize(target)
        if source and target:
            normalised.append((source, target))
        else:
            stats.drop("empty after normalisation")
    return normalised


def _tokenized_splits(
    texts: dict[str, list[tuple[str, str]]], opts: PrepareOptions, stats: ReadStats
) -> tuple[TextProcessor, dict[str, list[TokenPair]]]:
    """Steps 4-7: the TextProcessor (tokenizer and vocabulary) and the filtered token pairs."""
    if opts.tokenizer == "sentencepiece":
        spm_tok = train_sentencepiece(
            (side for pair in texts["train"] for side in pair),
            vocab_size=opts.vocab_size, model_type=opts.spm_model, seed=opts.seed,
        )
        text = TextProcessor(Vocabulary(spm_tok.pieces()), normalize=opts.normalize,
                             tokenizer=spm_tok)
    else:
        text = TextProcessor(Vocabulary(), normalize=opts.normalize, tokenizer=WordTokenizer())
    splits = {name: _tokenize(text, pairs) for name, pairs in texts.items()}

    if opts.max_length is not None:
        for name, pairs in splits.items():
            kept = [p for p in pairs if max(len(p[0]), len(p[1])) <= opts.max_length]
            stats.drop(f"longer than {opts.max_length} tokens", len(pairs) - len(kept))
            splits[name] = kept
    if opts.tokenizer == "word":
        text.vocab = Vocabulary.build(
            (side for pair in splits["train"] for side in pair), min_count=opts.min_count
        )
        if len(text.vocab) == len(SPECIALS) and splits["train"]:
            raise CorpusError(f"no training word is seen {opts.min_count} times (--min-count): "
                              "the vocabulary would hold no word; lower --min-count")
    if opts.drop_unk_pairs:
        vocab = text.vocab
        for name, pairs in splits.items():
            kept = [p for p in pairs if all(tok in vocab for side in p for tok in side)]
            stats.drop("unknown word (--drop-unk-pairs)", len(pairs) - len(kept))
            splits[name] = kept
    return text, splits


def _check_out(out: Path) -> None:
    """Refuse to replace anything but an earlier prepared dataset (or an empty folder)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise CorpusError(f"{out}: exists and is not a directory; choose another --out")
    entries = sorted(p.name for p in out.iterdir())
    if entries and METADATA_FILE not in entries:
        raise CorpusError(f"{out}: exists and is not a prepared dataset; choose another --out")
    foreign = [name for name in entries
               if name not in DATASET_FILES and not re.fullmatch(r"\..+\.tmp", name)]
    if foreign:
        raise CorpusError(f"{out}: holds {foreign[0]}, which is not part of a prepared dataset; "
                          "prepare replaces the whole folder: move it away, or choose another "
                          "--out")
