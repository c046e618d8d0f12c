"""``padless chat``, ``translate`` and ``evaluate`` on a tiny prepared corpus and model."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from padless.decoding.batched import decode_lines, decode_texts
from padless.decoding.options import SearchOptions
from padless.runs.directory import RunDirectory
from padless.runs.info import read_run_info
from padless.runs.loading import load_model
from padless.runtime import precision as precision_module
from tests.helpers import ANSWERS, QUESTIONS, assert_one_line_error, run_cli


def test_chat_answers_unknown_words_and_empty_lines_one_line_each(
    qa_run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stdin = "hello there\nzyxxy qwertz blorp\n\n   \nhow are you ?\nquit\nexit\n:q\nstill here\n"
    code, out, err = run_cli(["chat", str(qa_run_dir), "--device", "cpu"], stdin, monkeypatch,
                             capsys)
    assert code == 0
    # one per input line: in a script `quit`, `exit` and `:q` are data like any other line
    assert len(out.splitlines()) == 9
    assert out.splitlines()[2] == out.splitlines()[3] == ""
    assert all(out.splitlines()[i] for i in (0, 1, 4, 5, 6, 7, 8))
    assert "nothing to answer" in err


def test_chat_beam_and_seeded_sampling(
    qa_run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stdin = "hello there\nwhat is your name ?\n"
    beam = ["chat", str(qa_run_dir), "--beam", "3", "--max-length", "8"]
    code, beam_out, _ = run_cli(beam, stdin, monkeypatch, capsys)
    assert code == 0 and len(beam_out.splitlines()) == 2
    sample = ["chat", str(qa_run_dir), "--sample", "--temperature", "1.5", "--top-p", "0.9",
              "--seed", "7", "--max-length", "8"]
    outputs = [run_cli(sample, stdin * 5, monkeypatch, capsys)[1] for _ in range(2)]
    assert outputs[0] == outputs[1]
    assert len(outputs[0].splitlines()) == 10


def test_translate_keeps_input_order(
    qa_run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = ["what is your name ?", "hi", "", "where do you live today my friend ?",
             "tell me a joke", "good morning", "unknownword"]
    code, out, err = run_cli(
        ["translate", str(qa_run_dir), "--batch-size", "2", "--beam", "2", "--max-length", "10"],
        "\n".join(lines) + "\n", monkeypatch, capsys,
    )
    assert code == 0
    model, text, _ = load_model(qa_run_dir, device="cpu")
    options = SearchOptions(method="beam", beam_size=2, max_length=10)
    alone = [decode_texts(model, text, [line], options)[0] for line in lines]
    assert out.splitlines() == alone
    assert "sent" in err  # the progress bar went to stderr
    assert out.splitlines()[2] == ""


def test_evaluate_command_reports_and_plots_attention(
    qa_data_dir: Path, qa_run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    png = tmp_path / "attention.png"
    code, out, _ = run_cli(
        ["evaluate", str(qa_run_dir), "--data", str(qa_data_dir), "--split", "valid", "--beam", "2",
         "--attention-plot", str(png), "--input", "how are you today ?"], "", monkeypatch, capsys,
    )
    assert code == 0
    assert "BLEU" in out and "chrF" in out and "perplexity" in out
    assert "distinct-1" in out and "mean answer length" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_finds_the_data_the_run_was_trained_on(
    qa_data_dir: Path, qa_run_dir: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert read_run_info(RunDirectory(qa_run_dir)).data_dir == str(qa_data_dir.resolve())
    code, out, _ = run_cli(["evaluate", str(qa_run_dir), "--limit", "2"], "", monkeypatch, capsys)
    assert code == 0
    assert "test:" in out and "BLEU" in out


def test_evaluate_without_recorded_data_says_what_is_missing(
    qa_run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    copy = tmp_path / "run"
    shutil.copytree(qa_run_dir, copy)
    (copy / "run.json").unlink()
    code, _, err = run_cli(["evaluate", str(copy)], "", monkeypatch, capsys)
    assert code == 2
    assert "--data" in err


@pytest.mark.parametrize("option", [["--temperature", "0"], ["--top-p", "1.5"],
                                    ["--max-length", "0"], ["--temperature", "inf"],
                                    ["--top-p", "nan"], ["--seed", "-1"],
                                    ["--max-input-length", "0"], ["--top-k", "-3"],
                                    ["--repetition-penalty", "0.5"], ["--no-repeat-ngram", "-2"]])
def test_chat_rejects_bad_search_options_before_starting(
    qa_run_dir: Path, option: list[str], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run_cli(["chat", str(qa_run_dir), "--sample", *option], "hi\n", monkeypatch,
                             capsys)
    assert code == 2 and out == ""
    assert f"argument {option[0]}: must be" in err and repr(option[1]) in err


def test_repetition_options_reach_the_search(
    qa_run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = ["what is your name ?", "hi", "tell me a joke"]
    model, text, _ = load_model(qa_run_dir, device="cpu")
    for flags, options in (
        ([], SearchOptions()),  # the defaults: no 3-gram twice, penalty 1.5
        (["--no-repeat-ngram", "1", "--repetition-penalty", "1.5"],
         SearchOptions(no_repeat_ngram=1, repetition_penalty=1.5)),
        (["--no-repeat-ngram", "0", "--repetition-penalty", "1"],
         SearchOptions(no_repeat_ngram=0, repetition_penalty=1.0)),
    ):
        code, out, _ = run_cli(["translate", str(qa_run_dir), "--max-length", "12", *flags],
                               "\n".join(lines) + "\n", monkeypatch, capsys)
        expected = decode_texts(model, text, lines, SearchOptions(
            max_length=12, no_repeat_ngram=options.no_repeat_ngram,
            repetition_penalty=options.repetition_penalty))
        assert code == 0 and out.splitlines() == expected
        if options.no_repeat_ngram == 1:  # no word twice in an answer
            assert all(len(set(text.encode(a))) == len(text.encode(a)) for a in expected)
    assert SearchOptions().no_repeat_ngram == 3


def test_decoding_in_bf16_casts_the_model_and_says_so(
    qa_run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = ["what is your name ?", "hi", "good morning"]
    code, out, err = run_cli(["translate", str(qa_run_dir), "--precision", "bf16",
                              "--no-progress"], "\n".join(lines) + "\n", monkeypatch, capsys)
    assert code == 0, err
    assert "precision: bf16" in err
    model, text, _ = load_model(qa_run_dir, device="cpu")
    model.to(torch.bfloat16)
    assert out.splitlines() == decode_texts(model, text, lines, SearchOptions())


def test_fp16_on_a_cpu_is_a_one_line_error(
    qa_run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(["chat", str(qa_run_dir), "--precision", "fp16", "--device", "cpu"],
                           "hi\n", monkeypatch, capsys)
    assert_one_line_error(code, err, "chat", "fp16 needs a CUDA GPU")
    assert "gradient scaler" not in err  # decoding has none: that was training's reason
    code, _, err = run_cli(["translate", str(qa_run_dir), "--precision", "fp16"], "hi\n",
                           monkeypatch, capsys)
    assert_one_line_error(code, err, "translate", "fp16 needs a CUDA GPU", "no fast fp16")
    code, _, err = run_cli(["translate", str(qa_run_dir), "--precision", "half"], "hi\n",
                           monkeypatch, capsys)
    assert code == 2 and "invalid choice: 'half'" in err and "'auto', 'fp32', 'bf16', 'fp16'" in err


def test_two_chats_at_once_both_keep_their_history(tmp_path) -> None:
    """The chat that ended last used to rewrite the history file without the other's lines."""
    readline = pytest.importorskip("readline")
    from padless.commands.chat import load_history, save_history

    history = tmp_path / ".padless_history"
    history.write_text("old line\n")
    readline.clear_history()
    try:
        loaded = load_history(readline, history)  # this chat starts
        with history.open("a") as f:  # another chat, started at the same time, ends first
            f.write("the other chat's line\n")
        readline.add_history("this chat's line")
        save_history(readline, history, loaded)
    finally:
        readline.clear_history()
    lines = history.read_text().splitlines()
    assert [line for line in lines if not line.startswith("_HiStOrY")] == [
        "old line", "the other chat's line", "this chat's line"]


