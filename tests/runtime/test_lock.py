"""The directory lock: a second holder is refused with the first one's pid; a killed holder's
lock does not block; the lock file goes when released."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import padless.runtime.lock as lock_module
from padless.runtime.errors import UserError
from padless.runtime.lock import exclusive_lock

HOLD = ("import sys, time\nfrom padless.runtime.lock import exclusive_lock\n"
        "with exclusive_lock(sys.argv[1], 'x', 'y'):\n"
        "    print('locked', flush=True)\n    time.sleep(120)\n")


def test_a_second_holder_is_refused_with_the_first_ones_pid(tmp_path: Path) -> None:
    lock = tmp_path / "run" / ".lock"
    with exclusive_lock(lock, "run directory run", "padless train"):
        assert lock.read_text() == f"{os.getpid()}\n"
        with pytest.raises(UserError, match=rf"run directory run is in use by another padless "
                                            rf"train \(pid {os.getpid()}\)"):
            with exclusive_lock(lock, "run directory run", "padless train"):
                pass
        assert lock.exists()  # the refused one did not delete the holder's file
    assert not lock.exists()
    with exclusive_lock(lock, "run directory run", "padless train"):  # free again
        pass


def test_a_lock_under_a_file_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UserError, match="afile: is a file, not a directory"):
        with exclusive_lock(tmp_path / "afile" / ".lock", "x", "y"):
            pass


def test_a_killed_holder_does_not_block(tmp_path: Path) -> None:
    lock = tmp_path / ".lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match=f"pid {holder.pid}"):
            with exclusive_lock(lock, "x", "y"):
                pass
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        holder.kill()
        holder.stdout.close()
    assert lock.read_text().strip() == str(holder.pid)  # left behind, with a dead pid
    with exclusive_lock(lock, "x", "y"):  # the kernel released the dead process' lock
        assert lock.read_text() == f"{os.getpid()}\n"


def test_a_file_system_without_locks_goes_on_unlocked(tmp_path: Path, monkeypatch) -> None:
    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(lock_module.fcntl, "flock", no_locks)
    with exclusive_lock(tmp_path / ".lock", "x", "y"):
        assert (tmp_path / ".lock").exists()
    assert not (tmp_path / ".lock").exists()
