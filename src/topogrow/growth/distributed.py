"""Growth over several processes with ``torch.distributed`` (DistributedDataParallel).

Each process holds its own shard of the training (and validation) data. Under an
initialised process group with more than one process, :class:`~topogrow.growth.Grower`
then:

- trains through ``DistributedDataParallel`` (gradients averaged over the processes, so a
  step is that of one process with the union of the processes' batches), and wraps the
  model again after every insertion, since the parameter set changed;
- sums the topological derivative's blocks, sample counts and loss over the processes
  (:func:`all_reduce_sum`, passed to :func:`~topogrow.core.topological_derivative` as
  ``reduce``), so every process sees the blocks of all the data, and takes the proposed
  layer from process 0, so every process inserts the same layer at the same place;
- averages the line-search, training and validation losses over all samples, so every
  process picks the same epsilon and the stop rules agree;
- writes checkpoints from process 0 only, the others waiting at a barrier.

Launch one process per device with ``torchrun``::

    OMP_NUM_THREADS=1 python -m torch.distributed.run --standalone --nproc_per_node=2 examples/ddp_grow.py

and, in the script, :func:`init_process_group`, give each process its part with
:func:`shard`, and call ``Grower.fit`` as usual. The closed-form layers only: growth by a
block (``config.block``, the matrix-free derivative) is single-process.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "DistributedRun",
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


class DistributedRun:
    """How the growth loop runs over processes (a no-op collaborator in a single process).

    It checks that a distributed run can go ahead, wraps the model in
    DistributedDataParallel for training (again after every insertion, since the parameter
    set changed), gives :attr:`reduce` (sums over processes) to the losses and the
    topological derivative, and makes every process insert process 0's proposal.
    """

    def __init__(self) -> None:
        self.active = is_distributed()
        self.reduce = all_reduce_sum if self.active else None
        self.wrapper: torch.nn.parallel.DistributedDataParallel | None = None

    def check(self, block: str | None, loader: Any) -> None:
        """Closed-form layers only, and the same number of training batches on every process."""
        if not self.active:
            return
        if block is not None:
            raise NotImplementedError(
                f"growth by a block (block={block!r}, the matrix-free topological derivative) is "
                "single-process; use block=None (the closed-form layer) under torch.distributed"
            )
        try:
            batches = len(loader)
        except TypeError:
            raise ValueError(
                "train: under torch.distributed every process needs the same number of batches per epoch; "
                "give a sized DataLoader or an (X, y) pair"
            ) from None
        counts = all_reduce_sum(torch.tensor([batches, -batches], dtype=torch.float64))
        world = world_size()
        if counts[0] != world * batches or -counts[1] != world * batches:  # differ somewhere
            raise ValueError(
                f"train: every process needs the same number of batches per epoch (DistributedDataParallel "
                f"steps together); this one (rank {rank()}) has {batches}. Give each process an "
                "equal shard (topogrow.growth.distributed.shard, or DistributedSampler)"
            )

    def module(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """The model to train: itself, or its DistributedDataParallel wrapper (building it
        broadcasts process 0's parameters)."""
        if not self.active:
            return model
        if self.wrapper is None:
            device_ids = None
            if device.type == "cuda":
                device_ids = [device.index if device.index is not None else torch.cuda.current_device()]
            self.wrapper = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
        return self.wrapper

    def parameters_changed(self) -> None:
        """After an insertion: wrap again before training."""
        self.wrapper = None

    def agree(self, proposal: Any) -> Any:
        """Process 0's proposal on every process (they agree unless a solver is not deterministic)."""
        if not self.active:
            return proposal
        head = torch.tensor([float(proposal.location), float(proposal.curvature or 0.0)], dtype=torch.float64)
        head0 = broadcast(head.clone())
        disagree = all_reduce_sum(torch.tensor(float(head0[0] != head[0])))
        if disagree > 0:
            raise RuntimeError(
                f"the processes proposed different locations (process 0: {int(head0[0])}, this one: "
                f"{proposal.location}); their models or data differ in shape"
            )
        direction = broadcast(proposal.direction.detach().clone().contiguous())
        curvature = None if proposal.curvature is None else float(head0[1])
        return dataclasses.replace(proposal, direction=direction, curvature=curvature)
