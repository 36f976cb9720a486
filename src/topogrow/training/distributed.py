"""Training over several processes with ``torch.distributed``: joining the process group that
``torchrun`` describes, this process's shard of the data, sums and means over the processes, a
broadcast and a barrier. Each helper is an identity (or does nothing) without a process group, so
the same code runs in one process.

Launch one process per device with ``torchrun``::

    OMP_NUM_THREADS=1 python -m torch.distributed.run --standalone --nproc_per_node=2 examples/ddp_grow.py

and, in the script, :func:`init_process_group`, give each process its part with :func:`shard`,
and train as usual. :class:`~topogrow.growth.Grower` runs its growth loop over the processes
with these helpers (:mod:`topogrow.growth.distributed_run`).
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "all_reduce_sum",
    "barrier",
    "broadcast",
    "init_process_group",
    "is_distributed",
    "is_main_process",
    "rank",
    "reduce_mean",
    "shard",
    "world_size",
]


def is_distributed() -> bool:
    """Whether a process group with more than one process is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """The number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """Whether this is process 0 (the one that writes), or there is no process group."""
    return rank() == 0


def init_process_group(backend: str | None = None, **kwargs: Any) -> bool:
    """Join the process group that ``torchrun`` describes in the environment.

    Does nothing (returns ``False``) when not launched by ``torchrun`` (no
    ``WORLD_SIZE``) or when a group is already initialised (returns ``True``).
    ``backend`` defaults to ``"nccl"`` when CUDA is available, else ``"gloo"``; with
    NCCL, the process's CUDA device is set from ``LOCAL_RANK``.
    """
    if not dist.is_available():
        return False
    if dist.is_initialized():
        return True
    if "WORLD_SIZE" not in os.environ:
        return False
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend=backend, **kwargs)
    return True


def _via_cpu(tensor: torch.Tensor) -> bool:
    """Gloo reduces CPU tensors; a CUDA tensor makes a round trip."""
    return tensor.device.type != "cpu" and dist.get_backend() == "gloo"


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of ``tensor`` over all processes, in float64 (a new tensor on the same device).

    Without a process group it is ``tensor`` in float64. Every process must call it
    with a tensor of the same shape, in the same order.
    """
    total = tensor.detach().to(torch.float64).clone()
    if not (dist.is_available() and dist.is_initialized()):
        return total
    if _via_cpu(total):
        summed = total.cpu()
        dist.all_reduce(summed, op=dist.ReduceOp.SUM)
        return summed.to(tensor.device)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def reduce_mean(total: float, count: float) -> float:
    """``sum(total) / sum(count)`` over the processes: a sample-weighted mean."""
    sums = all_reduce_sum(torch.tensor([float(total), float(count)], dtype=torch.float64))
    if sums[1] == 0:
        raise ValueError("cannot average a loss over empty data (no process has samples)")
    return float(sums[0] / sums[1])


def broadcast(tensor: torch.Tensor, source: int = 0) -> torch.Tensor:
    """Process ``source``'s ``tensor`` (same shape and dtype on every process), in place."""
    if not (dist.is_available() and dist.is_initialized()):
        return tensor
    if _via_cpu(tensor):
        copy = tensor.cpu()
        dist.broadcast(copy, src=source)
        tensor.copy_(copy)
    else:
        dist.broadcast(tensor, src=source)
    return tensor


def barrier() -> None:
    """Wait for every process (nothing without a process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shard(
    x: torch.Tensor, y: torch.Tensor, rank_: int | None = None, world: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """This process's contiguous part of ``(X, y)``: ``torch.tensor_split`` into ``world``
    parts (sizes differ by at most one), part ``rank_``.

    Concatenating the parts in rank order gives ``(X, y)`` back.
    """
    rank_ = rank() if rank_ is None else rank_
    world = world_size() if world is None else world
    if not 0 <= rank_ < world:
        raise ValueError(f"rank must be in 0..{world - 1}, got {rank_}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"X has {x.shape[0]} samples but y has {y.shape[0]}")
    if x.shape[0] < world:
        raise ValueError(f"cannot split {x.shape[0]} samples over {world} processes: each needs at least one")
    return torch.tensor_split(x, world)[rank_], torch.tensor_split(y, world)[rank_]
