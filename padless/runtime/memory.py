"""Whether a model fits the machine, asked before its tensors are allocated:
:func:`check_training_fits`.

An allocation that cannot succeed (``model.hidden_size=1000000``: 22 GB) otherwise fails deep
in PyTorch's allocator with a traceback, or on Linux's overcommit takes the machine into
swap first. The check counts the parameters without allocating them
(:func:`padless.models.parameter_count`) and compares what training needs for them with the
device's free memory.
"""

from __future__ import annotations

import os

import torch

from padless.runtime.errors import UserError

__all__ = ["TRAINING_BYTES_PER_PARAMETER", "available_memory", "check_training_fits"]

# float32 weights, their gradients and Adam's two moments; activations come on top
TRAINING_BYTES_PER_PARAMETER = 16


def available_memory(device: torch.device) -> int | None:
    """Bytes free for new tensors on ``device``; None where it cannot be told."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def check_training_fits(parameters: int, device: torch.device, extra_copies: int = 0) -> None:
    """Refuse a model whose training state alone would not fit in ``device``'s free memory.

    Args:
        parameters: the model's parameter count.
        extra_copies: further float32 copies of the weights kept (a moving average: 1).

    Raises:
        UserError: naming the parameter count, the memory it needs and the memory free.
    """
    free = available_memory(device)
    needed = parameters * (TRAINING_BYTES_PER_PARAMETER + 4 * extra_copies)
    if free is not None and needed > free:
        raise UserError(
            f"the model has {parameters:,} parameters: training needs {_gib(needed)} for its "
            f"weights, gradients and optimiser state alone, and {device.type} has "
            f"{_gib(free)} free; choose a smaller model (model.hidden_size, num_layers, "
            "embedding_size) or a larger device"
        )


def _gib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB"
