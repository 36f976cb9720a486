"""Plain training and evaluation over mini-batches, and the optimisers (one registry)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from topogrow.core.batches import check_pair
from topogrow.core.losses import Loss
from topogrow.growth.registries import OPTIMIZERS, register_optimizer

OptimizerFactory = Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` means CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"unknown device {device!r}: {error}") from None


def _to(x: torch.Tensor, y: torch.Tensor, device: torch.device, dtype: torch.dtype):
    x = x.to(device=device, dtype=dtype)
    y = y.to(device=device, dtype=dtype) if y.is_floating_point() else y.to(device)
    return x, y


Reduce = Callable[[torch.Tensor], torch.Tensor]
"""Sums a float64 tensor over processes (:func:`topogrow.growth.distributed.all_reduce_sum`)."""


def _mean(total: float, count: int, reduce: Reduce | None) -> tuple[float, float]:
    """``(total, count)``, summed over the processes by ``reduce`` if given."""
    if reduce is None:
        return total, count
    sums = reduce(torch.tensor([total, float(count)], dtype=torch.float64))
    return float(sums[0]), float(sums[1])


def train_epoch(
    model: torch.nn.Module,
    batches: Iterable,
    loss: Loss,
    optimizer: torch.optim.Optimizer,
    reduce: Reduce | None = None,
) -> float:
    """One pass of mini-batch training; returns the sample-weighted mean training loss.

    ``model`` may be a ``DistributedDataParallel`` wrapper; with ``reduce`` the mean is
    over the samples of every process.
    """
    parameter = next(model.parameters())
    model.train()
    total, count = 0.0, 0
    for x, y in batches:
        x, y = _to(x, y, parameter.device, parameter.dtype)
        optimizer.zero_grad(set_to_none=True)
        value = loss(model(x), y)
        if not torch.isfinite(value):
            check_pair(x, y, "training batch")  # NaN in the data gets named as such
            raise FloatingPointError(f"the training loss became {value.item()}: lower the learning rate")
        value.backward()
        optimizer.step()
        total += value.item() * x.shape[0]
        count += x.shape[0]
    total, count = _mean(total, count, reduce)
    return total / max(count, 1)


@torch.no_grad()
def evaluate_loss(model: torch.nn.Module, batches: Iterable, loss: Loss, reduce: Reduce | None = None) -> float:
    """Sample-weighted mean of a batch-mean loss over ``batches``, in eval mode (with
    ``reduce``, over the batches of every process)."""
    parameter = next(model.parameters())
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for x, y in batches:
        x, y = _to(x, y, parameter.device, parameter.dtype)
        total += loss(model(x), y).item() * x.shape[0]
        count += x.shape[0]
    model.train(was_training)
    total, count = _mean(total, count, reduce)
    if count == 0:
        raise ValueError("cannot evaluate a loss on empty data")
    return total / count


register_optimizer("adam", torch.optim.Adam, help="Adam (torch.optim.Adam)")
register_optimizer("adamw", torch.optim.AdamW, help="Adam with decoupled weight decay (torch.optim.AdamW)")
register_optimizer("sgd", torch.optim.SGD, help="stochastic gradient descent (torch.optim.SGD)")


def optimizer_factory(
    optimizer: str | OptimizerFactory, lr: float = 1e-3, weight_decay: float = 0.0
) -> OptimizerFactory:
    """``params -> Optimizer``: the registered optimiser ``optimizer`` with ``lr`` and
    ``weight_decay``, or ``optimizer`` itself when it is a callable."""
    if callable(optimizer):
        return optimizer
    build = OPTIMIZERS[optimizer]
    return lambda parameters: build(parameters, lr=lr, weight_decay=weight_decay)


def rebuild_optimizer(
    old: torch.optim.Optimizer | None, parameters: Iterable[torch.nn.Parameter], factory: OptimizerFactory
) -> torch.optim.Optimizer:
    """A new optimiser over ``parameters`` (from ``factory``) that keeps the state (e.g. Adam's
    moments and step) of the parameters the old one already had; new parameters start fresh.
    Needed after every insertion, since the parameter set changed."""
    optimizer = factory(list(parameters))
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"the optimizer factory must return a torch.optim.Optimizer, got {type(optimizer).__name__}")
    if old is not None:
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p in old.state:
                    optimizer.state[p] = old.state[p]
    return optimizer
