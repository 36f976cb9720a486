"""Growth over several processes with ``torch.distributed`` (DistributedDataParallel).

Each process holds its own shard of the training (and validation) data. Under an
initialised process group with more than one process, :class:`~topogrow.growth.Grower`
then:

- trains through ``DistributedDataParallel`` (gradients averaged over the processes, so a
  step is that of one process with the union of the processes' batches), and wraps the
  model again after every insertion, since the parameter set changed;
- sums the topological derivative's blocks, sample counts and loss over the processes
  (:func:`~topogrow.training.distributed.all_reduce_sum`, passed to
  :func:`~topogrow.core.topological_derivative` as ``reduce``), so every process sees the blocks
  of all the data, and takes the proposed layer from process 0, so every process inserts the same
  layer at the same place;
- averages the line-search, training and validation losses over all samples, so every
  process picks the same epsilon and the stop rules agree;
- writes checkpoints from process 0 only, the others waiting at a barrier.

How to launch it, and the helpers (process group, shards, sums): :mod:`topogrow.training.distributed`.
The closed-form layers only: growth by a block (``config.block``, the matrix-free derivative) is
single-process.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from topogrow.training.distributed import all_reduce_sum, broadcast, is_distributed, rank, world_size

__all__ = ["DistributedRun"]


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
                "equal shard (topogrow.training.distributed.shard, or DistributedSampler)"
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