@pytest.mark.parametrize("option", [["--temperature", "1e-45"], ["--top-p", "1e-300"]])
def test_sampling_at_the_smallest_values_is_greedy_not_a_traceback(qa_run_dir, option,
                                                                  monkeypatch, capsys) -> None:
    lines = "how are you ?\nhello there\n"  # chat's scripted mode: one answer per line
    code, sampled, err = run_cli(["chat", str(qa_run_dir), "--sample", "--seed", "2",
                                  *option], lines, monkeypatch, capsys)
    assert code == 0, err
    code, greedy, err = run_cli(["chat", str(qa_run_dir)], lines, monkeypatch, capsys)
    assert code == 0 and sampled == greedy


@pytest.mark.parametrize("search", [[], ["--beam", "3"]])
def test_an_answer_is_the_same_at_any_batch_size(qa_run_dir: Path, search: list[str],
                                                 monkeypatch, capsys) -> None:
    """On a CPU where bf16 would pay at few rows and not at many (faked), the precision used
    to follow --batch-size and change the answers; it is chosen once per model and device."""
    monkeypatch.setattr(precision_module, "bf16_speedup",
                        lambda workload: 2.0 if workload.rows < 32 else 0.9)
    monkeypatch.setattr(precision_module, "_SMALL", 0)  # measure even this tiny model
    lines = [f"{q} {a}" for q in QUESTIONS for a in ANSWERS][:70]
    seen = {}
    for batch in ("1", "7", "64"):
        code, out, err = run_cli(["translate", str(qa_run_dir), "--batch-size", batch,
                                  "--max-length", "12", *search], "\n".join(lines) + "\n",
                                 monkeypatch, capsys)
        assert code == 0
        seen[batch] = (out, next(line for line in err.splitlines() if "precision:" in line))
    assert seen["1"] == seen["7"] == seen["64"]
    assert "fp32" in seen["1"][1]


