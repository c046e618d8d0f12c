"""Splits and the prepared dataset that ``padless prepare`` writes and training reads.

A prepared dataset is a directory::

    metadata.json        settings and counts (format "padless-prepared"), and the sizes
                         and checksums of the token store and of the text pipeline's files
    text.json            the TextProcessor's settings (normaliser, tokenizer)
    vocab.json           the vocabulary, specials first (ids are positions)
    sentencepiece.model  only with --tokenizer sentencepiece
    NAME.tokens NAME.offsets
                         per split, the token store training reads, memory-mapped
                         (:mod:`padless.data.store`)
    train.tsv valid.tsv test.tsv
                         the same pairs for people: source tokens, a TAB, target tokens;
                         tokens are separated by single spaces (word tokens and sentencepiece
                         pieces never contain whitespace). Words outside the vocabulary are
                         kept as written, so the files show what was said.

A dataset prepared before the store (TSV files only) loads from its TSV files, in memory,
as before.
"""

from __future__ import annotations

import json
import os
import random
import warnings
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from padless.data.batch import Batch, IdPair
from padless.data.loader import make_batches
from padless.data.sampler import BucketBatchSampler
from padless.data.store import TokenSplit
from padless.data.text import TextProcessor
from padless.data.vocabulary import Vocabulary
from padless.runtime.errors import UserError
from padless.runtime.files import read_utf8, write_text_atomic

__all__ = [
    "METADATA_FILE",
    "SPLITS",
    "PreparedData",
    "TokenPair",
    "read_split",
    "split_pairs",
    "text_files",
    "write_split",
]

SPLITS = ("train", "valid", "test")
METADATA_FILE = "metadata.json"
FORMAT = "padless-prepared"

TokenPair = tuple[list[str], list[str]]  # (source tokens, target tokens)


def text_files(directory: str | os.PathLike) -> dict[str, dict[str, int]]:
    """The size and CRC-32 of each file of the text pipeline saved in ``directory``
    (``vocab.json``, ``text.json``, a sentencepiece model, a pretrained tokenizer's files),
    by its path relative to ``directory``: what ``metadata.json`` records, so that a file
    swapped in from another dataset is refused, not trained on."""
    directory = Path(directory)
    names = [p for p in (directory / "vocab.json", directory / "text.json",
                         directory / "sentencepiece.model") if p.is_file()]
    names += sorted(p for p in (directory / "pretrained").rglob("*") if p.is_file())
    found = {}
    for path in names:
        data = path.read_bytes()
        found[path.relative_to(directory).as_posix()] = {"bytes": len(data),
                                                         "crc32": zlib.crc32(data)}
    return found


def split_pairs(
    pairs: Sequence[tuple[str, str]],
    *,
    valid_fraction: float,
    test_fraction: float,
    seed: int,
) -> tuple[dict[str, list[tuple[str, str]]], int]:
    """De-duplicate ``pairs`` and split them deterministically by ``seed``.

    Duplicates (same source and target) are removed first, keeping the first occurrence,
    so no pair can be both trained on and evaluated on. The unique pairs are shuffled with
    ``seed`` and cut; each split keeps the corpus order, which makes the files easy to read.
    A tiny corpus still gets one valid and one test pair when it has at least three pairs
    (with a warning); below that everything is training data.

    Returns:
        ``({"train": ..., "valid": ..., "test": ...}, number of duplicates removed)``.
    """
    if not 0 <= valid_fraction < 1 or not 0 <= test_fraction < 1:
        raise UserError(f"valid and test fractions must be in [0, 1), got {valid_fraction} "
                        f"and {test_fraction}")
    if valid_fraction + test_fraction >= 1:
        raise UserError("valid_fraction + test_fraction must leave some training data, got "
                        f"{valid_fraction} + {test_fraction}")
    unique = list(dict.fromkeys(pairs))
    n = len(unique)
    n_valid = round(n * valid_fraction)
    n_test = round(n * test_fraction)
    if n >= 3:
        # A requested split never ends up empty just because the corpus is small.
        n_valid = max(n_valid, 1) if valid_fraction > 0 else 0
        n_test = max(n_test, 1) if test_fraction > 0 else 0
    else:
        n_valid = n_test = 0
    if n < 100 and (valid_fraction > 0 or test_fraction > 0):
        warnings.warn(
            f"only {n} unique pairs: the split ({n - n_valid - n_test} train, {n_valid} valid, "
            f"{n_test} test) is too small for validation or test scores to mean much",
            stacklevel=2,
        )
    order = list(range(n))
    random.Random(f"padless-split:{seed}").shuffle(order)
    valid_idx = sorted(order[:n_valid])
    test_idx = sorted(order[n_valid : n_valid + n_test])
    train_idx = sorted(order[n_valid + n_test :])
    splits = {
        "train": [unique[i] for i in train_idx],
        "valid": [unique[i] for i in valid_idx],
        "test": [unique[i] for i in test_idx],
    }
    return splits, len(pairs) - n


def write_split(path: str | os.PathLike, pairs: Iterable[TokenPair]) -> None:
    """Write token pairs as ``source tokens<TAB>target tokens`` lines (atomically)."""
    write_text_atomic(path, "".join(f"{' '.join(s)}\t{' '.join(t)}\n" for s, t in pairs))


