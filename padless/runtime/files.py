"""Files written atomically: a reader sees the old file or the new one, never half of one.

Every file the application writes (prepared datasets, vocabularies, checkpoints, run files)
goes through :func:`atomic_write`: the bytes go to a temporary sibling, are fsynced, and the
temporary file is renamed over the target (``os.replace`` is atomic within one file system),
then the directory is fsynced so the rename itself survives a crash.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_write", "write_bytes_atomic", "write_json_atomic", "write_text_atomic"]

TMP_SUFFIX = ".tmp"  # temporary files are named ".NAME.<random>.tmp" beside their target


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some file systems do not open directories; the rename still happened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Create or replace ``path`` with what ``write(binary_file)`` writes, atomically.

    If ``write`` raises (or the process is interrupted), the target is untouched and the
    temporary file is removed.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """``path`` holds exactly ``data`` afterwards (see :func:`atomic_write`)."""
    atomic_write(path, lambda f: f.write(data))


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """``path`` holds ``text`` in UTF-8 afterwards, newlines as given (see :func:`atomic_write`)."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: object) -> None:
    """``obj`` as sorted, indented JSON: the same object always gives the same bytes."""
    write_text_atomic(path, json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
