"""The vocabulary: tokens <-> ids, with the special tokens at known ids (:class:`Specials`).

A vocabulary padless builds has its specials at fixed ids: PAD is 0 so that a
zero-initialised tensor is all padding and ``pad_batch``'s default matches; BOS, EOS and UNK
follow. A pretrained model's vocabulary keeps its own ids (Marian's EOS is 0 and its PAD the
last id; BART's decoder starts from its EOS): :meth:`Vocabulary.pretrained` takes them as
they are, so its weights need no permutation and its outputs stay exactly the model's. One
joint vocabulary serves source and target (a chatbot answers in the language it is spoken
to). Unknown tokens map to UNK instead of raising,
which is what crashes the tutorial's ``indexesFromSentence`` on a word it never saw.

The specials are ids, never text: a text token that spells one (``<pad>``, ``</s>`` in a
corpus prepared with ``--normalize none``) is an unknown word, so text can never put a
PAD, BOS or EOS into a sequence.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from padless.runtime.errors import UserError
from padless.runtime.files import read_utf8, write_json_atomic

__all__ = [
    "BOS",
    "BOS_ID",
    "EOS",
    "EOS_ID",
    "PAD",
    "PAD_ID",
    "SPECIALS",
    "Specials",
    "UNK",
    "UNK_ID",
    "Vocabulary",
]

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
SPECIALS: tuple[str, ...] = (PAD, BOS, EOS, UNK)

_FORMAT = "padless-vocabulary"
_VERSION = 1


@dataclass(frozen=True)
class Specials:
    """The ids of a vocabulary's special tokens.

    Attributes:
        pad: fills sequences past their end (never embedded by the Transformer, never an
            output).
        bos: what the decoder is fed first (a pretrained model's ``decoder_start_token_id``:
            Marian's is its PAD, BART's its EOS).
        eos: ends an answer.
        unk: stands for a word outside the vocabulary.
    """

    pad: int = PAD_ID
    bos: int = BOS_ID
    eos: int = EOS_ID
    unk: int = UNK_ID

    def never_output(self) -> tuple[int, ...]:
        """The ids an answer never holds: PAD and the decoder's start, unless that is EOS."""
        return tuple(sorted({self.pad, self.bos} - {self.eos}))


