"""``padless score`` and ``POST /v1/score``: each pair's log-probability, whose sums are
``padless evaluate``'s teacher-forced loss on the same pairs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from padless.models.scoring import corpus_scores, pair_scores
from padless.runs.loading import load_model
from tests.helpers import ANSWERS, QUESTIONS, assert_one_line_error, run_cli

PAIRS = [(q, a) for q, a in zip(QUESTIONS, ANSWERS, strict=True)] + [("hello there", "")]


def test_scores_sum_to_the_teacher_forced_loss(qa_run_dir: Path, monkeypatch, capsys) -> None:
    stdin = "".join(f"{s}\t{t}\n" for s, t in PAIRS)
    code, out, _ = run_cli(["score", str(qa_run_dir), "--batch-size", "3"], stdin,
                           monkeypatch, capsys)
    assert code == 0
    rows = [line.split("\t") for line in out.splitlines()]
    assert len(rows) == len(PAIRS)
    model, text, _ = load_model(qa_run_dir, device="cpu")
    pairs = [(text.encode(s), text.encode_target(t)) for s, t in PAIRS]
    for (log_prob, mean, tokens), (_, target) in zip(rows, pairs, strict=True):
        assert int(tokens) == len(target) + 1  # and its EOS
        assert float(mean) == pytest.approx(float(log_prob) / int(tokens), abs=2e-6)
        assert float(log_prob) < 0
    expected = corpus_scores(model, pairs)
    scores = pair_scores(model, pairs, batch_size=5)
    assert sum(s.tokens for s in scores) == expected.n_tokens
    assert -sum(s.log_prob for s in scores) == pytest.approx(expected.loss_sum, rel=1e-6)
    assert [float(row[0]) for row in rows] == pytest.approx([s.log_prob for s in scores],
                                                            abs=1e-5)
    # one pair scored alone has the score it has in a batch
    alone = pair_scores(model, pairs[:1])[0]
    assert math.isclose(alone.log_prob, scores[0].log_prob, abs_tol=1e-4)


@pytest.mark.parametrize(("stdin", "words"), [
    ("hi\tthere\nno tab here\n", "stdin:2: expected 'source<TAB>target', found 0 TABs"),
    ("a\tb\tc\n", "stdin:1: expected 'source<TAB>target', found 2 TABs"),
    ("hi\tthere\n\tthere\n", "stdin:2: the source has no token to score from"),
])
def test_bad_pairs_are_one_line_before_any_output(qa_run_dir, monkeypatch, capsys, stdin,
                                                   words) -> None:
    code, out, err = run_cli(["score", str(qa_run_dir)], stdin, monkeypatch, capsys)
    assert_one_line_error(code, err, "score", words)
    assert out == ""


def test_the_server_scores_pairs_in_its_worker(qa_run_dir: Path) -> None:
    from fastapi.testclient import TestClient

    from padless.serving.server import load_app

    model, text, _ = load_model(qa_run_dir, device="cpu")
    expected = pair_scores(model, [(text.encode(s), text.encode_target(t)) for s, t in PAIRS])
    with TestClient(load_app(qa_run_dir, device="cpu", precision="fp32")) as client:
        body = {"pairs": [{"source": s, "target": t} for s, t in PAIRS]}
        response = client.post("/v1/score", json=body)
        assert response.status_code == 200, response.text
        got = response.json()["scores"]
        assert [g["tokens"] for g in got] == [e.tokens for e in expected]
        assert [g["log_prob"] for g in got] == pytest.approx([e.log_prob for e in expected],
                                                             abs=1e-4)
        bad = client.post("/v1/score", json={"pairs": [{"source": "", "target": "x"}]})
        assert bad.status_code == 422 and "pairs[0].source" in bad.json()["detail"]
        assert client.post("/v1/score", json={"pairs": [{"source": "x"}]}).status_code == 422
