"""Text normalisation, tokenisation, and the ``TextProcessor`` that turns text into ids.

Two normalisers:

- ``tutorial`` reproduces the PyTorch chatbot tutorial's ``normalizeString``: fold to ASCII,
  lowercase, split off ``.!?``, and replace everything but ASCII letters with a space. It
  erases French accents and whole scripts (Greek, Cyrillic, CJK), so it is only an option.
- ``default`` keeps Unicode letters (with their combining marks), digits and in-word
  apostrophes, lowercases, applies NFKC (full-width forms, ligatures), and splits off
  ``.!?`` like the tutorial.
- ``none`` only collapses whitespace (for sentencepiece on cased, punctuated text).

Two tokenizers: ``word`` (whitespace split of the normalised text) and ``sentencepiece``
(BPE or unigram, trained offline on the training split with the ``sentencepiece`` package,
with its ids aligned to ours: PAD=0, BOS=1, EOS=2, UNK=3).
"""

from __future__ import annotations

import io
import json
import os
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import sentencepiece as spm

from padless.data.pretrained_tokenizer import PretrainedTokenizer
from padless.data.vocabulary import (
    BOS,
    BOS_ID,
    EOS,
    EOS_ID,
    PAD,
    PAD_ID,
    UNK,
    UNK_ID,
    Vocabulary,
)
from padless.runtime.errors import UserError
from padless.runtime.files import read_utf8, write_bytes_atomic, write_json_atomic

__all__ = [
    "NORMALIZERS",
    "TOKENIZERS",
    "SentencePieceTokenizer",
    "TextProcessor",
    "WordTokenizer",
    "normalize_default",
    "normalize_none",
    "normalize_tutorial",
    "train_sentencepiece",
    "without_surrogates",
]

_SPACES = re.compile(r"\s+")
# Lone surrogates: how Python passes on bytes that are not UTF-8 in a command-line argument
# or a stream read with errors="surrogateescape" (the C locale). They are not text.
_SURROGATES = re.compile("[\ud800-\udfff]")


