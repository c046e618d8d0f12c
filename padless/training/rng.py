"""Every random stream a training process draws from, as plain data for its checkpoint.

torch's CPU generator drives dropout and the teacher-forcing coins on CPU, CUDA's generators
dropout on the GPU, and Python's ``random`` whatever else may draw from it; a resumed run
restores all of them, so it goes on exactly as an uninterrupted one.
"""

from __future__ import annotations

import random
from typing import Any

import torch
import torch.distributed as dist

from padless.training.distributed import World

__all__ = ["gather_rng_states", "get_rng_state", "set_rng_state"]


def get_rng_state() -> dict[str, Any]:
    """This process's random states as tensors and plain types."""
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [version, list(internal), gauss_next],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    torch.set_rng_state(state["torch"].cpu())
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def gather_rng_states(world: World) -> list[dict[str, Any]]:
    """Every process's random states, in rank order (a collective: all ranks call it)."""
    if not world.distributed:
        return [get_rng_state()]
    states: list[Any] = [None] * world.world_size
    dist.all_gather_object(states, get_rng_state())
    return states
