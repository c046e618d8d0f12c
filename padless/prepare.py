"""``padless prepare``: turn a corpus into a prepared dataset (splits, vocabulary, metadata).

The steps, in order, each counted in the summary and in ``metadata.json``:

1. read pairs (``padless.readers``), dropping pairs with an empty side or a missing turn;
2. normalise, dropping pairs a side of which becomes empty (emoji only, say);
3. de-duplicate and split by seed (``padless.dataset.split_pairs``);
4. tokenise (training sentencepiece on the training split only, if asked);
5. drop pairs longer than ``--max-length`` tokens on either side;
6. build the vocabulary on the training split (``--min-count`` maps rarer words to UNK);
7. with ``--drop-unk-pairs`` (the tutorial's behaviour), drop pairs with a word outside it.

Everything is deterministic: the same input and options write byte-identical files.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import warnings
from pathlib import Path

from tqdm import tqdm

from padless.dataset import FORMAT, METADATA_FILE, SPLITS, split_pairs, write_split
from padless.readers import FORMATS, CorpusError, ReadStats, detect_format, read_corpus
from padless.text import (
    NORMALIZERS,
    TOKENIZERS,
    SentencePieceTokenizer,
    TextProcessor,
    WordTokenizer,
    train_sentencepiece,
)
from padless.vocabulary import Vocabulary, write_json_atomic

TokenPair = tuple[list[str], list[str]]
# Upper bounds of the length-histogram bins (tokens); the last bin is open-ended.
HISTOGRAM_BINS = (5, 10, 20, 50, 100)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``padless prepare``."""
    parser.add_argument(
        "corpus", nargs="+", metavar="CORPUS",
        help="a file, a folder (Cornell: the one holding movie_lines.txt), two files "
             "SRC_FILE TGT_FILE (parallel), or 'chitchat' for the bundled corpus",
    )
    parser.add_argument("--out", required=True, metavar="DATA_DIR", help="output folder")
    parser.add_argument("--format", default="auto", choices=["auto", *FORMATS],
                        help="corpus format (default: detected)")
    parser.add_argument("--normalize", default="default", choices=list(NORMALIZERS),
                        help="'default' keeps Unicode letters and digits; 'tutorial' is the "
                             "PyTorch tutorial's ASCII-only normaliser; 'none' only whitespace")
    parser.add_argument("--tokenizer", default="word", choices=TOKENIZERS)
    parser.add_argument("--vocab-size", type=int, default=8000,
                        help="sentencepiece vocabulary size (default 8000)")
    parser.add_argument("--spm-model", default="unigram", choices=["unigram", "bpe"],
                        help="sentencepiece model type (default unigram)")
    parser.add_argument("--min-count", type=int, default=1,
                        help="word tokenizer: words seen fewer times in train become UNK")
    parser.add_argument("--drop-unk-pairs", action="store_true",
                        help="drop pairs containing a word outside the vocabulary (the "
                             "tutorial's trimming) instead of mapping it to UNK")
    parser.add_argument("--max-length", type=int, default=None,
                        help="drop pairs with more tokens than this on either side")
    parser.add_argument("--valid-fraction", type=float, default=0.05)
    parser.add_argument("--test-fraction", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0, help="split (and sentencepiece) seed")
    parser.add_argument("--skip-bad-lines", action="store_true",
                        help="count and skip malformed lines instead of stopping")
    parser.add_argument("--max-pairs", type=int, default=None,
                        help="read only the first N pairs (for quick runs)")


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


def _bin_labels() -> list[str]:
    lows = [1, *(top + 1 for top in HISTOGRAM_BINS)]
    return [f"{lo}-{hi}" for lo, hi in zip(lows, HISTOGRAM_BINS, strict=False)] + [
        f"{lows[-1]}+"
    ]


