"""Training and validation data: mini-batches of an ``(X, y)`` pair or a DataLoader, and the
checks that the data fits the model and the loss (one line naming the data set when it does not)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader

from topogrow._validation import one_line
from topogrow.core.batches import check_pair

__all__ = [
    "DataSource",
    "TensorBatches",
    "TransformedBatches",
    "check_compatible",
    "check_data_kind",
    "count_samples",
    "first_samples",
    "regroup",
]


class TensorBatches:
    """Mini-batches of an in-memory ``(X, y)`` pair by slicing a (seeded) permutation.

    Same batches as ``DataLoader(TensorDataset(X, y), shuffle=...)`` would give in
    spirit, without per-sample indexing and collation.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool, seed: int) -> None:
        self.x, self.y, self.batch_size, self.shuffle = x, y, batch_size, shuffle
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return -(-self.x.shape[0] // self.batch_size)

    def __iter__(self):
        n = self.x.shape[0]
        order = torch.randperm(n, generator=self.generator) if self.shuffle else None
        for start in range(0, n, self.batch_size):
            if order is None:
                yield self.x[start : start + self.batch_size], self.y[start : start + self.batch_size]
            else:
                index = order[start : start + self.batch_size]
                yield self.x[index], self.y[index]


class TransformedBatches:
    """The batches of ``loader`` passed through ``transform`` (a batch -> ``(x, y)``), as re-iterable
    as the loader; its ``dataset``, ``sampler`` and ``generator`` are the loader's."""

    def __init__(self, loader: Iterable, transform) -> None:
        self.loader, self.transform = loader, transform
        for name in ("dataset", "sampler", "generator"):
            if hasattr(loader, name):
                setattr(self, name, getattr(loader, name))

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            pair = self.transform(batch)
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise TypeError(f"batch_transform must return a pair (x, y), got {type(pair).__name__}")
            yield tuple(pair)


@dataclass
class DataSource:
    """Training or validation data: batches for epochs and a fixed subset for evaluation."""

    loader: Iterable
    n_samples: int
    data: object = None  # the pair or loader as given (for the streaming TD pass)

    @classmethod
    def from_data(cls, data, name: str, batch_size: int, shuffle: bool, seed: int, transform=None) -> DataSource:
        """Batches of ``data`` (an ``(X, y)`` pair or a re-iterable loader, whose batches
        ``transform`` maps to ``(x, y)`` pairs when given)."""
        if transform is not None:
            if not callable(transform):
                raise TypeError(f"batch_transform must be callable, got {type(transform).__name__}")
            if isinstance(data, (tuple, list)):
                raise TypeError(f"{name}: batch_transform maps a DataLoader's batches; pass the DataLoader")
            source = cls.from_data(data, name, batch_size, shuffle, seed)
            batches = TransformedBatches(data, transform)
            return cls(batches, source.n_samples, batches)
        if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
            x, y = data
            check_pair(x, y, name)
            if x.shape[0] == 0:
                raise ValueError(f"{name}: no samples (X and y are empty)")
            loader = TensorBatches(x, y, batch_size, shuffle, seed)
            return cls(loader, int(x.shape[0]), data)
        if isinstance(data, DataLoader) or (hasattr(data, "__iter__") and not isinstance(data, (tuple, list))):
            if iter(data) is data:  # a generator or iterator: exhausted after one epoch
                raise TypeError(
                    f"{name}: got a one-shot {type(data).__name__} (an iterator), but training goes over the data "
                    "once per epoch; pass a DataLoader, an iterable that starts over at each iter(), or a pair (X, y)"
                )
            n = _dataset_size(data)
            if n == 0:
                raise ValueError(f"{name}: the DataLoader's dataset is empty")
            return cls(data, n, data)
        raise TypeError(f"{name}: expected a DataLoader or a pair of tensors (X, y), got {type(data).__name__}")

    def subset(self, n_samples: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The first batches holding at least ``n_samples`` samples (fixed once drawn)."""
        batches, count = [], 0
        for x, y in self.loader:
            batches.append((x, y))
            count += x.shape[0]
            if count >= n_samples:
                break
        return batches


def first_samples(batches: Iterable, n_samples: int) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], bool]:
    """The first ``n_samples`` samples of ``batches`` (``(x, y)`` pairs; the last batch cut), and
    whether that is all of them (the batches ran out first or ended there)."""
    taken, count = [], 0
    iterator = iter(batches)
    for x, y in iterator:
        if count + x.shape[0] >= n_samples:
            keep = n_samples - count
            taken.append((x[:keep], y[:keep]))
            return taken, keep == x.shape[0] and next(iterator, None) is None
        taken.append((x, y))
        count += x.shape[0]
    return taken, True


def regroup(batches: list[tuple[torch.Tensor, torch.Tensor]], size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The same samples in the same order, in batches of ``size`` (the last one smaller): fewer,
    larger forward passes for an evaluation that repeats on fixed batches."""
    if not batches:
        return batches
    xs, ys = torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])
    return [(xs[i : i + size], ys[i : i + size]) for i in range(0, xs.shape[0], size)]


