"""Which device to run on, chosen at run time: CUDA when present, never assumed."""

from __future__ import annotations

import torch

from padless.runtime.errors import UserError

__all__ = ["check_device_name", "resolve_device"]

DEVICES = "auto, cpu, cuda or cuda:N"


def check_device_name(name: str) -> torch.device | None:
    """The device ``name`` names (None for ``auto``), not yet checked against the machine.

    Raises:
        UserError: on a name torch does not know, or a device type other than CPU and CUDA
            (``meta``, ``mps``, ``xpu``...: padless's kernels, precision rule and memory
            checks know only these two).
    """
    if name == "auto":
        return None
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise UserError(f"unknown device {name!r}; expected {DEVICES}") from None
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"device {name!r} is not supported by padless; use {DEVICES}")
    return device


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """The ``torch.device`` that ``name`` asks for.

    Args:
        name: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        local_rank: with a bare ``"cuda"``, the process's GPU is ``local_rank % device_count``
            (one GPU per process under ``torchrun``).

    Raises:
        UserError: as :func:`check_device_name`, or CUDA asked for where there is none.
    """
    device = check_device_name(name)
    if device is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {name!r} asked for, but CUDA is not available here; use "
                            "cpu or auto")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
    return device
