"""Bad input to ``chat``, ``translate`` and ``evaluate``: one line and exit 2, before any
work where it can be, never a traceback; caps on what one input may cost."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from padless.cli import main
from padless.data.text import TextProcessor, train_sentencepiece
from padless.data.vocabulary import Vocabulary
from tests.helpers import assert_one_line_error, run_cli


@pytest.mark.parametrize("command", ["chat", "translate"])
def test_input_that_is_not_utf8_names_its_line(qa_run_dir, command, monkeypatch, capsys) -> None:
    code, out, err = run_cli([command, str(qa_run_dir)],
                             b"hello there\nbad \xff byte\nhow are you ?\n", monkeypatch, capsys)
    assert_one_line_error(code, err, command, "stdin:2: not valid UTF-8 (byte 5")
    # chat answered the line before; translate reads everything first and writes nothing
    assert len(out.splitlines()) == (1 if command == "chat" else 0)


@pytest.mark.parametrize("command", ["chat", "translate"])
def test_a_closed_stdin_is_one_line(qa_run_dir, command, monkeypatch, capsys) -> None:
    monkeypatch.setattr("sys.stdin", None)  # what Python sets for `padless chat RUN <&-`
    code = main([command, str(qa_run_dir)])
    assert_one_line_error(code, capsys.readouterr().err, command, "stdin is closed")


def test_undecodable_bytes_never_reach_the_tokenizer(qa_run_dir, tmp_path, monkeypatch,
                                                     capsys) -> None:
    """Lone surrogates (bytes Python could not decode, e.g. from argv) become unknown words."""
    code, out, err = run_cli(["evaluate", str(qa_run_dir), "--attention-plot",
                              str(tmp_path / "x.png"), "--input", "bad \udcff byte", "--data",
                              "/nonexistent"], "", monkeypatch, capsys)
    assert_one_line_error(code, err, "evaluate", "/nonexistent: no such directory")
    tokenizer = train_sentencepiece(["hello world"] * 20 + ["bad byte"], vocab_size=20)
    text = TextProcessor(Vocabulary(tokenizer.pieces()), normalize="none", tokenizer=tokenizer)
    assert text.encode("bad \udcff byte") == text.encode("bad \ufffd byte")


@pytest.mark.parametrize(("argv", "words"), [
    (["chat", "--device", "gpu"], ["unknown device 'gpu'"]),
    (["chat", "--device", "meta"], ["device 'meta' is not supported by padless"]),
    (["chat", "--device", "mps"], ["device 'mps' is not supported by padless"]),
    (["evaluate", "--device", "xpu"], ["device 'xpu' is not supported by padless"]),
    (["translate", "--quantize", "int4"], ["--quantize", "'int4'"]),
    (["chat", "--beam", "3", "--length-penalty", "nan"], ["--length-penalty", "'nan'"]),
    (["chat", "--sample", "--temperature", "inf"], ["--temperature", "'inf'"]),
    (["translate", "--batch-size", "0"], ["--batch-size", "'0'"]),
    (["translate", "--max-input-length", "-1"], ["--max-input-length"]),
    (["evaluate", "--limit", "0"], ["--limit", "'0'"]),
    (["evaluate", "--limit", "-5"], ["--limit", "'-5'"]),
    (["evaluate", "--samples", "-2"], ["--samples", "'-2'"]),
    (["evaluate", "--batch-size", "0"], ["--batch-size", "'0'"]),
    (["evaluate", "--attention-plot", "no/such/dir/a.png"], ["no/such/dir does not exist"]),
    (["evaluate", "--attention-plot", "attention.txt"], ["not an image file name", ".png"]),
    # read-only even for root: checked before the evaluation, not after it
    (["evaluate", "--attention-plot", "/proc/attention.png"], ["cannot write in /proc"]),
    (["evaluate", "--attention-plot", "a.png", "--input", "#%&"], ["no token to attend to"]),
    (["evaluate", "--attention-plot", "plots/dir.png"], ["plots/dir.png: is a directory"]),
    # caps: a typo's huge number is an error, not a buffer sized by it
    (["translate", "--batch-size", "99999999999"], ["--batch-size", "<= 65536"]),
    (["evaluate", "--batch-size", "99999999999"], ["--batch-size", "<= 65536"]),
    (["chat", "--beam", "99999999"], ["--beam", "<= 1024"]),
    (["translate", "--n-best", "5000"], ["--n-best", "<= 1024"]),
    (["translate", "--max-length", "99999999"], ["--max-length", "<= 4096"]),
    (["chat", "--min-length", "99999999"], ["--min-length", "<= 4096"]),
])
def test_bad_options_stop_before_any_work(qa_run_dir, argv, words, tmp_path, monkeypatch,
                                          capsys) -> None:
    monkeypatch.chdir(tmp_path)  # a plot that should not happen would land here
    (tmp_path / "plots" / "dir.png").mkdir(parents=True)
    command, *options = argv
    code, out, err = run_cli([command, str(qa_run_dir), *options], "hi\n", monkeypatch, capsys)
    assert_one_line_error(code, err, command, *words)
    assert out == ""  # no report, no answer: the check came first


def test_a_run_json_whose_data_dir_is_no_string_is_one_line(qa_run_dir, tmp_path, monkeypatch,
                                                    capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(qa_run_dir, run)
    (run / "run.json").write_text(json.dumps({"data_dir": 5}))
    code, _, err = run_cli(["evaluate", str(run)], "", monkeypatch, capsys)
    assert_one_line_error(code, err, "evaluate",
                          "run.json: expected a JSON object with a data_dir string")


def test_translate_caps_long_inputs_with_a_notice(qa_run_dir, monkeypatch, capsys) -> None:
    lines = ["hello there", "how are you ? " * 100, "", "good morning"]
    code, out, err = run_cli(["translate", str(qa_run_dir), "--no-progress",
                              "--max-input-length", "8"], "\n".join(lines) + "\n",
                             monkeypatch, capsys)
    assert code == 0
    assert len(out.splitlines()) == 4
    assert "notice: 1 of 4 inputs were longer than 8 tokens and were cut" in err
    code, short, _ = run_cli(["translate", str(qa_run_dir), "--no-progress"],
                             "how are you ? how are you ?\n", monkeypatch, capsys)
    assert short.splitlines()[0] == out.splitlines()[1]  # the answer to its first 8 tokens


def test_a_batch_size_far_above_the_input_costs_only_the_input(qa_run_dir, monkeypatch,
                                                               capsys) -> None:
    """The buffers are sized by the rows decoded, not by the flag: 65,536 on 3 lines."""
    lines = "hello there\nhow are you ?\ngood morning\n"
    code, big, _ = run_cli(["translate", str(qa_run_dir), "--no-progress", "--batch-size",
                            "65536"], lines, monkeypatch, capsys)
    assert code == 0
    code, one, _ = run_cli(["translate", str(qa_run_dir), "--no-progress", "--batch-size",
                            "1"], lines, monkeypatch, capsys)
    assert code == 0 and big == one and len(big.splitlines()) == 3


def test_evaluate_counts_the_sources_it_cut(qa_run_dir, monkeypatch, capsys) -> None:
    code, out, _ = run_cli(["evaluate", str(qa_run_dir), "--max-input-length", "2"], "",
                           monkeypatch, capsys)
    assert code == 0
    assert "sources longer than the input cap were cut" in out


@pytest.mark.slow
@pytest.mark.parametrize("command", ["chat", "translate"])
def test_a_reader_that_goes_away_ends_the_command_quietly(qa_run_dir, command) -> None:
    """``padless chat RUN | head -1``: exit 141 like any program killed by SIGPIPE, no
    traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "padless", command, str(qa_run_dir),
                             "--max-length", "30", "--min-length", "30"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        proc.stdin.write(b"hello there\n" * 1000)  # >100 kB of answers: more than a pipe holds
        proc.stdin.close()
        assert proc.stdout.readline()
        proc.stdout.close()
        err = proc.stderr.read().decode()
        proc.wait(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err
