"""A run directory is padless's own: training refuses a user's folder, cleans up only the
temporaries of its own files, and knows which files it owns."""

from __future__ import annotations

from pathlib import Path

import pytest

from padless.cli import main
from padless.runs.directory import RunDirectory
from tests.helpers import TINY_RUN, assert_one_line_error

SET = [f"--set={kv}" for kv in TINY_RUN]


def train(data: Path, out: Path, *extra: str) -> int:
    return main(["train", "--data", str(data), "--out", str(out), "--max-steps", "1", *SET,
                 *extra])


USER_FILES = ["config.yaml", "log.csv", "best.pt", "run.json", "loss.png", "text/vocab.json",
              ".x.abcdefgh.tmp", "sub/.config.yaml.abcdefgh.tmp", ".config.yaml.abcdefgh.tmp"]


@pytest.mark.parametrize("command", ["train", "quickstart"])
def test_a_folder_of_the_user_s_files_is_refused_and_left_as_it_was(
    command: str, qa_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "mine"
    for name in USER_FILES:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(f"the user's {name}")
    if command == "train":
        code = train(qa_data_dir, folder)
    else:
        code = main(["quickstart", "--out", str(folder), "--data-dir", str(qa_data_dir),
                     "--minutes", "0.1", *SET])
    assert_one_line_error(code, capsys.readouterr().err, command,
                          "not empty and not a padless run directory", "choose another --out")
    for name in USER_FILES:
        assert (folder / name).read_text() == f"the user's {name}", name
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file()) == sorted(USER_FILES)


def test_an_empty_folder_or_a_marked_one_without_a_checkpoint_trains(
    qa_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert train(qa_data_dir, empty) == 0
    (empty / "latest.pt").unlink()  # a marked run that lost its checkpoint starts again
    (empty / "notes.txt").write_text("mine, in my run")
    assert train(qa_data_dir, empty) == 0
    assert (empty / "notes.txt").read_text() == "mine, in my run"
    assert train(qa_data_dir, empty) == 2
    assert "already holds a run: add --resume" in capsys.readouterr().err


def test_only_the_temporaries_of_the_run_s_own_files_are_removed(
    qa_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert train(qa_data_dir, run) == 0
    ours = [".latest.pt.a1b2c3d4.tmp", "text/.vocab.json.zz9_x8y7.tmp",
            "checkpoints/.step-00000001.pt.q1w2e3r4.tmp", ".run.json.abcd1234.tmp"]
    theirs = [".x.abcdefgh.tmp", "text/.notes.md.abcdefgh.tmp", "sub/.latest.pt.abcdefgh.tmp",
              "checkpoints/.step-1-backup.pt.abcdefgh.tmp"]
    for name in ours + theirs:
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_bytes(b"\0" * 100)
    capsys.readouterr()
    assert train(qa_data_dir, run, "--resume", "--max-steps", "2") == 0
    assert "removed 4 temporary file(s)" in capsys.readouterr().out
    assert not any((run / name).exists() for name in ours)
    assert all((run / name).exists() for name in theirs)


def test_which_files_the_run_owns(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path / "run")
    owned = ["latest.pt", "best.pt", "averaged.pt", "config.yaml", "log.csv", "loss.png",
             "run.json", "text", "text/vocab.json", "checkpoints/kept.json",
             "checkpoints/step-00000012.pt", "tb/events.out"]
    not_owned = ["notes.txt", "text/notes.txt", "checkpoints/step-00000012-backup.pt",
                 "checkpoints/step-12.pt", "a/latest.pt", "../latest.pt", "other.pt"]
    assert all(run.owns(run.path / name) for name in owned)
    assert not any(run.owns(run.path / name) for name in not_owned)
