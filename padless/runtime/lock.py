"""One writer per directory: :func:`exclusive_lock`, an ``flock`` on a lock file.

``padless train`` holds ``RUN_DIR/.lock`` for the whole run and ``padless prepare`` holds
``.DATA_DIR.lock`` beside the dataset it replaces, so a second process writing the same
directory is refused with the first one's pid instead of mixing its files with them.

The kernel releases an ``flock`` when its process dies, however it dies (``kill -9``
included), so a lock is never stale: the file stays behind with the dead process's pid,
and the next process simply takes the lock again. Where ``fcntl`` does not exist (Windows),
or the file system cannot lock (some network and FUSE file systems), there is no locking.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from padless.runtime.errors import UserError

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows
    fcntl = None

__all__ = ["exclusive_lock"]

# flock's answers from a file system that has no locks: go on unlocked rather than not at all
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


@contextmanager
def exclusive_lock(lock_file: str | os.PathLike, guarded: str, user: str) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_file`` (created if needed) for the ``with`` block.

    The file holds the holder's pid and is deleted on release (a killed holder leaves it,
    harmlessly: the lock went with the process).

    Args:
        lock_file: the lock file; its directory is created if missing.
        guarded: what the lock protects, for the message (``"run directory runs/chat"``).
        user: who holds such locks, for the message (``"padless train"``).

    Raises:
        UserError: if another process holds the lock; the message names its pid.
    """
    lock_file = Path(lock_file)
    if lock_file.parent.exists() and not lock_file.parent.is_dir():
        raise UserError(f"{lock_file.parent}: is a file, not a directory; choose another path")
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(lock_file, guarded, user)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield
    finally:
        lock_file.unlink(missing_ok=True)  # while still locked: see _acquire
        os.close(fd)  # closing the last descriptor releases the flock


def _acquire(lock_file: Path, guarded: str, user: str) -> int:
    """A descriptor of ``lock_file``, locked. A holder deletes the file before unlocking,
    so a lock taken on a file that is no longer at ``lock_file`` is worthless: try again."""
    while True:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is None:
            return fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in _NO_LOCKS:
                return fd
            if not isinstance(e, BlockingIOError):
                os.close(fd)
                raise
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise UserError(
                f"{guarded} is in use by another {user} (pid {holder}); wait for it to "
                "finish or stop it, or choose another directory"
            ) from None
        try:
            if os.stat(lock_file).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)