def without_surrogates(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD (which UTF-8 can write)."""
    return _SURROGATES.sub("\ufffd", text)


def normalize_tutorial(text: str) -> str:
    """The tutorial's ``normalizeString``, step for step.

    >>> normalize_tutorial("Aren't you   Ça va?!")
    'aren t you ca va ? !'
    """
    text = "".join(
        c for c in unicodedata.normalize("NFD", text.lower().strip())
        if unicodedata.category(c) != "Mn"
    )
    text = re.sub(r"([.!?])", r" \1", text)
    text = re.sub(r"[^a-zA-Z.!?]+", r" ", text)
    return re.sub(r"\s+", r" ", text).strip()


class _DefaultTable(dict):
    """``str.translate`` table built lazily: each character is classified once.

    Translating with a cached table runs at C speed; classifying 130k chat pairs
    character by character in Python would take seconds.
    """

    _APOSTROPHES = "'\u2019\u2018\u02bc\uff07"

    def __missing__(self, code: int) -> str:
        c = chr(code)
        if c in ".!?":
            out = f" {c} "
        elif c in self._APOSTROPHES:
            out = "'"
        elif unicodedata.category(c)[0] in "LNM":  # letters, digits, combining marks
            out = c
        else:
            out = " "
        self[code] = out
        return out


_DEFAULT_TABLE = _DefaultTable()
# An apostrophe is kept only inside a word ("don't", "aujourd'hui"), not as a quote mark.
_LONE_APOSTROPHE = re.compile(r"(?<!\w)'|'(?!\w)")


def normalize_default(text: str) -> str:
    """Unicode-preserving normalisation: letters, digits, in-word apostrophes, ``.!?``.

    >>> normalize_default("Déjà vu?  C’est «génial»!")
    "déjà vu ? c'est génial !"
    """
    text = unicodedata.normalize("NFKC", text).lower().translate(_DEFAULT_TABLE)
    text = _LONE_APOSTROPHE.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


def normalize_none(text: str) -> str:
    """Collapse whitespace only (tabs and newlines would break the prepared files)."""
    return _SPACES.sub(" ", text).strip()


NORMALIZERS: dict[str, Callable[[str], str]] = {
    "default": normalize_default,
    "tutorial": normalize_tutorial,
    "none": normalize_none,
}


class WordTokenizer:
    """Whitespace tokenisation of normalised text; detokenisation re-attaches ``.!?``."""

    name = "word"
    _PUNCT = re.compile(r" ([.!?,])")

    def tokenize(self, text: str) -> list[str]:
        """Split on whitespace."""
        return text.split()

    def detokenize(self, tokens: Sequence[str]) -> str:
        """Join with spaces, without the space the normaliser put before ``.!?``."""
        return self._PUNCT.sub(r"\1", " ".join(tokens))


class SentencePieceTokenizer:
    """A trained sentencepiece model, kept as its serialized bytes (written as-is on save)."""

    name = "sentencepiece"
    MODEL_FILE = "sentencepiece.model"

    def __init__(self, model_proto: bytes) -> None:
        self.model_proto = model_proto
        self._sp = spm.SentencePieceProcessor(model_proto=model_proto)

    def tokenize(self, text: str) -> list[str]:
        """The model's pieces for ``text``."""
        return self._sp.encode(text, out_type=str)

    def detokenize(self, tokens: Sequence[str]) -> str:
        """Undo :meth:`tokenize` (``▁`` back to spaces)."""
        return self._sp.decode_pieces(list(tokens))

    def pieces(self) -> list[str]:
        """All pieces in id order (ids 0-3 are our specials, see ``train_sentencepiece``)."""
        return [self._sp.id_to_piece(i) for i in range(self._sp.get_piece_size())]


def train_sentencepiece(
    sentences: Iterable[str],
    *,
    vocab_size: int,
    model_type: str = "unigram",
    seed: int = 0,
) -> SentencePieceTokenizer:
    """Train sentencepiece in memory on already normalised ``sentences``.

    The special ids are aligned with ours so the model's piece ids *are* vocabulary ids.
    ``hard_vocab_limit=False`` lets a tiny corpus produce fewer pieces instead of failing;
    one thread and the whole input (no sampling) keep the model reproducible.

    Raises:
        UserError: when sentencepiece cannot train (a ``vocab_size`` below the corpus'
            characters plus the specials, say), with its reason.
    """
    spm.set_random_generator_seed(seed)
    out = io.BytesIO()
    try:
        _train_sentencepiece(sentences, out, vocab_size=vocab_size, model_type=model_type)
    except RuntimeError as e:  # sentencepiece checks its arguments against the corpus
        # Its words without "INTERNAL: src/x.cc(78) [...]" and its own command-line advice
        reason = str(e).rsplit("] ", 1)[-1].split(" Increase ")[0].strip() or str(e)
        advice = ""  # only where the size is the problem: any other advice would mislead
        if "smaller than required" in reason:
            advice = "; raise --vocab-size"
        elif "too high" in reason:
            advice = "; lower --vocab-size"
        raise UserError(f"sentencepiece cannot train a {vocab_size}-piece vocabulary on this "
                        f"corpus ({reason}){advice}") from None
    return SentencePieceTokenizer(out.getvalue())


def _train_sentencepiece(
    sentences: Iterable[str], out: io.BytesIO, *, vocab_size: int, model_type: str
) -> None:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=out,
        vocab_size=vocab_size,
        model_type=model_type,
        pad_id=PAD_ID,
        bos_id=BOS_ID,
        eos_id=EOS_ID,
        unk_id=UNK_ID,
        pad_piece=PAD,
        bos_piece=BOS,
        eos_piece=EOS,
        unk_piece=UNK,
        hard_vocab_limit=False,
        character_coverage=1.0,
        normalization_rule_name="identity",  # our normaliser already ran
        input_sentence_size=0,
        num_threads=1,
        minloglevel=2,
    )


TOKENIZERS = ("word", "sentencepiece")
_SETTINGS_FILE = "text.json"
_VOCAB_FILE = "vocab.json"
_FORMAT = "padless-text"


