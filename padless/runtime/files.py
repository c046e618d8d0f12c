"""Files written atomically: a reader sees the old file or the new one, never half of one.

Every file the application writes (prepared datasets, vocabularies, checkpoints, run files)
goes through :func:`atomic_write`: the bytes go to a temporary sibling, are fsynced, and the
temporary file is renamed over the target (``os.replace`` is atomic within one file system),
then the directory is fsynced so the rename itself survives a crash. A whole directory (a
prepared dataset) is built in a temporary sibling and swapped in by
:func:`atomic_directory`.

A killed process leaves its temporary files behind (nothing can remove them); the command
that writes a directory removes them at its next start with :func:`remove_temporaries`,
under the directory's lock (:mod:`padless.runtime.lock`), so no live write is touched.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from padless.runtime.errors import UserError

__all__ = [
    "atomic_directory",
    "atomic_write",
    "check_writable",
    "read_utf8",
    "remove_temporaries",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_text_atomic",
]

# Temporaries are named ".NAME.<8 random characters>.tmp" beside their target NAME (a
# directory being replaced waits as ".NAME.<random>.old.tmp" until it is deleted).
TMP_SUFFIX = ".tmp"
_OLD_SUFFIX = ".old" + TMP_SUFFIX


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


def _umask() -> int:
    """The process' umask (reading it means setting it: put it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Create or replace ``path`` with what ``write(binary_file)`` writes, atomically.

    The file gets the permissions of the file it replaces, or those a plain ``open`` would
    give a new one (``mkstemp``'s own are owner-only). If ``write`` raises (or the process
    is interrupted), the target is untouched and the temporary file is removed.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            recorded = _WriteErrors(f)
            try:
                write(recorded)  # type: ignore[arg-type]  # a file in all that writers use
                f.flush()
                os.fsync(f.fileno())
            except Exception as e:
                error = recorded.error or e
                if isinstance(error, OSError):
                    raise _named(error, path) from None
                raise
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


class _WriteErrors:
    """A binary file that keeps the first ``OSError`` its writes raise.

    ``torch.save`` turns a failed write (``ENOSPC``: the disk is full) into a ``RuntimeError``
    ("unexpected pos") that has lost the reason; :func:`atomic_write` raises the kept error.
    """

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self._file.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def __getattr__(self, name: str) -> object:
        return getattr(self._file, name)


def _named(error: OSError, path: Path) -> OSError:
    """``error``, naming ``path`` if it names no file (a failed write does not)."""
    if error.filename is None:
        return OSError(error.errno, error.strerror or str(error), str(path))
    return error


def check_writable(path: str | os.PathLike) -> None:
    """Check, before any long work, that a file can be created beside ``path`` (a file that
    work will write there at its end).

    Raises:
        UserError: naming the directory and the reason (read-only, not permitted, missing).
    """
    path = Path(path)
    try:
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as e:
        raise UserError(f"{path}: cannot write in {path.parent} ({e.strerror or e})") from None


def read_utf8(path: str | os.PathLike) -> str:
    """The text of a file the application wrote (UTF-8).

    Raises:
        UserError: naming the file and the byte, if it is not UTF-8 (damaged, or another
            kind of file). ``OSError`` (a missing file, say) passes through.
    """
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte {e.start + 1}: {e.reason})") from None


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """``path`` holds exactly ``data`` afterwards (see :func:`atomic_write`)."""
    atomic_write(path, lambda f: f.write(data))


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """``path`` holds ``text`` in UTF-8 afterwards, newlines as given (see :func:`atomic_write`)."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: object) -> None:
    """``obj`` as sorted, indented JSON: the same object always gives the same bytes."""
    write_text_atomic(path, json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n")


@contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Build a directory elsewhere and put it at ``path`` as a whole, replacing any old one.

    Yields an empty temporary sibling ``.NAME.<random>.tmp`` to write into. When the block
    ends normally it takes the place of ``path``: the old directory (if any) is renamed
    aside, the new one renamed in, the old one deleted. A reader sees the old directory or
    the new one, never a mix; between the two renames (microseconds) it sees none. If the
    block raises (or is interrupted), ``path`` is untouched and the temporary is deleted.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    random_part = secrets.token_hex(4)
    tmp = path.parent / f".{path.name}.{random_part}{TMP_SUFFIX}"
    tmp.mkdir()  # plain mkdir: the umask's permissions, as the directory it replaces had
    try:
        yield tmp
        _fsync_directory(tmp)
        old = path.parent / f".{path.name}.{random_part}{_OLD_SUFFIX}"
        try:
            path.rename(old)
        except FileNotFoundError:
            old = None
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_directory(path.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def remove_temporaries(directory: str | os.PathLike, target: str) -> list[str]:
    """Delete the temporaries that killed writes left in ``directory``; returns their names.

    ``target``: a regular expression for the names of the files (or directories) whose
    temporaries to delete (``re.escape(name)`` for one); anything else that merely looks
    like a temporary is left alone, since it may be someone else's. Call it only while
    holding the lock of whatever writes there: it deletes a live writer's temporaries too.
    """
    directory = Path(directory)
    pattern = re.compile(rf"\.(?:{target})\.[a-z0-9_]{{8}}(\.old)?{re.escape(TMP_SUFFIX)}")
    removed = []
    try:
        entries = list(directory.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        if pattern.fullmatch(entry.name):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry.name)
    return sorted(removed)
