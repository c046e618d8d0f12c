"""Where a command may write what a user asked for (``average --out``, ``export --out``):
never into a run or a prepared dataset that is not the command's own, and never over a file
or folder that is not what the command itself wrote before.

``prepare``, ``train``, ``import`` and ``quickstart`` already refuse folders that hold what
is not theirs (:mod:`padless.runs.directory`, :func:`padless.data.prepare.prepare`); these
are the same promise for the commands that write one file or folder elsewhere.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from padless.data.dataset import FORMAT as DATASET_FORMAT
from padless.data.dataset import METADATA_FILE
from padless.runs.directory import RunDirectory
from padless.runs.info import RUN_FORMAT
from padless.runtime.errors import UserError

__all__ = ["check_export_directory", "check_weights_file", "holder"]

# what `padless export --format ctranslate2` writes: CTranslate2's files and the run's text
_EXPORT_FILES = {"model.bin", "config.json", "shared_vocabulary.json", "source_vocabulary.json",
                 "target_vocabulary.json", "vocabulary.json", "vocab.json", "text.json",
                 "sentencepiece.model", "pretrained"}


def _is_run(folder: Path) -> bool:
    info = folder / "run.json"
    try:
        marked = json.loads(info.read_text(encoding="utf-8")).get("format") == RUN_FORMAT
    except (OSError, ValueError, AttributeError):
        marked = False
    return marked or (folder / "latest.pt").is_file() or (folder / "best.pt").is_file()


def _is_dataset(folder: Path) -> bool:
    try:
        meta = json.loads((folder / METADATA_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("format") == DATASET_FORMAT


def _holder(path: str | os.PathLike) -> tuple[Path, str] | None:
    """The padless run or prepared dataset ``path`` is or is inside: (its folder, "the run"
    or "the prepared dataset"); None when it is neither."""
    path = Path(os.path.abspath(path))
    for folder in (path, *path.parents):
        if folder.is_dir() and _is_run(folder):
            return folder, "the run"
        if folder.is_dir() and _is_dataset(folder):
            return folder, "the prepared dataset"
    return None


def holder(path: str | os.PathLike) -> str | None:
    """The padless run or prepared dataset ``path`` is (or is inside), in words; None when
    it is neither."""
    found = _holder(path)
    return None if found is None else f"{found[1]} {found[0]}"


def check_weights_file(path: Path, own: RunDirectory) -> None:
    """Refuse ``path`` for ``average --out`` unless it is new, or a checkpoint (what an
    earlier average wrote there), outside any run and dataset but ``own`` (and there not one
    of the run's own files but ``averaged.pt``).

    Raises:
        UserError: naming the path and what it is.
    """
    if os.path.abspath(path) == os.path.abspath(own.checkpoint("averaged")):
        return
    if own.owns(path):
        raise UserError(f"--out {path}: a file of the run {own.path} (its checkpoints, log or "
                        f"settings); write the average to {own.checkpoint('averaged')} or "
                        "outside the run")
    found = _holder(path.parent)
    if found is not None and found[0] != Path(os.path.abspath(own.path)):
        raise UserError(f"--out {path}: inside {found[1]} {found[0]}, whose files no other "
                        "command writes; choose a file outside it")
    if not path.exists() and not path.is_symlink():
        return
    if path.is_dir():
        raise UserError(f"--out {path}: is a directory; give a file name such as "
                        f"{own.checkpoint('averaged')}")
    if not stat.S_ISREG(os.stat(path).st_mode) or path.is_symlink():
        raise UserError(f"--out {path}: not a regular file (a device, a link, a pipe); give "
                        "the name of a new file")
    with open(path, "rb") as f:
        is_zip = f.read(4) == b"PK\x03\x04"  # what torch.save writes
    if not is_zip:
        raise UserError(f"--out {path}: exists and is not a checkpoint; padless average "
                        "writes only a new file or one it wrote before: choose another --out")


def check_export_directory(out: Path, force: bool) -> None:
    """Refuse ``out`` for ``export --out`` unless it is new, or (with ``force``) a model an
    earlier export wrote, outside any run and dataset.

    Raises:
        UserError: naming the folder and what it holds.
    """
    where = holder(out)
    if where is not None:
        raise UserError(f"{out}: is or is inside {where}, which --force would damage; "
                        "choose another --out")
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory; choose another --out")
    if not force:
        raise UserError(f"{out}: already exists; pass --force to replace it")
    foreign = sorted(p.name for p in out.iterdir() if p.name not in _EXPORT_FILES)
    if foreign or not (out / "model.bin").is_file():
        what = f"holds {foreign[0]}" if foreign else "holds no model.bin"
        raise UserError(f"{out}: {what}: not a model padless export wrote, so --force does "
                        "not replace it; choose another --out")
