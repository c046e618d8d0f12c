"""Process-group set-up for ``torchrun``, and the few collectives the trainer needs.

One code path: a plain ``python``/``padless`` process is a world of size 1 (no process
group, every collective a no-op); under ``torchrun --nproc_per_node=N`` the environment
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) says who we are.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from padless.runtime.devices import resolve_device
from padless.runtime.errors import UserError

__all__ = ["World", "all_reduce", "in_process_group", "setup_world"]


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


@contextlib.contextmanager
def in_process_group(world: World, advice: str) -> Iterator[None]:
    """Run the body as a member of ``world``'s process group, then leave it: after a barrier
    when the body finished, at once when it failed (a barrier would wait for processes that
    may be gone). The loss of another process (its machine went down, it was killed) becomes
    one line ending in ``advice``, not a traceback or a hang.

    Raises:
        UserError: when another process of the group is gone.
    """
    finished = False
    try:
        yield
        finished = True
    except RuntimeError as e:
        if not (world.distributed and _peer_lost(e)):
            raise
        raise UserError(f"another training process stopped (its machine or process went "
                        f"away: {_describe(e)}); {advice}") from None
    finally:
        if world.distributed and dist.is_initialized():
            if finished:
                # Without the barrier a rank that finishes first can tear the group down
                # while another is still in its last collective: that rank aborts at exit.
                dist.barrier()
            with contextlib.suppress(RuntimeError):  # a broken group may refuse to go
                dist.destroy_process_group()


def _peer_lost(error: BaseException) -> bool:
    """Whether ``error``, raised in a collective, says another process of the group is gone:
    torch's distributed errors, and gloo's transport errors (plain ``RuntimeError``s:
    "Connection reset by peer")."""
    return isinstance(error, dist.DistError) or "gloo/transport" in str(error)


def _describe(error: BaseException) -> str:
    """What ``error`` says, without the source file and torch's advice ("Read error
    [127.0.0.1]:42706: Connection reset by peer")."""
    text = re.sub(r"^\[[^\]]*\.(cc|cpp|h|hpp):\d+\]\s*", "", str(error).splitlines()[0])
    return text.split(". This is typically")[0][:200]


def all_reduce(world: World, values: list[float], op: str = "sum") -> list[float]:
    """Sum (or max) a few numbers over all processes; float64, so token counts stay exact."""
    if not world.distributed:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=world.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return tensor.tolist()
