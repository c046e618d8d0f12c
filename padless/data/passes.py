"""The two streaming passes of ``padless prepare`` (:func:`padless.data.prepare.prepare`
puts them together): :class:`FirstPass` reads, normalises, de-duplicates and splits the
corpus into one temporary file of normalised pairs per split; :func:`second_pass`
tokenises and encodes them into the TSV files and the token store. Memory holds the
digests of the unique pairs (8 bytes each), the training words' counts and, for
sentencepiece, its sample: not the corpus.
"""

from __future__ import annotations

import itertools
import random
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from tqdm import tqdm

from padless.data.dataset import SPLITS, split_pairs
from padless.data.dedupe import SeenDigests, split_of
from padless.data.options import PrepareOptions
from padless.data.parallel import ChunkPool, chunked, normalised, tokenised
from padless.data.pretrained_tokenizer import PretrainedTokenizer
from padless.data.readers import ReadStats, read_corpus
from padless.data.store import write_token_split
from padless.data.text import TextProcessor
from padless.runtime.files import atomic_write

__all__ = ["HISTOGRAM_BINS", "SMALL_CORPUS", "SPM_SAMPLE", "FirstPass", "SplitStats",
           "bin_labels", "second_pass"]

# Upper bounds of the length-histogram bins (tokens); the last bin is open-ended.
HISTOGRAM_BINS = (5, 10, 20, 50, 100)
# Below this many unique pairs a corpus gets the exact seeded split (never an empty valid or
# test split), above it the split by digest; the small-corpus warning starts here too.
SMALL_CORPUS = 100
# Training sides sentencepiece learns from at most (a seeded sample of them beyond).
SPM_SAMPLE = 2_000_000


def bin_labels() -> list[str]:
    """Labels of the length-histogram bins: ``1-5``, ..., ``101+``."""
    lows = [1, *(top + 1 for top in HISTOGRAM_BINS)]
    return [f"{lo}-{hi}" for lo, hi in zip(lows, HISTOGRAM_BINS, strict=False)] + [
        f"{lows[-1]}+"
    ]


def _bin(n: int) -> int:
    """The length-histogram bin of ``n`` tokens."""
    return next((k for k, top in enumerate(HISTOGRAM_BINS) if n <= top), len(HISTOGRAM_BINS))


class FirstPass:
    """Pass 1 (steps 1-3, and 4-6 for the word tokenizer): each split's normalised pairs,
    one ``source<TAB>target`` line each, to ``DIR/.NAME.pass1``; what the vocabulary is
    built from."""

    def __init__(self, directory: Path, opts: PrepareOptions, stats: ReadStats, *,
                 learn: bool = True) -> None:
        self.opts, self.stats, self.learn = opts, stats, learn
        self.paths = {name: directory / f".{name}.pass1" for name in SPLITS}
        self.files = {name: path.open("w", encoding="utf-8", newline="\n")
                      for name, path in self.paths.items()}
        self.seen = SeenDigests()
        self.small: list[tuple[str, str, int]] | None = []  # until the corpus is not small
        self.counts: Counter[str] = Counter()  # training words (word tokenizer)
        self.sample: list[str] = []  # training sides sentencepiece learns from
        self.train_sides = 0
        self._rng = random.Random(f"padless-spm-sample:{opts.seed}")

    def run(self, corpus: list[str], fmt: str, workers: int) -> None:
        opts = self.opts
        raw = tqdm(read_corpus(corpus, fmt, self.stats), desc="reading", unit=" pairs",
                   disable=None, file=sys.stderr)
        tasks = ((opts.normalize, opts.seed, chunk)
                 for chunk in chunked(itertools.islice(raw, opts.max_pairs)))
        with ChunkPool(workers) as pool:
            for results in pool.map(normalised, tasks):
                self._take(results)
        if self.small is not None:  # a small corpus: the exact seeded split
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                texts, _ = split_pairs([(s, t) for s, t, _ in self.small],
                                       valid_fraction=opts.valid_fraction,
                                       test_fraction=opts.test_fraction, seed=opts.seed)
            self.notes = [str(w.message) for w in caught]
            for name in SPLITS:
                for source, target in texts[name]:
                    self._place(name, source, target)
        else:
            self.notes = []
        for f in self.files.values():
            f.close()

    def _take(self, results: list[tuple[str, str, int] | None]) -> None:
        kept = [r for r in results if r is not None]
        self.stats.drop("empty after normalisation", len(results) - len(kept))
        new = self.seen.first_seen(np.fromiter((d for _, _, d in kept), dtype=np.uint64,
                                               count=len(kept)))
        self.stats.drop("duplicate", len(kept) - int(new.sum()))
        opts = self.opts
        for (source, target, digest), first in zip(kept, new.tolist(), strict=True):
            if not first:
                continue
            if self.small is not None:
                self.small.append((source, target, digest))
                if len(self.small) < SMALL_CORPUS:
                    continue
                held, self.small = self.small, None
                for s, t, d in held:
                    self._place(split_of(d, opts.valid_fraction, opts.test_fraction), s, t)
                continue
            self._place(split_of(digest, opts.valid_fraction, opts.test_fraction),
                        source, target)

    def _place(self, name: str, source: str, target: str) -> None:
        opts = self.opts
        if not self.learn:  # a given text pipeline: pass 2 tokenises and caps the lengths
            pass
        elif opts.tokenizer == "word":
            sides = source.split(), target.split()
            if opts.max_length is not None and max(map(len, sides)) > opts.max_length:
                self.stats.drop(f"longer than {opts.max_length} tokens")
                return
            if name == "train":
                self.counts.update(sides[0])
                self.counts.update(sides[1])
        elif name == "train":  # reservoir sampling: every side equally likely, seeded
            for side in (source, target):
                self.train_sides += 1
                if len(self.sample) < SPM_SAMPLE:
                    self.sample.append(side)
                elif (k := self._rng.randrange(self.train_sides)) < SPM_SAMPLE:
                    self.sample[k] = side
        self.files[name].write(f"{source}\t{target}\n")