def read_split(path: str | os.PathLike, vocab: Vocabulary) -> list[IdPair]:
    """Read a split file written by :func:`write_split` as id pairs.

    Raises:
        UserError: naming the file and line of a malformed line.
    """
    pairs: list[IdPair] = []
    lines = read_utf8(path).split("\n")  # not splitlines(): \x1c or \u2028 are no line ends here
    if lines[-1] == "":
        lines.pop()
    for lineno, line in enumerate(lines, 1):
        sides = line.split("\t")
        if len(sides) != 2 or not sides[0] or not sides[1]:
            raise UserError(
                f"{path}:{lineno}: expected 'source tokens<TAB>target tokens', both non-empty"
            )
        pairs.append((vocab.encode(sides[0].split(" ")), vocab.encode(sides[1].split(" "))))
    return pairs


class PreparedData:
    """A prepared dataset, opened.

    Attributes:
        text: the TextProcessor used to prepare it (the trainer saves it with the model).
        vocab: ``text.vocab``; one joint vocabulary for source and target.
        splits: ``"train"``, ``"valid"``, ``"test"`` -> a
            :class:`~padless.data.store.TokenSplit`: ``(source ids, target ids)`` pairs,
            without BOS/EOS (``Batch.from_pairs`` adds them), memory-mapped.
        metadata: the contents of ``metadata.json`` (settings and counts).
    """

    def __init__(
        self, text: TextProcessor, splits: dict[str, TokenSplit], metadata: dict
    ) -> None:
        self.text = text
        self.vocab = text.vocab
        self.splits = splits
        self.metadata = metadata

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={len(v)}" for k, v in self.splits.items())
        return f"PreparedData({sizes}, vocab_size={len(self.vocab)})"

    @classmethod
    def load(cls, data_dir: str | os.PathLike) -> PreparedData:
        """Load a directory written by ``padless prepare``.

        Raises:
            UserError: if ``data_dir`` is not a prepared dataset or a file in it is broken.
        """
        data_dir = Path(data_dir)
        meta_path = data_dir / METADATA_FILE
        hint = f"run `padless prepare CORPUS --out {data_dir}` first"
        if not data_dir.is_dir():
            raise UserError(f"{data_dir}: no such directory; {hint}")
        try:
            metadata = json.loads(read_utf8(meta_path))
        except FileNotFoundError:
            raise UserError(f"{data_dir} is not a prepared dataset (no {METADATA_FILE}); "
                            f"{hint}") from None
        except (json.JSONDecodeError, RecursionError) as e:
            line = f":{e.lineno}" if isinstance(e, json.JSONDecodeError) else ""
            raise UserError(
                f"{meta_path}{line}: not valid JSON; prepare the dataset again") from None
        if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
            raise UserError(f"{meta_path}: not a padless prepared-dataset metadata file")
        recorded = metadata.get("text_files")
        if isinstance(recorded, dict):  # datasets before 2026-12-06 have no record
            found = text_files(data_dir)
            for name in sorted(set(recorded) | set(found)):
                if recorded.get(name) != found.get(name):
                    what = "missing" if name not in found else (
                        "not the file prepare wrote (its size or checksum differs)")
                    raise UserError(f"{data_dir / name}: {what}; prepare the dataset again")
        text = TextProcessor.load(data_dir)
        if metadata.get("vocab_size", len(text.vocab)) != len(text.vocab):
            raise UserError(f"{data_dir / 'vocab.json'}: {len(text.vocab)} tokens, "
                            f"{METADATA_FILE} says {metadata.get('vocab_size')}; prepare the "
                            "dataset again")
        store = metadata.get("store")
        splits = {}
        for name in SPLITS:
            if isinstance(store, dict):
                if not isinstance(store.get(name), dict):
                    raise UserError(f"{meta_path}: no token store of the {name} split; "
                                    "prepare the dataset again")
                splits[name] = TokenSplit.open(data_dir, name, store[name], len(text.vocab))
                continue
            path = data_dir / f"{name}.tsv"  # a dataset prepared before the store
            if not path.exists():
                raise UserError(f"{path}: missing; the prepared dataset is incomplete")
            splits[name] = TokenSplit.from_pairs(read_split(path, text.vocab))
        return cls(text, splits, metadata)

    def lengths(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """``(source lengths, target lengths)`` of a split (without BOS/EOS)."""
        return self.splits[split].lengths()

    def sampler(self, split: str, **kwargs: object) -> BucketBatchSampler:
        """A ``BucketBatchSampler`` over ``split``; ``kwargs`` go to its constructor."""
        src_lengths, tgt_lengths = self.lengths(split)
        return BucketBatchSampler(src_lengths, tgt_lengths, **kwargs)  # type: ignore[arg-type]

    def batches(
        self, split: str, sampler: Iterable[list[int]], *, batch_first: bool = False
    ) -> Iterator[Batch]:
        """One epoch of batches of ``split`` in the order ``sampler`` gives."""
        return make_batches(self.splits[split], sampler, specials=self.text.vocab.specials,
                            batch_first=batch_first)
