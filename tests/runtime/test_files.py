"""Atomic files and directories: a reader sees the old or the new, never half; leftovers go."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

from padless.runtime.errors import UserError
from padless.runtime.files import (
    atomic_directory,
    atomic_write,
    read_utf8,
    remove_temporaries,
    write_text_atomic,
)
from tests.helpers import full_disk


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "config.yaml"
    write_text_atomic(target, "old\n")

    def half_then_full_disk(f) -> None:
        f.write(b"new, but only ha")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        atomic_write(target, half_then_full_disk)
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


def test_a_full_disk_under_torch_save_is_reported_as_a_full_disk(tmp_path: Path,
                                                                 monkeypatch) -> None:
    """torch.save turns the failed write into "RuntimeError: ... unexpected pos"; the error
    that comes out names the disk being full, and the file."""
    target = tmp_path / "latest.pt"
    torch.save({"old": torch.zeros(3)}, target)
    before = target.read_bytes()
    with full_disk(monkeypatch, room=1000), pytest.raises(OSError) as raised:
        atomic_write(target, lambda f: torch.save({"new": torch.zeros(10_000)}, f))
    assert raised.value.errno == 28 and raised.value.filename == str(target)
    assert "No space left on device" in str(raised.value)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt"]


def test_a_directory_is_replaced_as_a_whole(tmp_path: Path) -> None:
    target = tmp_path / "data"
    with atomic_directory(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".data.")
        (tmp / "a.txt").write_text("first")
        (tmp / "b.txt").write_text("first")
        assert not target.exists()  # nothing shows before the block ends
    with atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("second")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]  # no b.txt of the old one
    assert (target / "a.txt").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # old and temporary gone


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_an_interrupted_directory_leaves_the_old_one_untouched(tmp_path: Path,
                                                               error: BaseException) -> None:
    target = tmp_path / "data"
    with atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("old")
    with pytest.raises(type(error)), atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("new")
        raise error
    assert (target / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_the_replaced_directory_gets_ordinary_permissions(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        with atomic_directory(tmp_path / "data"):
            pass
    finally:
        os.umask(umask)
    assert (tmp_path / "data").stat().st_mode & 0o777 == 0o755  # not mkdtemp's 0o700


def test_remove_temporaries_removes_only_what_killed_writes_of_its_targets_leave(
    tmp_path: Path
) -> None:
    leftovers = [".latest.pt.k2j4m9_x.tmp", ".data.0a1b2c3d.tmp", ".data.0a1b2c3d.old.tmp"]
    kept = ["latest.pt", "notes.tmp", ".hidden", ".x.tmp", ".data.short.tmp",
            ".notes.txt.abcdefgh.tmp"]  # a temporary-looking file of something else
    for name in leftovers[:1] + kept:
        (tmp_path / name).write_text("x")
    for name in leftovers[1:]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "train.tsv").write_text("a\tb\n")
    assert remove_temporaries(tmp_path, re.escape("latest.pt")) == [".latest.pt.k2j4m9_x.tmp"]
    assert remove_temporaries(tmp_path, "data|best\\.pt") == sorted(leftovers[1:])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)
    assert remove_temporaries(tmp_path / "missing", "data") == []


def test_read_utf8_names_the_file_and_byte(tmp_path: Path) -> None:
    path = tmp_path / "text.json"
    path.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(UserError, match=r"text\.json: not UTF-8 text \(byte 8"):
        read_utf8(path)
    with pytest.raises(FileNotFoundError):
        read_utf8(tmp_path / "missing.json")


def test_written_files_get_ordinary_permissions_or_keep_theirs(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "new.json", "{}")
        (tmp_path / "shared.json").write_text("{}")
        (tmp_path / "shared.json").chmod(0o664)
        write_text_atomic(tmp_path / "shared.json", "[]")
    finally:
        os.umask(umask)
    assert (tmp_path / "new.json").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0o600
    assert (tmp_path / "shared.json").stat().st_mode & 0o777 == 0o664
