"""A run directory's layout, what it owns, and who may write it: :class:`RunDirectory`.

::

    RUN_DIR/
      run.json          padless's mark on the directory, the data it trained on, the precision
      config.yaml       the resolved config, a copy for reading (the checkpoints hold it)
      latest.pt         the newest training state, to resume from
      best.pt           the state of the lowest validation loss
      averaged.pt       what ``padless average`` wrote (weights only)
      checkpoints/      kept.json and step-NNNNNNNN.pt: train.keep_best / keep_last
      text/             the TextProcessor (vocab.json, text.json, sentencepiece.model, or
                        pretrained/: an imported model's tokenizer)
      log.csv loss.png tb/   the log, its plot, TensorBoard events
      .lock             held by the one ``padless train`` writing here

A directory is padless's own when ``run.json`` says so (or, for a run written before that
mark existed, when its ``latest.pt`` is a padless checkpoint). Training refuses any other
directory that is not empty, so a user's files are never overwritten; cleaning up after a
killed run deletes only the temporaries of the files above, never another file that looks
like one; ``padless average`` never writes over a file the run owns (but ``averaged.pt``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from padless.data.pretrained_tokenizer import PRETRAINED_DIR
from padless.runtime.errors import UserError
from padless.runtime.files import remove_temporaries
from padless.runtime.lock import exclusive_lock

__all__ = ["CHECKPOINT_NAMES", "KEPT_DIR", "RunDirectory"]

# What `--checkpoint` chooses, RUN_DIR/NAME.pt: the best validation loss, the newest state,
# the average written by `padless average`. Commands take their choices from here.
CHECKPOINT_NAMES = ("best", "latest", "averaged")
KEPT_DIR = "checkpoints"
TEXT_DIR = "text"
# the files a run writes, by folder (regular expressions of their names): its own files
_OWNED = {
    "": r"(?:best|latest|averaged)\.pt|config\.yaml|log\.csv|loss\.png|run\.json|\.lock",
    TEXT_DIR: r"vocab\.json|text\.json|sentencepiece\.model",
    KEPT_DIR: r"kept\.json|step-\d{8}\.pt",
}
_OWNED_DIRS = (TEXT_DIR, KEPT_DIR, "tb")


class RunDirectory:
    """The files of one run, by name; nothing is read or written until a method says so."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDirectory({str(self.path)!r})"

    def checkpoint(self, which: str) -> Path:
        """``RUN_DIR/WHICH.pt`` for ``which`` in :data:`CHECKPOINT_NAMES`."""
        if which not in CHECKPOINT_NAMES:
            raise UserError(f"checkpoint: which must be one of {', '.join(CHECKPOINT_NAMES)}, "
                            f"got {which!r}")
        return self.path / f"{which}.pt"

    @property
    def latest(self) -> Path:
        return self.checkpoint("latest")

    @property
    def best(self) -> Path:
        return self.checkpoint("best")

    @property
    def info_file(self) -> Path:
        return self.path / "run.json"

    @property
    def config_file(self) -> Path:
        return self.path / "config.yaml"

    @property
    def log_file(self) -> Path:
        return self.path / "log.csv"

    @property
    def plot_file(self) -> Path:
        return self.path / "loss.png"

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / "tb"

    @property
    def text_dir(self) -> Path:
        return self.path / TEXT_DIR

    @property
    def kept_dir(self) -> Path:
        return self.path / KEPT_DIR

    @property
    def kept_index(self) -> Path:
        return self.kept_dir / "kept.json"

    def kept_file(self, step: int) -> Path:
        """The weights kept from the validation at ``step``."""
        return self.kept_dir / f"step-{step:08d}.pt"

    # -- what the run owns ---------------------------------------------------------------

    def owns(self, path: str | os.PathLike) -> bool:
        """Whether ``path`` is (or would be) one of the files the run writes."""
        path = Path(os.path.abspath(path))
        try:
            parts = path.relative_to(Path(os.path.abspath(self.path))).parts
        except ValueError:
            return False
        if len(parts) == 1:
            return bool(re.fullmatch(_OWNED[""], parts[0])) or parts[0] in _OWNED_DIRS
        folder = parts[0]
        if folder == TEXT_DIR and parts[1] == PRETRAINED_DIR:  # a pretrained model's tokenizer
            return True
        return folder == "tb" or (len(parts) == 2 and folder in _OWNED
                                  and bool(re.fullmatch(_OWNED[folder], parts[1])))

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold ``RUN_DIR/.lock``: one ``padless train`` at a time (the directory is created
        if missing, and removed again if nothing was written in it).

        Raises:
            UserError: if another process holds it (the message names its pid), or the path
                is a file.
        """
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"{self.path}: is a file, not a directory; choose another --out")
        created = not self.path.exists()
        try:
            with exclusive_lock(self.path / ".lock", f"run directory {self.path}",
                                "padless train"):
                yield
        finally:
            if created:  # a run that failed before writing anything leaves no empty folder
                with suppress(OSError):  # (rmdir removes only an empty one)
                    self.path.rmdir()

    def remove_temporaries(self) -> list[str]:
        """Delete the temporaries that killed writes of the run's own files left behind
        (a ``kill -9`` during a checkpoint write leaves a full-size ``.latest.pt.*.tmp``);
        returns their names. Only under :meth:`lock`, in a directory that is padless's own."""
        return [name for folder, names in _OWNED.items()
                for name in remove_temporaries(self.path / folder, names)]
