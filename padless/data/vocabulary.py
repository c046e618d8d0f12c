"""The vocabulary: tokens <-> ids, with the special tokens at fixed ids.

PAD is 0 so that a zero-initialised tensor is all padding and ``pad_batch``'s default
matches; BOS, EOS and UNK follow. One joint vocabulary serves source and target (a chatbot
answers in the language it is spoken to). Unknown tokens map to UNK instead of raising,
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
    "UNK",
    "UNK_ID",
    "Vocabulary",
]

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
SPECIALS: tuple[str, ...] = (PAD, BOS, EOS, UNK)

_FORMAT = "padless-vocabulary"
_VERSION = 1


class Vocabulary:
    """An ordered token list; a token's id is its position.

    Ids 0-3 are always ``<pad> <s> </s> <unk>``; the other tokens follow in the order given.
    Only those others are words of the vocabulary (``in``, :meth:`encode`).
    """

    def __init__(self, tokens: Iterable[str] = ()) -> None:
        """Build from the non-special tokens, in id order (duplicates and specials skipped)."""
        self._itos: list[str] = list(SPECIALS)
        self._stoi: dict[str, int] = {}  # words only: the specials are not text
        for tok in tokens:
            if tok not in self._stoi and tok not in SPECIALS:
                self._stoi[tok] = len(self._itos)
                self._itos.append(tok)

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
        return isinstance(other, Vocabulary) and self._itos == other._itos

    def __repr__(self) -> str:
        return f"Vocabulary(size={len(self)})"

    @property
    def tokens(self) -> list[str]:
        """All tokens in id order, specials first (a copy)."""
        return list(self._itos)

    def token_to_id(self, token: str) -> int:
        """The id of the word ``token``; UNK_ID for an unknown word or a special's spelling."""
        return self._stoi.get(token, UNK_ID)

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
        """Map text tokens to ids; unknown ones (and specials' spellings) become UNK_ID."""
        get = self._stoi.get
        return [get(tok, UNK_ID) for tok in tokens]

    def decode(self, ids: Sequence[int]) -> list[str]:
        """Map ids to tokens, specials included (see ``TextProcessor.decode`` for text)."""
        return [self.id_to_token(int(i)) for i in ids]

    def to_dict(self) -> dict:
        """Plain JSON types: ``{"format", "version", "tokens"}`` with specials first."""
        return {"format": _FORMAT, "version": _VERSION, "tokens": list(self._itos)}

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
