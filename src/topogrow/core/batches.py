"""Uniform access to data given as a DataLoader or as an ``(X, y)`` pair."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

Data = Iterable | tuple


def check_finite(tensor: torch.Tensor, name: str) -> None:
    """Raise ``ValueError`` if a floating tensor holds NaN or inf."""
    if tensor.is_floating_point() and not torch.isfinite(tensor).all():
        bad = (~torch.isfinite(tensor)).nonzero()[0].tolist()
        raise ValueError(f"{name} contains NaN or inf (first at index {bad})")


def check_pair(x: torch.Tensor, y: torch.Tensor, name: str = "data") -> None:
    """Check that ``x`` and ``y`` are tensors with the same number of samples, finite."""
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(f"{name}: expected a pair of tensors (X, y), got ({type(x).__name__}, {type(y).__name__})")
    if x.ndim == 0 or y.ndim == 0:
        raise ValueError(f"{name}: X and y need a sample dimension, got shapes {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{name}: X has {x.shape[0]} samples but y has {y.shape[0]} (shapes {tuple(x.shape)} and {tuple(y.shape)})"
        )
    check_finite(x, f"{name}: X")
    check_finite(y, f"{name}: y")


def iter_batches(data: Data, batch_size: int = 1024) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x, y)`` mini-batches from a DataLoader-like iterable or an ``(X, y)`` pair.

    A pair is sliced in order (no shuffling, no copy). Every batch is checked to
    be finite, so NaN in the data is reported before it poisons a sum.
    """
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        x, y = data
        check_pair(x, y)
        if x.shape[0] == 0:
            raise ValueError("data: X and y are empty (0 samples)")
        for start in range(0, x.shape[0], batch_size):
            yield x[start : start + batch_size], y[start : start + batch_size]
        return
    if isinstance(data, (tuple, list)):
        raise TypeError(
            f"data: expected a DataLoader or a pair of tensors (X, y), got a {type(data).__name__} of {len(data)} items"
        )
    count = 0
    for batch in data:
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise TypeError("data: each batch of the DataLoader must be a pair (x, y)")
        x, y = batch
        check_pair(x, y, name=f"data batch {count}")
        count += 1
        yield x, y
    if count == 0:
        raise ValueError("data: the DataLoader yielded no batches (empty data)")


def sample_count(data: Data) -> int | None:
    """S if it can be known before iterating (a pair, or a DataLoader over a sized dataset)."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        return int(data[0].shape[0])
    dataset = getattr(data, "dataset", None)
    try:
        return len(dataset) if dataset is not None else None
    except TypeError:
        return None
