"""``RUN_DIR/run.json``: padless's mark on a run directory and the facts of a run that are not
its config: :class:`RunInfo`.

::

    {"format": "padless-run", "version": 1,
     "data_dir": "/abs/path/of/the/prepared/data",        # what padless evaluate scores on
     "precision": {"name": "bf16", "requested": "auto", "reason": "...", "hardware": "..."}}

A run written before the mark existed has a ``run.json`` with ``data_dir`` alone (or none); it
reads the same, and the next ``padless train --resume`` writes the mark.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from padless.runs.directory import RunDirectory
from padless.runtime.errors import UserError
from padless.runtime.files import read_utf8, write_json_atomic
from padless.runtime.precision import Precision

__all__ = ["RUN_FORMAT", "RunInfo", "check_for_training", "read_run_info", "write_run_info"]

RUN_FORMAT = "padless-run"
RUN_VERSION = 1


@dataclass(frozen=True)
class RunInfo:
    """What ``run.json`` records.

    Attributes:
        marked: the file carries padless's mark (False: a run of an older padless, or none).
        data_dir: the prepared dataset the run trained on (absolute), or None.
        precision: the precision the last training invocation chose, or None.
        imported_from: the Hugging Face model folder ``padless import`` read (absolute),
            or None for a run padless trained.
    """

    marked: bool = False
    data_dir: str | None = None
    precision: Precision | None = None
    imported_from: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"format": RUN_FORMAT, "version": RUN_VERSION}
        if self.data_dir is not None:
            data["data_dir"] = self.data_dir
        if self.imported_from is not None:
            data["imported_from"] = self.imported_from
        if self.precision is not None:
            data["precision"] = self.precision.to_dict()
        return data


def read_run_info(run: RunDirectory) -> RunInfo:
    """What ``run.json`` says; an empty :class:`RunInfo` for a run without one.

    Raises:
        UserError: naming the file, if it is not a JSON object or its ``data_dir`` is not a
            string.
    """
    path = run.info_file
    if not path.is_file():
        return RunInfo()
    fix = "fix or delete it (then give --data DATA_DIR)"
    try:
        data = json.loads(read_utf8(path))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg}); {fix}") from None
    except RecursionError:
        raise UserError(f"{path}: not valid run information; {fix}") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(key, ""), str)
                                             for key in ("data_dir", "imported_from")):
        raise UserError(f"{path}: expected a JSON object with a data_dir string; {fix}")
    return RunInfo(marked=data.get("format") == RUN_FORMAT, data_dir=data.get("data_dir"),
                   precision=Precision.from_dict(data.get("precision")),
                   imported_from=data.get("imported_from"))


def write_run_info(run: RunDirectory, info: RunInfo) -> None:
    """Write ``run.json`` (atomically), with padless's mark."""
    write_json_atomic(run.info_file, info.to_dict())


def check_for_training(run: RunDirectory, *, resume: bool) -> None:
    """Refuse to train in a directory that is not padless's own (see
    :mod:`padless.runs.directory`), or to start a run over one that holds a run.

    A new run needs a missing or empty directory, or one padless marked whose run never
    saved a checkpoint; a resumed one needs ``latest.pt``.

    Raises:
        UserError: naming the directory and what to do.
    """
    if resume:
        if not run.latest.is_file():
            raise UserError(f"{run.latest}: no checkpoint to resume; start the run without "
                            "--resume")
        return
    if run.latest.exists():
        raise UserError(f"{run.path} already holds a run: add --resume to continue it, or "
                        "choose another --out")
    entries = [p.name for p in run.path.iterdir()] if run.path.is_dir() else []
    entries = sorted(name for name in entries if name != ".lock")
    if entries and not _marked(run):
        raise UserError(f"{run.path}: not empty and not a padless run directory (it holds "
                        f"{', '.join(entries[:3])}{', ...' if len(entries) > 3 else ''}); "
                        "padless train writes only into a new or empty directory or its own "
                        "runs: choose another --out")


def _marked(run: RunDirectory) -> bool:
    try:
        return read_run_info(run).marked
    except UserError:  # a run.json that is not ours
        return False
