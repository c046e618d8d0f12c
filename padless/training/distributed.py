"""Process-group set-up for ``torchrun``, and the few collectives the trainer needs.

One code path: a plain ``python``/``padless`` process is a world of size 1 (no process
group, every collective a no-op); under ``torchrun --nproc_per_node=N`` the environment
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) says who we are.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from padless.runtime.devices import resolve_device
from padless.runtime.errors import UserError

__all__ = ["World", "all_reduce", "setup_world", "teardown_world"]


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 writes files and draws the progress bar; the others only compute."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup_world(device: str = "auto") -> World:
    """Join the process group if ``torchrun`` started us (nccl on CUDA, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    try:
        chosen = resolve_device(device, local_rank)
    except UserError as e:
        raise UserError(f"train.device: {e}") from None
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    world = World(rank, world_size, local_rank, chosen)
    if world.distributed and not dist.is_initialized():
        backend = "nccl" if world.device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=rank, world_size=world_size)
    return world


def teardown_world(world: World) -> None:
    """Leave the process group once every rank is done with its collectives."""
    if world.distributed and dist.is_initialized():
        # Without the barrier a rank that finishes first can tear the group down while the
        # other is still in its last collective, and that rank aborts (SIGABRT) at exit.
        dist.barrier()
        dist.destroy_process_group()


def all_reduce(world: World, values: list[float], op: str = "sum") -> list[float]:
    """Sum (or max) a few numbers over all processes; float64, so token counts stay exact."""
    if not world.distributed:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=world.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return tensor.tolist()
