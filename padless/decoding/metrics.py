"""Scores of decoded text against references, and of answers on their own (dialogue).

BLEU and chrF compare detokenised text with the references (``sacrebleu``). The dialogue
metrics look at the answers' tokens (the model's own units: words with the word tokenizer,
pieces with sentencepiece), the units that ``--no-repeat-ngram`` counts too.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import sacrebleu

__all__ = ["DialogueScores", "dialogue_scores", "distinct_n", "has_repeated_ngram",
           "text_scores"]


def text_scores(hypotheses: Sequence[str], references: Sequence[str]) -> tuple[float, float]:
    """Corpus ``(BLEU, chrF)`` of detokenised hypotheses against one reference each."""
    bleu = sacrebleu.corpus_bleu(list(hypotheses), [list(references)])
    chrf = sacrebleu.corpus_chrf(list(hypotheses), [list(references)])
    return bleu.score, chrf.score


def _ngrams(tokens: Sequence[Hashable], n: int) -> list[tuple[Hashable, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(answers: Sequence[Sequence[Hashable]], n: int) -> float:
    """Distinct-n (Li et al., 2016): distinct n-grams over all n-grams of all ``answers``.

    Near 1: varied answers; near 0: the same few words everywhere ("i don't know").
    0.0 when the answers hold no n-gram at all.
    """
    grams = [g for tokens in answers for g in _ngrams(tokens, n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def has_repeated_ngram(tokens: Sequence[Hashable], n: int = 3) -> bool:
    """True if some n-gram occurs twice in ``tokens`` (overlaps count: ``a a a a`` for 3)."""
    grams = _ngrams(tokens, n)
    return len(set(grams)) < len(grams)


@dataclass(frozen=True)
class DialogueScores:
    """How the answers read, beside what they are compared with.

    Attributes:
        distinct_1, distinct_2: :func:`distinct_n` over all answers.
        repeated_3gram: share of answers (0-1) in which some 3-gram occurs twice.
        mean_length: mean answer length in tokens ...
        reference_mean_length: ... and the references'.
    """

    distinct_1: float
    distinct_2: float
    repeated_3gram: float
    mean_length: float
    reference_mean_length: float


def dialogue_scores(
    answers: Sequence[Sequence[Hashable]], references: Sequence[Sequence[Hashable]]
) -> DialogueScores:
    """:class:`DialogueScores` of token lists ``answers`` against ``references``."""
    if not answers or len(answers) != len(references):
        raise ValueError(f"dialogue scores need as many answers as references, at least one "
                         f"(got {len(answers)} and {len(references)})")
    n = len(answers)
    return DialogueScores(
        distinct_n(answers, 1), distinct_n(answers, 2),
        sum(has_repeated_ngram(a, 3) for a in answers) / n,
        sum(map(len, answers)) / n, sum(map(len, references)) / n,
    )
