"""What DDP ranks must decide together: whether a step's loss is finite, and the result
of work done once on rank 0 (rung and final evaluation), handed to every rank.

With one process (or no process group) each helper is the plain single-rank answer, so
callers need no branches. Collectives run on the default process group (gloo on the CPU,
NCCL on CUDA: Ray Train and the tests set it up).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def distributed(world_size: int) -> bool:
    """True when this process is one of several ranks of an initialised process group."""
    return world_size > 1 and dist.is_available() and dist.is_initialized()


def all_finite(loss: torch.Tensor, world_size: int) -> bool:
    """True when `loss` is finite on every rank: one rank's NaN makes every rank skip the
    step, so none of them waits in a gradient all-reduce the others never enter."""
    finite = torch.isfinite(loss.detach()).to(torch.int32).reshape(1)
    if distributed(world_size):
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    return bool(finite.item())


def on_rank0(fn: Callable[[], T], rank: int, world_size: int, device: str | torch.device) -> T:
    """`fn()` run on rank 0 only, its (picklable) result broadcast to every rank. The
    other ranks wait in the broadcast; all ranks must call this at the same point."""
    if not distributed(world_size):
        return fn()
    box = [fn() if rank == 0 else None]
    dev = torch.device(device)
    dist.broadcast_object_list(box, src=0, device=dev if dev.type == "cuda" else None)
    return box[0]