def count_samples(batches: Iterable) -> int:
    """Samples in evaluation batches: a list of ``(x, y)`` pairs, :class:`TensorBatches` or a
    DataLoader over a sized dataset; -1 when unknown."""
    if isinstance(batches, (list, tuple)):
        return sum(int(x.shape[0]) for x, _ in batches)
    if isinstance(batches, TensorBatches):
        return int(batches.x.shape[0])
    return _dataset_size(batches)


def _dataset_size(data) -> int:
    """The number of samples of a DataLoader's dataset; -1 when unknown (an ``IterableDataset``
    or anything else without ``__len__``)."""
    dataset = getattr(data, "dataset", None)
    try:
        return len(dataset) if dataset is not None else -1
    except TypeError:
        return -1


def check_data_kind(data: Any, name: str) -> None:
    """A pair that is not two tensors (e.g. numpy arrays) gets a message saying what to do."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and not all(isinstance(d, torch.Tensor) for d in data):
        kinds = ", ".join(type(d).__name__ for d in data)
        raise TypeError(
            f"{name}: expected a pair of tensors (X, y), got ({kinds}); convert with torch.as_tensor, "
            "or pass a DataLoader"
        )


def check_compatible(model: torch.nn.Module, source: DataSource, name: str, loss: str | None) -> torch.Tensor:
    """Fail early, in one line naming the data set, if the data does not fit the model or loss.

    Checks the dtypes (floating inputs; floating targets for ``"mse"``; int64 class labels
    or floating class probabilities for ``"cross_entropy"``), that the model takes the
    inputs, the target shape and the label range. For an ``(X, y)`` pair every label is
    checked; for a DataLoader, the first batch. Returns two input samples (on the model's
    device and dtype) for further probes.
    """
    if isinstance(source.data, (tuple, list)):
        x, y = source.data
    else:
        batch = next(iter(source.loader), None)
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            kind = (
                f"{type(batch).__name__} of {len(batch)} items"
                if isinstance(batch, (tuple, list))
                else type(batch).__name__
            )
            raise TypeError(
                f"{name}: each batch of the DataLoader must be a pair (x, y), got a {kind}; pass "
                "batch_transform=... to fit (e.g. lambda batch: (batch['x'], batch['y']))"
            )
        x, y = batch
    if not x.is_floating_point():
        raise TypeError(f"{name}: X has dtype {x.dtype}; expected floating-point inputs (convert with X.float())")
    parameter = next(model.parameters())
    probe = x[:2].to(device=parameter.device, dtype=parameter.dtype)
    try:
        with torch.no_grad():
            prediction = model(probe)
    except (ValueError, RuntimeError, IndexError) as error:
        reason = re.sub(r", got \([\d, ]*\)$", "", one_line(error))  # the probe's shape, not X's
        raise ValueError(f"{name}: the model cannot take X of shape {tuple(x.shape)}: {reason}") from None
    if loss == "mse" and not y.is_floating_point():
        raise TypeError(
            f"{name}: y has dtype {y.dtype} but the 'mse' loss needs floating-point targets of shape "
            f"(N, {', '.join(map(str, prediction.shape[1:]))}) (convert with y.float())"
        )
    if loss == "cross_entropy":
        if y.is_floating_point():
            if tuple(y.shape[1:]) != tuple(prediction.shape[1:]):
                raise ValueError(
                    f"{name}: the 'cross_entropy' loss needs int64 class labels of shape (N,) or class "
                    f"probabilities of shape (N, {prediction.shape[1]}), got {y.dtype} of shape {tuple(y.shape)}"
                )
        elif y.dtype != torch.int64:
            raise TypeError(
                f"{name}: class labels have dtype {y.dtype}; the 'cross_entropy' loss needs int64 "
                "(convert with y.long())"
            )
        elif y.ndim != 1:
            raise ValueError(f"{name}: class labels must have shape (N,), got {tuple(y.shape)}")
    if y.is_floating_point():
        if tuple(y.shape[1:]) != tuple(prediction.shape[1:]):
            raise ValueError(
                f"{name}: targets have shape {tuple(y.shape[1:])} per sample but the model predicts "
                f"{tuple(prediction.shape[1:])}"
            )
    elif y.dtype == torch.bool or y.is_complex():
        raise TypeError(f"{name}: y has dtype {y.dtype}; expected floating-point targets or int64 class labels")
    elif y.ndim == 1 and prediction.ndim == 2 and len(y) > 0:
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= prediction.shape[1]:
            raise ValueError(f"{name}: class labels must be in 0..{prediction.shape[1] - 1}, got {low}..{high}")
    return probe