class Vocabulary:
    """An ordered token list; a token's id is its position.

    A vocabulary padless builds has ids 0-3 ``<pad> <s> </s> <unk>``, the other tokens
    following in the order given; a pretrained one (:meth:`pretrained`) keeps its model's
    ids and specials. Only the non-special tokens are words of the vocabulary (``in``,
    :meth:`encode`).
    """

    def __init__(self, tokens: Iterable[str] = ()) -> None:
        """Build from the non-special tokens, in id order (duplicates and specials skipped)."""
        self.specials = Specials()
        self._itos: list[str] = list(SPECIALS)
        self._stoi: dict[str, int] = {}  # words only: the specials are not text
        for tok in tokens:
            if tok not in self._stoi and tok not in SPECIALS:
                self._stoi[tok] = len(self._itos)
                self._itos.append(tok)

    @classmethod
    def pretrained(cls, tokens: Sequence[str], specials: Specials) -> Vocabulary:
        """A pretrained model's vocabulary: ``tokens`` in id order, its ``specials`` where the
        model has them.

        Raises:
            ValueError: if a special id is outside the tokens, or a token repeats.
        """
        if len(set(tokens)) != len(tokens):
            raise ValueError("vocabulary: duplicate tokens")
        for name, index in asdict(specials).items():
            if not (isinstance(index, int) and 0 <= index < len(tokens)):
                raise ValueError(f"vocabulary: the {name} id {index!r} is outside [0, "
                                 f"{len(tokens)})")
        vocab = cls.__new__(cls)
        vocab.specials = specials
        vocab._itos = list(tokens)
        special_ids = set(asdict(specials).values())
        vocab._stoi = {tok: i for i, tok in enumerate(tokens) if i not in special_ids}
        return vocab

    @classmethod
    def build(
        cls,
        token_lists: Iterable[Sequence[str]],
        *,
        min_count: int = 1,
        max_size: int | None = None,
    ) -> Vocabulary:
        """Count tokens and keep those seen at least ``min_count`` times.

        Order is by decreasing count, ties by the token itself, so the same corpus always
        gives the same ids. ``max_size`` caps the size, specials included.
        """
        counts: Counter[str] = Counter()
        for tokens in token_lists:
            counts.update(tokens)
        return cls.from_counts(counts, min_count=min_count, max_size=max_size)

    @classmethod
    def from_counts(
        cls, counts: Counter[str], *, min_count: int = 1, max_size: int | None = None
    ) -> Vocabulary:
        """The vocabulary of token ``counts`` (see :meth:`build`)."""
        kept = sorted(
            (tok for tok, c in counts.items() if c >= min_count and tok not in SPECIALS),
            key=lambda tok: (-counts[tok], tok),
        )
        if max_size is not None:
            kept = kept[: max(0, max_size - len(SPECIALS))]
        return cls(kept)

    def __len__(self) -> int:
        return len(self._itos)

    def __contains__(self, token: object) -> bool:
        """True for the vocabulary's words (never for the special tokens' spellings)."""
        return token in self._stoi

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Vocabulary) and self._itos == other._itos
                and self.specials == other.specials)

    def __repr__(self) -> str:
        return f"Vocabulary(size={len(self)})"

    @property
    def tokens(self) -> list[str]:
        """All tokens in id order, specials first (a copy)."""
        return list(self._itos)

    def token_to_id(self, token: str) -> int:
        """The id of the word ``token``; UNK's for an unknown word or a special's spelling."""
        return self._stoi.get(token, self.specials.unk)

    def id_to_token(self, index: int) -> str:
        """The token with id ``index``.

        Raises:
            IndexError: if ``index`` is outside ``[0, len(self))``: a model whose output
                layer does not match its vocabulary is a bug worth stopping on.
        """
        if not 0 <= index < len(self._itos):
            raise IndexError(f"Vocabulary: id {index} is outside [0, {len(self._itos)})")
        return self._itos[index]

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Map text tokens to ids; unknown ones (and specials' spellings) become UNK's."""
        get, unk = self._stoi.get, self.specials.unk
        return [get(tok, unk) for tok in tokens]

    def decode(self, ids: Sequence[int]) -> list[str]:
        """Map ids to tokens, specials included (see ``TextProcessor.decode`` for text)."""
        return [self.id_to_token(int(i)) for i in ids]

    def to_dict(self) -> dict:
        """Plain JSON types: ``{"format", "version", "tokens"}`` with padless's specials
        first, or with ``"specials"`` (their ids) for a pretrained vocabulary."""
        data = {"format": _FORMAT, "version": _VERSION, "tokens": list(self._itos)}
        if self.specials != Specials() or self._itos[:len(SPECIALS)] != list(SPECIALS):
            data["specials"] = asdict(self.specials)
        return data

    @classmethod
    def from_dict(cls, d: dict) -> Vocabulary:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: if ``d`` is not a vocabulary or its special tokens are not at ids 0-3.
        """
        if not isinstance(d, dict) or d.get("format") != _FORMAT:
            raise ValueError(f"not a padless vocabulary (expected format {_FORMAT!r})")
        tokens = d.get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise ValueError("vocabulary: 'tokens' must be a list of strings")
        if "specials" in d:
            specials = d["specials"]
            if not isinstance(specials, dict) or set(specials) != set(asdict(Specials())):
                raise ValueError("vocabulary: 'specials' must give the pad, bos, eos and unk "
                                 "ids")
            return cls.pretrained(tokens, Specials(**specials))
        if tuple(tokens[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(
                f"vocabulary: the first tokens must be {list(SPECIALS)}, got {tokens[:4]}"
            )
        if len(set(tokens)) != len(tokens):
            raise ValueError("vocabulary: duplicate tokens")
        return cls(tokens[len(SPECIALS) :])

    def save(self, path: str | os.PathLike) -> None:
        """Write the vocabulary as a JSON file (atomically)."""
        write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocabulary:
        """Read a file written by :meth:`save`.

        Raises:
            UserError: naming the file, if it is missing, not JSON or not a vocabulary.
        """
        try:
            d = json.loads(read_utf8(path))
        except FileNotFoundError:
            raise UserError(f"{path}: no such vocabulary file") from None
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
        except RecursionError:
            raise UserError(f"{path}: not a vocabulary (JSON nested too deeply)") from None
        try:
            return cls.from_dict(d)
        except ValueError as e:
            raise UserError(f"{path}: {e}") from None
