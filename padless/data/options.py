"""``PrepareOptions``: how ``padless prepare`` reads, cleans, splits and tokenises a corpus.

Each field is declared once (:func:`padless.runtime.options.option`): its help, bounds,
choices and flag; ``padless prepare``'s options are generated from them.
"""

from __future__ import annotations

from dataclasses import dataclass

from padless.data.readers import FORMATS
from padless.data.text import NORMALIZERS, TOKENIZERS
from padless.data.vocabulary import SPECIALS
from padless.runtime.options import ConfigError, check_options, option

__all__ = ["DEFAULT_MAX_LENGTH", "PrepareOptions"]

# Pairs longer than this many tokens on a side are dropped unless max_length says otherwise:
# 0.3 % of the chitchat corpus, none of the tutorial's or the quickstart's data.
DEFAULT_MAX_LENGTH = 200
# The largest vocabularies in use are about 256k pieces (Gemma, mT5); a bound far above them
# turns a typo (2**31) into an error, not an hour of sentencepiece at 100 % CPU.
MAX_VOCAB_SIZE = 1_000_000


@dataclass(frozen=True)
class PrepareOptions:
    """How :func:`padless.data.prepare.prepare` reads, cleans, splits and tokenises a corpus.

    Raises:
        ConfigError: naming the first field with a bad value (``prepare.min_count: ...``).
    """

    format: str = option("auto", "corpus format (auto: detected)", flag="--format",
                         choices=("auto", *FORMATS))
    normalize: str = option("default", "default keeps Unicode letters and digits; tutorial is "
                            "the PyTorch tutorial's ASCII-only normaliser; none only "
                            "whitespace", flag="--normalize", choices=tuple(NORMALIZERS))
    tokenizer: str = option("word", "words, or subwords of a sentencepiece model trained on "
                            "the training split", flag="--tokenizer", choices=TOKENIZERS)
    vocab_size: int = option(8000, "sentencepiece vocabulary size", flag="--vocab-size",
                             minimum=len(SPECIALS) + 1, maximum=MAX_VOCAB_SIZE)
    spm_model: str = option("unigram", "sentencepiece model type", flag="--spm-model",
                            choices=("unigram", "bpe"))
    min_count: int = option(1, "word tokenizer: words seen fewer times in train become <unk>",
                            flag="--min-count", minimum=1)
    drop_unk_pairs: bool = option(False, "drop pairs containing a word outside the vocabulary "
                                  "(the tutorial's trimming) instead of mapping it to <unk>",
                                  flag="--drop-unk-pairs")
    max_length: int | None = option(DEFAULT_MAX_LENGTH, "drop pairs with more tokens than this "
                                    "on either side (null: no limit)", flag="--max-length",
                                    minimum=1)
    valid_fraction: float = option(0.05, "share of the unique pairs in the validation split",
                                   flag="--valid-fraction", metavar="F", minimum=0, maximum=1,
                                   open_max=True)
    test_fraction: float = option(0.05, "share of the unique pairs in the test split",
                                  flag="--test-fraction", metavar="F", minimum=0, maximum=1,
                                  open_max=True)
    seed: int = option(0, "split (and sentencepiece) seed", flag="--seed", minimum=0,
                       maximum=2**31 - 1)
    skip_bad_lines: bool = option(False, "count and skip malformed lines instead of stopping",
                                  flag="--skip-bad-lines")
    max_pairs: int | None = option(None, "read only the first N pairs (for quick runs)",
                                   flag="--max-pairs", minimum=1)

    def __post_init__(self) -> None:
        check_options(self, "prepare")
        if self.valid_fraction + self.test_fraction >= 1:
            raise ConfigError("prepare.valid_fraction + test_fraction: must leave some "
                              f"training data, got {self.valid_fraction} + {self.test_fraction}")