class TextProcessor:
    """Normalisation + tokenizer + vocabulary: text <-> ids.

    Attributes:
        vocab: the joint source/target vocabulary.
        normalize: name of the normaliser (a key of ``NORMALIZERS``).
        tokenizer: a ``WordTokenizer``, a ``SentencePieceTokenizer``, or a pretrained
            model's own :class:`~padless.data.pretrained_tokenizer.PretrainedTokenizer`
            (which maps text to ids itself, with its vocabulary and no normaliser).
    """

    def __init__(
        self,
        vocab: Vocabulary,
        *,
        normalize: str = "default",
        tokenizer: WordTokenizer | SentencePieceTokenizer | PretrainedTokenizer | None = None,
    ) -> None:
        if isinstance(tokenizer, PretrainedTokenizer) and (vocab != tokenizer.vocab
                                                           or normalize != "none"):
            raise ValueError("a pretrained tokenizer comes with its vocabulary and no normaliser")
        if not isinstance(normalize, str) or normalize not in NORMALIZERS:
            raise ValueError(f"unknown normaliser {normalize!r}; choose from {list(NORMALIZERS)}")
        self.vocab = vocab
        self.normalize = normalize
        self.tokenizer = tokenizer if tokenizer is not None else WordTokenizer()
        self._normalize = NORMALIZERS[normalize]

    def __repr__(self) -> str:
        return (
            f"TextProcessor(normalize={self.normalize!r}, tokenizer={self.tokenizer.name!r}, "
            f"vocab_size={len(self.vocab)})"
        )

    def normalize_text(self, text: str) -> str:
        """Apply the normaliser."""
        return self._normalize(text)

    def tokenize(self, text: str) -> list[str]:
        """Normalise and tokenise ``text``; undecodable bytes in it become U+FFFD (unknown)."""
        return self.tokenizer.tokenize(self._normalize(without_surrogates(text)))

    def encode(self, text: str) -> list[int]:
        """A source sentence's ids: normalised, tokenised and mapped (no BOS/EOS; unknown
        words become UNK), or as a pretrained tokenizer encodes a source."""
        if isinstance(self.tokenizer, PretrainedTokenizer):
            return self.tokenizer.encode_source(text)
        return self.vocab.encode(self.tokenize(text))

    def encode_target(self, text: str) -> list[int]:
        """A target sentence's ids, without the EOS a batch adds (the source's, but for a
        pretrained tokenizer, whose targets may be tokenised otherwise)."""
        if isinstance(self.tokenizer, PretrainedTokenizer):
            return self.tokenizer.encode_target(text)
        return self.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        """Detokenised text of ``ids``: stops at EOS, skips PAD and BOS, shows UNK as ``<unk>``."""
        if isinstance(self.tokenizer, PretrainedTokenizer):
            return self.tokenizer.decode(ids)
        tokens, specials = [], self.vocab.specials
        for i in ids:
            i = int(i)
            if i == specials.eos:
                break
            if i not in (specials.pad, specials.bos):
                tokens.append(self.vocab.id_to_token(i))
        return self.tokenizer.detokenize(tokens)

    def save(self, directory: str | os.PathLike) -> None:
        """Write ``text.json``, ``vocab.json`` (and ``sentencepiece.model``) into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.vocab.save(directory / _VOCAB_FILE)
        if isinstance(self.tokenizer, SentencePieceTokenizer):
            write_bytes_atomic(
                directory / SentencePieceTokenizer.MODEL_FILE, self.tokenizer.model_proto
            )
        elif isinstance(self.tokenizer, PretrainedTokenizer):
            self.tokenizer.save(directory)
        settings = {
            "format": _FORMAT,
            "version": 1,
            "normalize": self.normalize,
            "tokenizer": self.tokenizer.name,
        }
        write_json_atomic(directory / _SETTINGS_FILE, settings)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> TextProcessor:
        """Read what :meth:`save` wrote.

        Raises:
            UserError: naming the file that is missing or wrong.
        """
        directory = Path(directory)
        path = directory / _SETTINGS_FILE
        try:
            settings = json.loads(read_utf8(path))
        except FileNotFoundError:
            raise UserError(f"{path}: missing; {directory} holds no saved TextProcessor") from None
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
        except RecursionError:
            raise UserError(f"{path}: not a padless text-processor file") from None
        if not isinstance(settings, dict) or settings.get("format") != _FORMAT:
            raise UserError(f"{path}: not a padless text-processor file")
        vocab = Vocabulary.load(directory / _VOCAB_FILE)
        tokenizer: WordTokenizer | SentencePieceTokenizer | PretrainedTokenizer
        if settings.get("tokenizer") == PretrainedTokenizer.name:
            tokenizer = PretrainedTokenizer.load(directory, vocab)
        elif settings.get("tokenizer") == "sentencepiece":
            model_path = directory / SentencePieceTokenizer.MODEL_FILE
            try:
                tokenizer = SentencePieceTokenizer(model_path.read_bytes())
            except FileNotFoundError:
                raise UserError(f"{model_path}: missing sentencepiece model") from None
            except RuntimeError:  # sentencepiece's own parse error
                raise UserError(f"{model_path}: not a sentencepiece model (damaged?)") from None
            if tokenizer.pieces() != vocab.tokens:
                raise UserError(f"{model_path}: does not match {directory / _VOCAB_FILE}")
        elif settings.get("tokenizer") == "word":
            tokenizer = WordTokenizer()
        else:
            raise UserError(f"{path}: unknown tokenizer {settings.get('tokenizer')!r}")
        try:
            return cls(vocab, normalize=settings.get("normalize", ""), tokenizer=tokenizer)
        except ValueError as e:
            raise UserError(f"{path}: {e}") from None