@dataclass
class SplitStats:
    pairs: int = 0
    tokens: int = 0
    unknown: int = 0
    source_bins: list[int] = field(default_factory=lambda: [0] * (len(HISTOGRAM_BINS) + 1))
    target_bins: list[int] = field(default_factory=lambda: [0] * (len(HISTOGRAM_BINS) + 1))


def second_pass(first: FirstPass, text: TextProcessor, out: Path, opts: PrepareOptions,
                 stats: ReadStats, workers: int) -> tuple[dict[str, SplitStats], dict]:
    """Pass 2 (steps 4-7): each split tokenised, encoded and written as its TSV file and
    its token store; the per-split counts and the store's metadata."""
    vocab, counted, store = text.vocab, {}, {}
    unk = vocab.specials.unk
    proto = getattr(text.tokenizer, "model_proto", None)
    with ChunkPool(workers if proto is not None else 1, proto) as pool:
        for name in SPLITS:
            split = counted[name] = SplitStats()

            def encoded(tsv: BinaryIO, split: SplitStats = split, name: str = name):
                with first.paths[name].open(encoding="utf-8", newline="\n") as f:
                    lines = (line.rstrip("\n") for line in f)
                    for source, target, ids in _tokenised(lines, text, pool):
                        if opts.max_length is not None and max(
                                len(source), len(target)) > opts.max_length:
                            stats.drop(f"longer than {opts.max_length} tokens")
                            continue
                        unknown = ids[0].count(unk) + ids[1].count(unk)
                        split.tokens += len(ids[0]) + len(ids[1])
                        split.unknown += unknown
                        if opts.drop_unk_pairs and unknown:
                            stats.drop("unknown word (--drop-unk-pairs)")
                            continue
                        split.pairs += 1
                        split.source_bins[_bin(len(source))] += 1
                        split.target_bins[_bin(len(target))] += 1
                        tsv.write(f"{' '.join(source)}\t{' '.join(target)}\n".encode())
                        yield ids

            def write_tsv(tsv: BinaryIO, name: str = name,
                          encoded: Callable = encoded) -> None:
                store[name] = write_token_split(out, name, encoded(tsv), len(vocab))

            atomic_write(out / f"{name}.tsv", write_tsv)
            first.paths[name].unlink()
    return counted, store


def _tokenised(lines: Iterator[str], text: TextProcessor, pool: ChunkPool,
               ) -> Iterator[tuple[list[str], list[str], tuple[list[int], list[int]]]]:
    """``(source tokens, target tokens, ids)`` of each ``source<TAB>target`` line: words or
    sentencepiece pieces tokenised in the pool's workers, or, for a pretrained model's own
    tokenizer (which maps text to ids itself, sources and targets each their way), here."""
    if isinstance(text.tokenizer, PretrainedTokenizer):
        for line in lines:
            source, target = line.split("\t")
            ids = text.encode(source), text.encode_target(target)
            yield text.vocab.decode(ids[0]), text.vocab.decode(ids[1]), ids
        return
    for pairs in pool.map(tokenised, chunked(lines)):
        for source, target in pairs:
            yield source, target, (text.vocab.encode(source), text.vocab.encode(target))
