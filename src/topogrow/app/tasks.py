"""Learning tasks: data split into train/validation/test, a loss and a test metric."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from topogrow._validation import unknown_name_error
from topogrow.app.datasets import load_california


@dataclass
class Task:
    """Tensors for train/val/test, the training loss and how to score a model.

    Regression targets are ``(N, out_features)`` float32; classification targets
    are ``(N,)`` int64 class indices.
    """

    name: str
    kind: str  # "regression" or "classification"
    X_train: torch.Tensor
    y_train: torch.Tensor
    X_val: torch.Tensor
    y_val: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    out_features: int

    @property
    def loss(self) -> str:
        return "mse" if self.kind == "regression" else "cross_entropy"

    @property
    def metric_name(self) -> str:
        return "test MSE" if self.kind == "regression" else "test accuracy"

    @property
    def in_features(self) -> int:
        return int(self.X_train.shape[1])

    @torch.no_grad()
    def score(self, model: torch.nn.Module) -> float:
        """Test MSE (regression) or test accuracy (classification)."""
        parameter = next(model.parameters())
        model.eval()
        prediction = model(self.X_test.to(device=parameter.device, dtype=parameter.dtype)).cpu().double()
        if self.kind == "regression":
            return float(((prediction - self.y_test.double()) ** 2).mean())
        return float((prediction.argmax(dim=1) == self.y_test).double().mean())


def split_and_standardise(
    X: np.ndarray,
    y: np.ndarray,
    seed: int,
    n_train: int | None = None,
    val_fraction: float = 0.16,
    test_fraction: float = 0.2,
) -> tuple[np.ndarray, ...]:
    """Seeded split into train/val/test; features standardised with training statistics."""
    if len(X) != len(y) or len(X) < 10:
        raise ValueError(f"need at least 10 samples with matching X and y, got {len(X)} and {len(y)}")
    order = np.random.default_rng(seed).permutation(len(X))
    n_test = int(round(test_fraction * len(X)))
    n_val = int(round(val_fraction * len(X)))
    test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    if n_train is not None:
        if n_train < 2:
            raise ValueError(f"n_train must be >= 2, got {n_train}")
        train = train[:n_train]
    mean, std = X[train].mean(axis=0), X[train].std(axis=0)
    std[std == 0] = 1.0
    scale = lambda a: (a - mean) / std  # noqa: E731
    return scale(X[train]), y[train], scale(X[val]), y[val], scale(X[test]), y[test]


def _regression_task(name: str, X: np.ndarray, y: np.ndarray, seed: int, n_train: int | None) -> Task:
    parts = split_and_standardise(X, y.reshape(len(y), -1), seed, n_train)
    tensors = [torch.as_tensor(p, dtype=torch.float32) for p in parts]
    return Task(name, "regression", *tensors, out_features=tensors[1].shape[1])


def california(seed: int = 0, data_dir: str | None = None, n_train: int | None = None) -> Task:
    """California housing (scikit-learn's features; target in 100k$), test metric MSE."""
    X, y = load_california(data_dir)
    return _regression_task("california", X, y, seed, n_train)


def synthetic(seed: int = 0, data_dir: str | None = None, n_train: int | None = None, n_samples: int = 1500) -> Task:
    """A small smooth regression in 4 features, generated (for tests and quick checks).

    ``y = sin(2 x_1) cos(x_2) + 0.5 x_3^2 - 0.3 x_4 + 0.05 noise``, x uniform on [-2, 2]^4.
    The data are the same for every seed; the seed changes the split.
    """
    rng = np.random.default_rng(12345)
    X = rng.uniform(-2, 2, size=(n_samples, 4))
    y = np.sin(2 * X[:, 0]) * np.cos(X[:, 1]) + 0.5 * X[:, 2] ** 2 - 0.3 * X[:, 3]
    y = y + 0.05 * rng.standard_normal(n_samples)
    return _regression_task("synthetic", X, y, seed, n_train)


TASKS: dict[str, Callable[..., Task]] = {"california": california, "synthetic": synthetic}


def make_task(name: str, seed: int = 0, data_dir: str | None = None, n_train: int | None = None) -> Task:
    """The task registered under ``name`` (see :data:`TASKS`)."""
    if name not in TASKS:
        raise unknown_name_error("task", name, TASKS)
    return TASKS[name](seed=seed, data_dir=data_dir, n_train=n_train)
