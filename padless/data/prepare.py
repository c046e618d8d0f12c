"""The prepare pipeline: a corpus in, a prepared dataset (splits, vocabulary, token store,
metadata) out, in two streaming passes, so memory does not grow with the corpus.

The steps, in order, each counted in the summary and in ``metadata.json``:

1. read pairs (:mod:`padless.data.readers`, line by line for the line formats, gzip/bz2/xz
   decompressed), dropping pairs with an empty side or a missing turn;
2. normalise, dropping pairs a side of which becomes empty (emoji only, say);
3. de-duplicate (an 8-byte digest a pair, :mod:`padless.data.dedupe`) and split by the
   digest (keyed by the seed): the same pair always lands in the same split, with no list
   of the corpus held anywhere; a corpus of fewer than 100 unique pairs gets the exact
   seeded split (:func:`padless.data.dataset.split_pairs`) instead, so that its valid and
   test splits are never empty;
4. tokenise (sentencepiece trains on a seeded sample of at most ``SPM_SAMPLE`` training
   sides);
5. drop pairs longer than ``max_length`` tokens on either side (default 200: a cap, so a
   runaway line cannot become a million-token pair);
6. build the vocabulary on the training split, from counts (``min_count`` maps rarer words
   to UNK);
7. with ``drop_unk_pairs`` (the tutorial's behaviour), drop pairs with a word outside it.

Pass 1 (steps 1-3, and 4-6 for words) writes each split's normalised pairs to a temporary
file; pass 2 tokenises them, encodes them with the vocabulary and writes the token store
(:mod:`padless.data.store`) and the TSV files. Normalising and tokenising run in
``workers`` processes (:mod:`padless.data.parallel`), in order: the same input and options
write byte-identical files for any number of workers. The dataset is built in a temporary
sibling directory and replaces ``out`` as a whole
(:func:`padless.runtime.files.atomic_directory`), under a lock (``.NAME.lock`` beside it),
so a failed, interrupted or concurrent run never leaves a mix of two datasets.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from padless.data.dataset import FORMAT, METADATA_FILE, SPLITS, text_files
from padless.data.options import DEFAULT_MAX_LENGTH, PrepareOptions
from padless.data.parallel import default_workers
from padless.data.passes import FirstPass, bin_labels, second_pass
from padless.data.pretrained_tokenizer import PRETRAINED_DIR
from padless.data.readers import CorpusError, ReadStats, detect_format
from padless.data.text import (
    SentencePieceTokenizer,
    TextProcessor,
    WordTokenizer,
    train_sentencepiece,
)
from padless.data.vocabulary import SPECIALS, Vocabulary
from padless.runtime.files import atomic_directory, remove_temporaries, write_json_atomic
from padless.runtime.lock import exclusive_lock

__all__ = ["DATASET_FILES", "prepare"]

# Above this share of <unk> in the training split, the summary warns (min_count too high?).
UNK_WARNING_RATE = 0.2
# What a prepared dataset holds; prepare replaces the whole folder, so it refuses any other.
DATASET_FILES = frozenset({METADATA_FILE, "vocab.json", "text.json",
                           SentencePieceTokenizer.MODEL_FILE, PRETRAINED_DIR,
                           *(f"{name}{suffix}" for name in SPLITS
                             for suffix in (".tsv", ".tokens", ".offsets"))})


def prepare(
    corpus: list[str], out: str | os.PathLike, options: PrepareOptions | None = None,
    *, workers: int | None = None, text: TextProcessor | None = None,
) -> dict:
    """Run the pipeline on ``corpus`` and write the dataset into ``out``.

    Args:
        corpus: one file or folder, two parallel files, or ``["chitchat"]`` (bundled).
        out: the dataset folder; it may hold an earlier prepared dataset, which is replaced
            as a whole once the new one is complete (a failure leaves it untouched).
        options: see :class:`PrepareOptions` (default: its defaults).
        workers: processes that normalise and tokenise (default: the cores); the output
            is the same for any number.
        text: tokenise with this text pipeline (a model's: ``--text-from RUN_DIR``) instead
            of building one; its normaliser, tokenizer and vocabulary replace the options'.

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
        with atomic_directory(out) as tmp:
            text, metadata = _build(corpus, fmt, opts, tmp, workers or default_workers(), text)
            text.save(tmp)
            metadata["text_files"] = text_files(tmp)
            write_json_atomic(tmp / METADATA_FILE, metadata)
    return metadata


def _build(corpus: list[str], fmt: str, opts: PrepareOptions, out: Path, workers: int,
           given: TextProcessor | None) -> tuple[TextProcessor, dict]:
    """Steps 1-7 into ``out``: the TextProcessor (built, or ``given``) and the metadata."""
    stats = ReadStats(skip_bad_lines=opts.skip_bad_lines)
    if given is not None:  # its normaliser, tokenizer and vocabulary
        opts = replace(opts, normalize=given.normalize)
    first = FirstPass(out, opts, stats, learn=given is None)
    try:
        first.run(corpus, fmt, workers)
        if not _has_lines(first.paths["train"]):
            raise CorpusError(f"{' '.join(corpus)}: no usable pairs (read {stats.pairs_read})")
        if given is not None:
            text = given
        elif opts.tokenizer == "sentencepiece":
            tokenizer = train_sentencepiece(first.sample, vocab_size=opts.vocab_size,
                                            model_type=opts.spm_model, seed=opts.seed)
            text = TextProcessor(Vocabulary(tokenizer.pieces()), normalize=opts.normalize,
                                 tokenizer=tokenizer)
        else:
            vocab = Vocabulary.from_counts(first.counts, min_count=opts.min_count)
            if len(vocab) == len(SPECIALS) and first.counts:
                raise CorpusError(f"no training word is seen {opts.min_count} times "
                                  "(--min-count): the vocabulary would hold no word; lower "
                                  "--min-count")
            text = TextProcessor(vocab, normalize=opts.normalize, tokenizer=WordTokenizer())
        counted, store = second_pass(first, text, out, opts, stats, workers)
    finally:
        for path in first.paths.values():
            path.unlink(missing_ok=True)
    if not counted["train"].pairs:
        raise CorpusError(f"{' '.join(corpus)}: every training pair was filtered out")
    unk_rate = {name: round(c.unknown / c.tokens, 6) if c.tokens else 0.0
                for name, c in counted.items()}
    metadata = {
        "format": FORMAT,
        "version": 2,
        "corpus": corpus,
        "corpus_format": fmt,
        "settings": {**{k: v for k, v in asdict(opts).items() if k != "format"},
                     "tokenizer": text.tokenizer.name},
        "counts": {
            "read": stats.pairs_read,
            "kept": sum(c.pairs for c in counted.values()),
            "dropped": dict(sorted(stats.dropped.items())),
            "bad_lines": stats.bad_lines,
            "missing_ids": stats.missing_ids,
            "splits": {name: c.pairs for name, c in counted.items()},
        },
        "vocab_size": len(text.vocab),
        "unk_rate": unk_rate,
        "length_histogram": {
            "bins": bin_labels(),
            "source": np.sum([c.source_bins for c in counted.values()], axis=0).tolist(),
            "target": np.sum([c.target_bins for c in counted.values()], axis=0).tolist(),
        },
        "problems": stats.problems,
        "warnings": first.notes + _warnings(opts, stats, unk_rate["train"]),
        "store": store,
    }
    return text, metadata


def _has_lines(path: Path) -> bool:
    return path.stat().st_size > 0


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


def _check_out(out: Path) -> None:
    """Refuse to replace anything but an earlier prepared dataset (or an empty folder)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise CorpusError(f"{out}: exists and is not a directory; choose another folder for "
                          "the dataset")
    entries = sorted(p.name for p in out.iterdir())
    if entries and METADATA_FILE not in entries:
        raise CorpusError(f"{out}: exists and is not a prepared dataset; choose another folder "
                          "for the dataset")
    foreign = [name for name in entries
               if name not in DATASET_FILES and not re.fullmatch(r"\..+\.tmp", name)]
    if foreign:
        raise CorpusError(f"{out}: holds {foreign[0]}, which is not part of a prepared dataset; "
                          "prepare replaces the whole folder: move it away, or choose another "
                          "folder for the dataset")
