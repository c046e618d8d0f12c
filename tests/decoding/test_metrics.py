"""Dialogue metrics against counts done by hand."""

from __future__ import annotations

import pytest

from padless.decoding.metrics import dialogue_scores, distinct_n, has_repeated_ngram


def test_distinct_n_counts_over_all_answers() -> None:
    answers = [["i", "know", "."], ["i", "know", "!"], []]
    assert distinct_n(answers, 1) == pytest.approx(4 / 6)  # i know . ! of 6 tokens
    assert distinct_n(answers, 2) == pytest.approx(3 / 4)  # (i know) twice, (know .), (know !)
    assert distinct_n(answers, 3) == pytest.approx(2 / 2)
    assert distinct_n([["a"], []], 2) == 0.0  # no bigram at all


def test_repeated_ngrams_include_overlaps() -> None:
    assert has_repeated_ngram(list("aaaa"), 3)  # "a a a" at 0 and 1
    assert not has_repeated_ngram(list("aaa"), 3)
    assert has_repeated_ngram(list("abcxabc"), 3)
    assert not has_repeated_ngram(list("abcxab"), 3)
    assert has_repeated_ngram(list("abab"), 2) and not has_repeated_ngram(list("abab"), 3)


def test_dialogue_scores() -> None:
    answers = [["good"] + ["!"] * 4, ["i", "like", "it"]]
    references = [["good", "!"], ["me", "too", "."], ]
    scores = dialogue_scores(answers, references)
    assert scores.distinct_1 == pytest.approx(5 / 8)
    assert scores.distinct_2 == pytest.approx(4 / 6)  # (good !), (! !) x3, (i like), (like it)
    assert scores.repeated_3gram == 0.5
    assert scores.mean_length == 4.0 and scores.reference_mean_length == 2.5
    with pytest.raises(ValueError, match="as many answers as references"):
        dialogue_scores(answers, references[:1])
