"""``padless.cli.main``, the boundary where a command runs: expected failures become one line
on stderr and an exit code; a bug keeps its traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import types

import pytest

from padless import cli
from padless.data.readers import CorpusError
from padless.runtime.errors import UserError
from padless.runtime.options import ConfigError


def run_failing(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> int:
    """``padless demo`` whose work raises ``error``."""
    def run(args) -> int:
        raise error

    command = types.SimpleNamespace(add_arguments=lambda parser: None, run=run)
    monkeypatch.setattr(cli, "_command", lambda name: command)
    return cli.main(["demo"])


@pytest.mark.parametrize("error", [
    UserError("runs/x is in use by another padless train (pid 12); wait for it"),
    ConfigError("train.lr: expected a finite number, got inf"),
    CorpusError("data.tsv:3: expected 'source<TAB>target', found no TAB"),
])
def test_a_user_error_is_one_line_and_exit_2(monkeypatch, capsys, error) -> None:
    assert run_failing(monkeypatch, error) == 2
    captured = capsys.readouterr()
    assert captured.err == f"padless demo: error: {error}\n" and captured.out == ""


@pytest.mark.parametrize(("error", "line"), [
    (PermissionError(13, "Permission denied", "ro/.data.lock"), "ro/.data.lock: Permission denied"),
    (OSError(28, "No space left on device"), "No space left on device"),
    (FileNotFoundError(2, "No such file or directory", "a", None, "b"), "a -> b: No such file"),
])
def test_an_os_error_names_the_file_and_exits_2(monkeypatch, capsys, error, line) -> None:
    assert run_failing(monkeypatch, error) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"padless demo: error: {line}") and err.count("\n") == 1


@pytest.mark.parametrize("error", [ValueError("Invalid weight_decay value: nan"),
                                   RuntimeError("a bug"), KeyError("x")])
def test_anything_else_is_a_bug_and_keeps_its_traceback(monkeypatch, error) -> None:
    """A ValueError padless did not raise on purpose (this one is torch's) is not a message
    for the user: it propagates, so the console script prints the traceback (exit 1)."""
    with pytest.raises(type(error)):
        run_failing(monkeypatch, error)


def test_interrupts_and_closed_pipes_have_their_exit_codes(monkeypatch, capsys) -> None:
    assert run_failing(monkeypatch, KeyboardInterrupt()) == 130
    assert run_failing(monkeypatch, BrokenPipeError(32, "Broken pipe")) == 141
    assert "Traceback" not in capsys.readouterr().err


def test_usage_errors_return_2_and_help_returns_0(capsys) -> None:
    assert cli.main(["train", "--max-steps", "0", "--data", "d", "--out", "o"]) == 2
    assert "argument --max-steps: must be an integer >= 1, got '0'" in capsys.readouterr().err
    assert cli.main(["nosuchcommand"]) == 2
    assert cli.main(["prepare", "--help"]) == 0


@pytest.mark.parametrize(("argv", "words"), [
    (["train", "--data", "d", "--out", "r", "--max-steps", "0"],
     "padless train: error: argument --max-steps: must be an integer >= 1, got '0'"),
    (["translate"], "padless translate: error: the following arguments are required: RUN_DIR"),
    (["trian"], "padless: error: argument COMMAND: invalid choice: 'trian'"),
    (["prepare", "x", "--out", "d", "--colour"], "padless prepare: error: unrecognized "
                                                 "arguments: --colour"),
])
def test_a_bad_option_is_one_line_that_points_to_help(capsys, argv, words) -> None:
    """Not argparse's dozen lines of usage before the error."""
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(words) and err.count("\n") == 1, err
    assert err.rstrip().endswith(f"(see {words.split(':')[0]} --help)")


def test_sigterm_unwinds_the_command_with_one_line(monkeypatch, capsys) -> None:
    """SIGTERM used to kill a command where it stood (prepare's workers then printed an
    EOFError traceback each); it unwinds as Ctrl-C does, and exits 143."""
    def terminated(args) -> int:
        os.kill(os.getpid(), signal.SIGTERM)  # handled in this (the main) thread, at once
        raise AssertionError("the signal did not stop the command")

    before = signal.getsignal(signal.SIGTERM)
    command = types.SimpleNamespace(add_arguments=lambda parser: None, run=terminated)
    monkeypatch.setattr(cli, "_command", lambda name: command)
    assert cli.main(["demo"]) == 143
    assert capsys.readouterr().err == "terminated\n"
    assert signal.getsignal(signal.SIGTERM) is before  # the caller's handler is back


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_stdout_is_one_line_naming_it() -> None:
    """``padless chat RUN > /dev/full`` said "No space left on device" and no file."""
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "padless", "demo"], stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr == "padless demo: error: stdout: No space left on device\n"
