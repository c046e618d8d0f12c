"""``--ensemble``: several runs decode as one, with the mean of their log-probabilities."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from padless.cli import main
from padless.decoding.batched import decode_texts
from padless.decoding.options import SearchOptions
from padless.masking import pad_batch
from padless.models.ensemble import Ensemble
from padless.runs.loading import load_model
from tests.helpers import AS_TRANSFORMER, QUESTIONS, TINY_RUN, assert_one_line_error, run_cli


@pytest.fixture(scope="module")
def transformer_run(qa_data_dir: Path, tmp_path_factory) -> Path:
    """A Transformer on the qa data (the qa run is a GRU): one text pipeline, two models."""
    run = tmp_path_factory.mktemp("ensemble") / "tf"
    sets = [f"--set={kv}" for kv in [*TINY_RUN, *AS_TRANSFORMER]]
    assert main(["train", "--data", str(qa_data_dir), "--out", str(run), "--max-steps", "2",
                 *sets]) == 0
    return run


def test_the_ensembles_log_probabilities_are_the_mean_of_its_members(qa_run_dir,
                                                                       transformer_run) -> None:
    gru, text, _ = load_model(qa_run_dir, device="cpu")
    transformer, _, _ = load_model(transformer_run, device="cpu")
    gru, transformer = gru.double(), transformer.double()
    ensemble = Ensemble([gru, transformer])
    src, lengths = pad_batch([text.encode(q) for q in QUESTIONS[:4]])
    states = [ensemble.start_decoding(src, lengths)] + [
        m.start_decoding(src, lengths) for m in (gru, transformer)]
    prev = torch.full((4,), text.vocab.specials.bos)
    for _ in range(3):
        ours, states[0], _ = ensemble.decode_step(prev, states[0])
        (a, states[1], _), (b, states[2], _) = (
            m.decode_step(prev, s) for m, s in zip((gru, transformer), states[1:], strict=True))
        torch.testing.assert_close(ours, (a + b) / 2, rtol=0, atol=1e-12)
        prev = ours.argmax(-1)


@pytest.mark.parametrize("search", [[], ["--beam", "3"]])
def test_a_run_in_an_ensemble_with_itself_answers_as_it_does_alone(qa_run_dir, search,
                                                                  monkeypatch, capsys) -> None:
    stdin = "\n".join(QUESTIONS) + "\n"
    alone = run_cli(["translate", str(qa_run_dir), *search], stdin, monkeypatch, capsys)
    twice = run_cli(["translate", str(qa_run_dir), "--ensemble", str(qa_run_dir), *search],
                    stdin, monkeypatch, capsys)
    assert alone[0] == twice[0] == 0 and alone[1] == twice[1]
    assert "an ensemble of 2 runs" in twice[2]


def test_gru_and_transformer_decode_together_in_every_command(qa_run_dir, transformer_run,
                                                              monkeypatch, capsys) -> None:
    ensemble = ["--ensemble", str(transformer_run)]
    gru, text, _ = load_model(qa_run_dir, device="cpu")
    members = Ensemble([gru, load_model(transformer_run, device="cpu")[0]])
    options = SearchOptions(max_length=10)
    code, out, _ = run_cli(["translate", str(qa_run_dir), "--max-length", "10", *ensemble],
                           "\n".join(QUESTIONS) + "\n", monkeypatch, capsys)
    assert code == 0 and out.splitlines() == decode_texts(members, text, QUESTIONS, options)
    code, out, _ = run_cli(["chat", str(qa_run_dir), "--sample", "--seed", "3", *ensemble],
                           "hello there\n", monkeypatch, capsys)
    assert code == 0 and len(out.splitlines()) == 1
    code, out, _ = run_cli(["evaluate", str(qa_run_dir), "--limit", "4", *ensemble], None,
                           monkeypatch, capsys)
    assert code == 0 and "BLEU" in out and "an ensemble decodes only" in out


def test_a_member_of_another_vocabulary_or_a_missing_one_is_one_line(
        qa_run_dir, tmp_path, monkeypatch, capsys) -> None:
    from tests.helpers import write_reversal_dataset

    data = write_reversal_dataset(tmp_path / "data")
    other = tmp_path / "other"
    assert main(["train", "--data", str(data), "--out", str(other), "--max-steps", "1",
                 *[f"--set={kv}" for kv in TINY_RUN]]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("hi\n"))
    for member, words in ((other, "its vocabulary or text pipeline is not"),
                          (tmp_path / "missing", "missing/best.pt: no such checkpoint")):
        code = main(["translate", str(qa_run_dir), "--ensemble", str(member)])
        assert_one_line_error(code, capsys.readouterr().err, "translate", words)