def prepare(args: argparse.Namespace) -> dict:
    """Run the pipeline and write the dataset; returns the metadata (also written)."""
    fmt = detect_format(args.corpus) if args.format == "auto" else args.format
    stats = ReadStats(skip_bad_lines=args.skip_bad_lines)
    raw = tqdm(read_corpus(args.corpus, fmt, stats), desc="reading", unit=" pairs",
               disable=None, file=sys.stderr)
    normalize = NORMALIZERS[args.normalize]
    normalised = []
    for source, target in itertools.islice(raw, args.max_pairs):
        source, target = normalize(source), normalize(target)
        if source and target:
            normalised.append((source, target))
        else:
            stats.drop("empty after normalisation")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        texts, duplicates = split_pairs(normalised, valid_fraction=args.valid_fraction,
                                        test_fraction=args.test_fraction, seed=args.seed)
    if duplicates:
        stats.drop("duplicate", duplicates)
    if not texts["train"]:
        raise CorpusError(f"{' '.join(args.corpus)}: no usable pairs (read {stats.pairs_read})")

    if args.tokenizer == "sentencepiece":
        spm_tok = train_sentencepiece(
            (side for pair in texts["train"] for side in pair),
            vocab_size=args.vocab_size, model_type=args.spm_model, seed=args.seed,
        )
        text = TextProcessor(Vocabulary(spm_tok.pieces()), normalize=args.normalize,
                             tokenizer=spm_tok)
    else:
        text = TextProcessor(Vocabulary(), normalize=args.normalize, tokenizer=WordTokenizer())
    splits = {name: _tokenize(text, pairs) for name, pairs in texts.items()}

    if args.max_length is not None:
        for name, pairs in splits.items():
            kept = [p for p in pairs if max(len(p[0]), len(p[1])) <= args.max_length]
            stats.drop(f"longer than {args.max_length} tokens", len(pairs) - len(kept))
            splits[name] = kept
    if args.tokenizer == "word":
        text.vocab = Vocabulary.build(
            (side for pair in splits["train"] for side in pair), min_count=args.min_count
        )
    if args.drop_unk_pairs:
        vocab = text.vocab
        for name, pairs in splits.items():
            kept = [p for p in pairs if all(tok in vocab for side in p for tok in side)]
            stats.drop("unknown word (--drop-unk-pairs)", len(pairs) - len(kept))
            splits[name] = kept
    if not splits["train"]:
        raise CorpusError(f"{' '.join(args.corpus)}: every training pair was filtered out")

    out = Path(args.out)
    _check_out(out)
    out.mkdir(parents=True, exist_ok=True)
    if args.tokenizer == "word":  # a model left by an earlier sentencepiece run
        (out / SentencePieceTokenizer.MODEL_FILE).unlink(missing_ok=True)
    text.save(out)
    for name in SPLITS:
        write_split(out / f"{name}.tsv", splits[name])

    kept_pairs = [p for name in SPLITS for p in splits[name]]
    metadata = {
        "format": FORMAT,
        "version": 1,
        "corpus": list(args.corpus),
        "corpus_format": fmt,
        "settings": {
            key: getattr(args, key)
            for key in ("normalize", "tokenizer", "vocab_size", "spm_model", "min_count",
                        "drop_unk_pairs", "max_length", "valid_fraction", "test_fraction",
                        "seed", "skip_bad_lines", "max_pairs")
        },
        "counts": {
            "read": stats.pairs_read,
            "kept": len(kept_pairs),
            "dropped": dict(sorted(stats.dropped.items())),
            "bad_lines": stats.bad_lines,
            "missing_ids": stats.missing_ids,
            "splits": {name: len(splits[name]) for name in SPLITS},
        },
        "vocab_size": len(text.vocab),
        "unk_rate": {name: round(_unk_rate(text.vocab, splits[name]), 6) for name in SPLITS},
        "length_histogram": {
            "bins": _bin_labels(),
            "source": _histogram([len(s) for s, _ in kept_pairs]),
            "target": _histogram([len(t) for _, t in kept_pairs]),
        },
        "problems": stats.problems,
        "warnings": [str(w.message) for w in caught],
    }
    write_json_atomic(out / METADATA_FILE, metadata)
    return metadata


def _check_out(out: Path) -> None:
    """Refuse to write into a non-empty folder that is not an earlier prepared dataset."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir())
                                               and not (out / METADATA_FILE).exists())):
        raise CorpusError(f"{out}: exists and is not a prepared dataset; choose another --out")


def format_summary(meta: dict, out: str) -> str:
    """What a user wants to see after ``prepare``: counts, drops, vocabulary, UNK, lengths."""
    counts = meta["counts"]
    sizes = counts["splits"]
    lines = [
        f"corpus       {' '.join(meta['corpus'])} ({meta['corpus_format']})",
        f"pairs read   {counts['read']:,}",
        f"dropped      {counts['read'] - counts['kept']:,}",
    ]
    lines += [f"  {reason:<34} {n:,}" for reason, n in counts["dropped"].items()]
    if counts["bad_lines"]:
        lines.append(f"  bad lines skipped (not pairs)      {counts['bad_lines']:,}")
    if counts["missing_ids"]:
        lines.append(f"  missing line ids (not pairs)       {counts['missing_ids']:,}")
    lines += [
        f"kept         {counts['kept']:,} (train {sizes['train']:,}, "
        f"valid {sizes['valid']:,}, test {sizes['test']:,})",
        f"vocabulary   {meta['vocab_size']:,} ({meta['settings']['tokenizer']}, "
        f"normalize={meta['settings']['normalize']}, 4 specials included)",
        "UNK rate     " + ", ".join(f"{k} {v:.2%}" for k, v in meta["unk_rate"].items()),
        "length       tokens  source  target",
    ]
    hist = meta["length_histogram"]
    total = max(counts["kept"], 1)
    for label, s, t in zip(hist["bins"], hist["source"], hist["target"], strict=True):
        bar = "#" * round(30 * t / total)
        lines.append(f"             {label:>6}  {s / total:6.1%}  {t / total:6.1%}  {bar}".rstrip())
    lines += [f"note         {p}" for p in meta["problems"]]
    model = " sentencepiece.model" if meta["settings"]["tokenizer"] == "sentencepiece" else ""
    lines.append(f"wrote        {out}/ (train.tsv valid.tsv test.tsv vocab.json text.json"
                 f"{model} {METADATA_FILE})")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``padless prepare``."""
    try:
        meta = prepare(args)
    except (CorpusError, ValueError) as e:
        print(f"padless prepare: error: {e}", file=sys.stderr)
        return 1
    for message in meta["warnings"]:
        print(f"padless prepare: warning: {message}", file=sys.stderr)
    print(format_summary(meta, args.out))
    return 0


__all__ = ["add_arguments", "format_summary", "prepare", "run"]
