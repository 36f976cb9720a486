"""Plain training and evaluation over mini-batches: one epoch of training (clipping, accumulation,
mixed precision), the mean loss and the metrics over batches, and the device they run on."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

from topogrow.core.batches import check_pair
from topogrow.core.losses import Loss

__all__ = [
    "AUTOCAST_DTYPES",
    "Metric",
    "Reduce",
    "TrainingOptions",
    "autocast_context",
    "evaluate",
    "evaluate_loss",
    "is_stateful_metric",
    "resolve_device",
    "train_epoch",
]


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
"""Sums a float64 tensor over processes (:func:`topogrow.training.distributed.all_reduce_sum`)."""


def _mean(total: float, count: int, reduce: Reduce | None) -> tuple[float, float]:
    """``(total, count)``, summed over the processes by ``reduce`` if given."""
    if reduce is None:
        return total, count
    sums = reduce(torch.tensor([total, float(count)], dtype=torch.float64))
    return float(sums[0]), float(sums[1])


@dataclass(frozen=True)
class TrainingOptions:
    """How each optimiser step is taken: ``grad_clip`` (the largest gradient norm, ``None``: no
    clipping), ``accumulate`` (batches whose gradients add up before one step), ``autocast`` (the
    mixed-precision dtype, ``None``: none) and the float16 gradient ``scaler``."""

    grad_clip: float | None = None
    accumulate: int = 1
    autocast: torch.dtype | None = None
    scaler: Any = None

    @classmethod
    def from_config(cls, config, device: torch.device) -> TrainingOptions:
        """The options ``config`` asks for, on ``device`` (float16 gets a gradient scaler)."""
        dtype = AUTOCAST_DTYPES[config.autocast] if config.autocast is not None else None
        if dtype == torch.float16 and device.type != "cuda":
            raise ValueError("autocast='float16' needs CUDA (a gradient scaler); on CPU use autocast='bfloat16'")
        scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
        return cls(config.grad_clip, config.accumulate_batches, dtype, scaler)


#: The mixed-precision dtypes by name (``GrowthConfig.autocast``, ``TrainingOptions.from_config``).
AUTOCAST_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def autocast_context(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` on ``device`` with ``dtype``, or no autocast for ``None``."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


BatchEnd = Callable[[int, float], None]
"""Called after each training batch with its index in the epoch and its loss."""


def train_epoch(
    model: torch.nn.Module,
    batches: Iterable,
    loss: Loss,
    optimizer: torch.optim.Optimizer,
    reduce: Reduce | None = None,
    options: TrainingOptions | None = None,
    on_batch_end: BatchEnd | None = None,
) -> float:
    """One pass of mini-batch training; returns the sample-weighted mean training loss.

    ``model`` may be a ``DistributedDataParallel`` wrapper; with ``reduce`` the mean is
    over the samples of every process. ``options`` clip, accumulate and autocast
    (:class:`TrainingOptions`); ``on_batch_end(index, loss)`` follows every batch.
    """
    options = options or TrainingOptions()
    parameter = next(model.parameters())
    model.train()
    total, count = 0.0, 0
    accumulate, scaler = options.accumulate, options.scaler
    optimizer.zero_grad(set_to_none=True)
    index = -1
    for index, (x, y) in enumerate(batches):
        x, y = _to(x, y, parameter.device, parameter.dtype)
        with autocast_context(parameter.device, options.autocast):
            value = loss(model(x), y)
        if not torch.isfinite(value):
            check_pair(x, y, "training batch")  # NaN in the data gets named as such
            raise FloatingPointError(f"the training loss became {value.item()}: lower the learning rate")
        scaled = value / accumulate if accumulate > 1 else value
        (scaler.scale(scaled) if scaler is not None else scaled).backward()
        if (index + 1) % accumulate == 0:
            _step(optimizer, options)
        total += value.item() * x.shape[0]
        count += x.shape[0]
        if on_batch_end is not None:
            on_batch_end(index, value.item())
    if (index + 1) % accumulate != 0:  # the last, shorter accumulation
        _step(optimizer, options)
    total, count = _mean(total, count, reduce)
    return total / max(count, 1)


def _step(optimizer: torch.optim.Optimizer, options: TrainingOptions) -> None:
    """Clip (after unscaling), step and zero the gradients."""
    scaler = options.scaler
    if options.grad_clip is not None:
        if scaler is not None:
            scaler.unscale_(optimizer)
        parameters = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(parameters, options.grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


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


Metric = Any
"""A metric: a callable ``(prediction, target) -> float`` (the batch mean), or an object with
``reset()``, ``update(prediction, target)`` and ``compute()`` (a ``torchmetrics.Metric``)."""


def is_stateful_metric(metric: Metric) -> bool:
    """Whether ``metric`` accumulates (``reset``/``update``/``compute``, as torchmetrics' do)."""
    return all(callable(getattr(metric, name, None)) for name in ("reset", "update", "compute"))


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    batches: Iterable,
    loss: Loss,
    metrics: dict[str, Metric],
    reduce: Reduce | None = None,
) -> tuple[float, dict[str, float]]:
    """The sample-weighted mean loss over ``batches`` and each metric's value, in eval mode, in one
    pass (with ``reduce``, callables' means are over every process; torchmetrics sync themselves)."""
    parameter = next(model.parameters())
    was_training = model.training
    model.eval()
    for metric in metrics.values():
        if is_stateful_metric(metric):
            metric.reset()
    names = [name for name, metric in metrics.items() if not is_stateful_metric(metric)]
    sums = torch.zeros(len(names) + 2, dtype=torch.float64)
    for x, y in batches:
        x, y = _to(x, y, parameter.device, parameter.dtype)
        prediction = model(x)
        sums[0] += loss(prediction, y).item() * x.shape[0]
        sums[1] += x.shape[0]
        for index, name in enumerate(names):
            sums[index + 2] += float(metrics[name](prediction, y)) * x.shape[0]
        for metric in metrics.values():
            if is_stateful_metric(metric):
                metric.update(prediction, y)
    model.train(was_training)
    if reduce is not None:
        sums = reduce(sums)
    if sums[1] == 0:
        raise ValueError("cannot evaluate a loss on empty data")
    values = {name: float(sums[index + 2] / sums[1]) for index, name in enumerate(names)}
    for name, metric in metrics.items():
        if is_stateful_metric(metric):
            values[name] = float(metric.compute())
    return float(sums[0] / sums[1]), {name: values[name] for name in metrics}
