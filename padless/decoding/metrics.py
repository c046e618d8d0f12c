"""Scores of decoded text against references."""

from __future__ import annotations

from collections.abc import Sequence

import sacrebleu

__all__ = ["text_scores"]


def text_scores(hypotheses: Sequence[str], references: Sequence[str]) -> tuple[float, float]:
    """Corpus ``(BLEU, chrF)`` of detokenised hypotheses against one reference each."""
    bleu = sacrebleu.corpus_bleu(list(hypotheses), [list(references)])
    chrf = sacrebleu.corpus_chrf(list(hypotheses), [list(references)])
    return bleu.score, chrf.score