@pytest.mark.parametrize("search", [[], ["--beam", "3"]])
def test_an_int8_answer_is_the_same_at_any_batch_size(qa_run_dir: Path, search: list[str],
                                                      every_layer_int8, monkeypatch,
                                                      capsys) -> None:
    """Dynamic quantization scaled the activations over the whole batch: 54 of 585 lines
    differed between --batch-size 1 and 64. They are scaled per row now."""
    lines = [f"{q} {a}" for q in QUESTIONS for a in ANSWERS][:70]
    seen = {}
    for batch in ("1", "7", "64"):
        code, out, err = run_cli(["translate", str(qa_run_dir), "--quantize", "int8",
                                  "--batch-size", batch, "--max-length", "12",
                                  "--n-best", "1", *search], "\n".join(lines) + "\n",
                                 monkeypatch, capsys)
        assert code == 0, err
        seen[batch] = out  # the answer and its score, to 6 decimals
    assert seen["1"] == seen["7"] == seen["64"]
    assert len(seen["1"].splitlines()) == 70


def test_translate_n_best_writes_the_documented_tsv(qa_run_dir: Path, monkeypatch,
                                                    capsys) -> None:
    lines = ["what is your name ?", "", "hi"]
    code, out, _ = run_cli(["translate", str(qa_run_dir), "--beam", "3", "--n-best", "3",
                            "--max-length", "8"], "\n".join(lines) + "\n", monkeypatch, capsys)
    assert code == 0
    rows = [line.split("\t") for line in out.splitlines()]
    model, text, _ = load_model(qa_run_dir, device="cpu")
    options = SearchOptions("beam", beam_size=3, n_best=3, max_length=8)
    expected = [(str(number), str(rank), f"{hyp.score:.6f}", f"{hyp.log_prob:.6f}", answer)
                for number, nbest in enumerate(decode_lines(model, text, lines, options), 1)
                for rank, (answer, hyp) in enumerate(nbest, 1)]
    assert [tuple(row) for row in rows] == expected
    assert [row[0] for row in rows].count("1") == 3 and [row[0] for row in rows].count("2") == 1
    scores = [float(row[2]) for row in rows if row[0] == "1"]
    assert scores == sorted(scores, reverse=True)
    for extra, words in ((["--n-best", "3"], "need beam search with at least 3 beams"),
                         (["--beam", "2", "--n-best", "3"], "at most beam_size (2)")):
        code, _, err = run_cli(["translate", str(qa_run_dir), *extra], "hi\n", monkeypatch,
                               capsys)
        assert_one_line_error(code, err, "translate", words)


def test_translate_answers_start_with_their_prefix(qa_run_dir: Path, tmp_path: Path,
                                                  monkeypatch, capsys) -> None:
    lines = ["what is your name ?", "hi", "how are you ?"]
    prefixes = tmp_path / "prefixes.txt"
    prefixes.write_text("my name\n\nfine thanks\n", encoding="utf-8")
    for search in ([], ["--beam", "3"]):
        code, out, err = run_cli(["translate", str(qa_run_dir), "--prefix-file", str(prefixes),
                                  "--max-length", "8", *search], "\n".join(lines) + "\n",
                                 monkeypatch, capsys)
        assert code == 0, err
        answers = out.splitlines()
        assert answers[0].startswith("my name") and answers[2].startswith("fine thanks")
    bad = {"my name is my name is my name\n\n\n": "prefix 1: the prefix is 8 tokens, "
                                                         "more than the answer's --max-length "
                                                         "of 6",
           "zyxxy\n\n\n": "prefix 1: the prefix holds a word outside the model's vocabulary "
                          "('zyxxy')",
           "one\ntwo\n": "2 prefixes for 3 inputs"}
    for content, words in bad.items():
        prefixes.write_text(content, encoding="utf-8")
        code, out, err = run_cli(["translate", str(qa_run_dir), "--prefix-file", str(prefixes),
                                  "--max-length", "6"], "\n".join(lines) + "\n", monkeypatch,
                                 capsys)
        assert_one_line_error(code, err, "translate", words)
        assert out == ""


def test_chat_at_a_terminal_shows_the_answer_as_it_comes(qa_run_dir: Path) -> None:
    import io

    from padless.commands.chat import converse
    from padless.decoding.batched import reply

    model, text, _ = load_model(qa_run_dir, device="cpu")
    options = SearchOptions(max_length=10)
    seen: list[str] = []
    answer = reply(model, text, "what is your name ?", options, on_text=seen.append)
    assert answer.text == reply(model, text, "what is your name ?", options).text
    assert len(seen) >= 2 and all(b.startswith(a) for a, b in zip(seen, seen[1:],
                                                                   strict=False))
    assert answer.text.startswith(seen[-1])
    out = io.StringIO()
    converse(model, text, iter(["what is your name ?", "quit"]), options, out=out)
    assert out.getvalue() == answer.text + "\n"
