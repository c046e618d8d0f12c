"""A pretrained model's own tokenizer: :class:`PretrainedTokenizer`, the text pipeline of a
run that ``padless import`` made from a Hugging Face model folder.

It is ``transformers``' tokenizer loaded from local files (the ``hf`` extra; nothing is ever
downloaded), used exactly as the model was trained with it: a source is encoded with the
special tokens the tokenizer adds (Marian's final ``</s>``, BART's ``<s> ... </s>``), a target
as ``text_target`` (Marian's target sentencepiece model) without its final EOS, which
:class:`padless.data.batch.Batch` adds; ids are the model's own (its
:class:`~padless.data.vocabulary.Specials` included), so no weight is permuted.

Its files live in ``TEXT_DIR/pretrained/``, as ``save_pretrained`` writes them.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from padless.data.vocabulary import Specials, Vocabulary
from padless.runtime.errors import UserError

__all__ = ["PRETRAINED_DIR", "PretrainedTokenizer", "load_hf_tokenizer"]

PRETRAINED_DIR = "pretrained"  # the tokenizer's files, in a run's text/ directory


def load_hf_tokenizer(directory: str | os.PathLike) -> Any:
    """``transformers.AutoTokenizer`` from the local ``directory`` only.

    Raises:
        UserError: without the ``transformers`` package, or when the folder holds no
            tokenizer it can load (naming the folder and transformers' reason).
    """
    try:
        from transformers import AutoTokenizer
    except ModuleNotFoundError:
        raise UserError("a pretrained model's tokenizer needs the transformers package: pip "
                        "install 'padless[hf]'") from None
    with warnings.catch_warnings():  # e.g. MarianTokenizer's "Recommended: pip install ..."
        warnings.simplefilter("ignore")
        try:
            return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
        except (OSError, ValueError, TypeError, KeyError) as e:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"{directory}: no tokenizer that transformers can load from its "
                            f"files ({reason[:200]})") from None


class PretrainedTokenizer:
    """A Hugging Face tokenizer as a run's tokenizer (see the module docstring).

    Args:
        tokenizer: the ``transformers`` tokenizer.
        specials: the model's special ids (its decoder start is ``specials.bos``).
        vocab_size: the model's vocabulary size (its embedding rows; may exceed the
            tokenizer's tokens, the rest are named ``<unused N>``).
    """

    name = "pretrained"

    def __init__(self, tokenizer: Any, specials: Specials, vocab_size: int) -> None:
        self.hf, self.specials = tokenizer, specials
        size = len(tokenizer)
        if size > vocab_size:
            raise UserError(f"the tokenizer has {size} tokens, the model {vocab_size} rows")
        tokens = tokenizer.convert_ids_to_tokens(list(range(size)))
        seen: set[str] = set()
        for i, token in enumerate(tokens):  # a name twice (rare): keep the ids apart
            if token is None or token in seen:
                tokens[i] = f"<id {i}>"
            seen.add(tokens[i])
        self.vocab = Vocabulary.pretrained(
            tokens + [f"<unused {i}>" for i in range(size, vocab_size)], specials)

    def encode_source(self, text: str) -> list[int]:
        """A source sentence's ids, with the special tokens the tokenizer adds."""
        return list(self.hf(text)["input_ids"])

    def encode_target(self, text: str) -> list[int]:
        """A target sentence's ids as the model learns them, without the final EOS."""
        ids = list(self.hf(text_target=text)["input_ids"])
        return ids[:-1] if ids and ids[-1] == self.specials.eos else ids

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids`` up to the first EOS, special tokens left out."""
        kept = []
        for i in ids:
            if int(i) == self.specials.eos:
                break
            kept.append(int(i))
        return self.hf.decode(kept, skip_special_tokens=True).strip()

    def save(self, directory: str | os.PathLike) -> None:
        """The tokenizer's files into ``directory/pretrained/``."""
        target = Path(directory) / PRETRAINED_DIR
        target.mkdir(parents=True, exist_ok=True)
        self.hf.save_pretrained(str(target))

    @classmethod
    def load(cls, directory: str | os.PathLike, vocab: Vocabulary) -> PretrainedTokenizer:
        """What :meth:`save` wrote into ``directory``, for the saved ``vocab``.

        Raises:
            UserError: the files are missing or do not match ``vocab``.
        """
        loaded = cls(load_hf_tokenizer(Path(directory) / PRETRAINED_DIR), vocab.specials,
                     len(vocab))
        if loaded.vocab != vocab:
            raise UserError(f"{Path(directory) / PRETRAINED_DIR}: the tokenizer does not match "
                            f"{Path(directory) / 'vocab.json'}")
        return loaded
