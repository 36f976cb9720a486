"""What a learning task is: :class:`Task` (tensors, loss, test metric), the seeded split, and the
relative-L2 test metric shared by the PDE tasks.

A leaf of :mod:`topogrow.data`: it imports nothing from the rest of the package, so the task
factories (:mod:`topogrow.data.tasks`) and the PDE generators (:mod:`topogrow.data.pde`) both build on
it without importing each other.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace

import numpy as np
import torch

__all__ = ["RelativeL2Task", "Task", "relative_l2_error", "split_and_standardise"]


@dataclass
class Task:
    """Tensors for train/val/test, the training loss and how to score a model.

    Regression targets are ``(N, out_features)`` float32; classification targets
    are ``(N,)`` int64 class indices. Inputs are ``(N, in_features)`` float32, or for
    image tasks ``(N, *input_shape)`` = ``(N, C, H, W)`` (see :meth:`flattened` for a
    network that takes vectors).

    ``preprocessing`` (JSON-able, or ``None`` where a task has none recorded) is exactly what turned
    the raw data into these tensors, so that predictions on raw data can be made and inverted::

        {"kind": "regression" | "classification",
         "feature_names": [str, ...],          # the input columns, in order
         "target": str | None,                 # the target column
         "x_mean": [float, ...], "x_std": [float, ...],   # X = (raw - x_mean) / x_std, per feature
         "y_mean": [float, ...] | None, "y_std": [float, ...] | None,  # y = (raw - y_mean) / y_std
         "classes": [label, ...] | None,       # class index i <-> label classes[i] (sorted)
         "data": {"path": str, "sha256": str} | None}   # the file read
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
    input_shape: tuple[int, ...] | None = None  # (C, H, W) of one sample for image tasks
    preprocessing: dict | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.input_shape is None:
            self.input_shape = tuple(int(d) for d in self.X_train.shape[1:])
        else:
            self.input_shape = tuple(int(d) for d in self.input_shape)

    @property
    def is_image(self) -> bool:
        """Whether one sample is an image ``(C, H, W)`` (rather than a feature vector)."""
        return len(self.input_shape) == 3

    def flattened(self) -> Task:
        """The same task with every input flattened to ``(N, in_features)`` (views, no copies).

        ``input_shape`` keeps the image shape, so a model can still be told what the pixels were.
        """
        flat = {key: getattr(self, key).reshape(len(getattr(self, key)), -1) for key in ("X_train", "X_val", "X_test")}
        return replace(self, **flat, input_shape=self.input_shape)

    @property
    def loss(self) -> str:
        """The training loss by name: ``"mse"`` for regression, ``"cross_entropy"`` for classification."""
        return "mse" if self.kind == "regression" else "cross_entropy"

    @property
    def metric_name(self) -> str:
        """What :meth:`score` reports, for tables."""
        return "test MSE" if self.kind == "regression" else "test accuracy"

    @property
    def in_features(self) -> int:
        """Numbers in one input: the feature count, or ``C * H * W`` for images."""
        return math.prod(self.input_shape)

    @torch.no_grad()
    def predict_test(self, model: torch.nn.Module, batch_size: int = 2048) -> torch.Tensor:
        """The model's float64 predictions on the test inputs, in eval mode, in batches."""
        parameter = next(model.parameters())
        model.eval()
        return torch.cat(
            [
                model(batch.to(device=parameter.device, dtype=parameter.dtype)).cpu().double()
                for batch in self.X_test.split(batch_size)
            ]
        )

    def score(self, model: torch.nn.Module, batch_size: int = 2048) -> float:
        """Test MSE (regression) or test accuracy (classification), evaluated in batches."""
        prediction = self.predict_test(model, batch_size)
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
    return_stats: bool = False,
) -> tuple[np.ndarray, ...]:
    """Seeded split into train/val/test; features standardised with training statistics.

    Returns ``X_train, y_train, X_val, y_val, X_test, y_test``, followed by the training ``mean``
    and ``std`` of the features (a zero std replaced by 1) with ``return_stats=True``.
    """
    if len(X) != len(y) or len(X) < 10:
        raise ValueError(f"need at least 10 samples with matching X and y, got {len(X)} and {len(y)}")
    order = np.random.default_rng(seed).permutation(len(X))
    n_test = int(round(test_fraction * len(X)))
    n_val = int(round(val_fraction * len(X)))
    test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    if n_train is not None:
        if n_train < 2:
            raise ValueError(f"n_train must be >= 2, got {n_train}")
        if n_train > len(train):
            warnings.warn(
                f"n_train {n_train} > {len(train)} available training samples: using all {len(train)}", stacklevel=2
            )
        train = train[:n_train]
    mean, std = X[train].mean(axis=0), X[train].std(axis=0)
    std[std == 0] = 1.0
    scale = lambda a: (a - mean) / std  # noqa: E731
    parts = scale(X[train]), y[train], scale(X[val]), y[val], scale(X[test]), y[test]
    return (*parts, mean, std) if return_stats else parts


def relative_l2_error(prediction: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> float:
    """Mean over samples (rows) of ``||prediction - target||_2 / ||target||_2``, in float64 on the CPU.

    ``prediction`` is reshaped to ``target``'s number of rows (so a flattened prediction is fine).
    """
    t = torch.as_tensor(target).reshape(len(target), -1).double().cpu()
    p = torch.as_tensor(prediction).reshape(len(target), -1).double().cpu()
    return float(((p - t).norm(dim=1) / t.norm(dim=1).clamp_min(1e-300)).mean())


@dataclass
class RelativeL2Task(Task):
    """A regression task scored by the mean relative L2 error ``‖ŷ − y‖₂ / ‖y‖₂`` over test samples.

    ``percent`` reports it in percent. Targets are stored divided by ``target_scale`` (a scalar,
    which leaves the relative error unchanged): multiply predictions by it for physical units.
    """

    percent: bool = False
    target_scale: float = 1.0
    description: str = field(default="", repr=False)

    @property
    def metric_name(self) -> str:
        """What :meth:`score` reports, for tables."""
        return "test relative L2 error" + (" (%)" if self.percent else "")

    def relative_error(self, prediction: torch.Tensor, target: torch.Tensor | None = None) -> float:
        """Mean relative L2 error of ``prediction`` against ``target`` (default the test targets)."""
        error = relative_l2_error(prediction, self.y_test if target is None else target)
        return error * (100.0 if self.percent else 1.0)

    @torch.no_grad()
    def score(self, model: torch.nn.Module, batch_size: int = 2048) -> float:
        return self.relative_error(self.predict_test(model, batch_size))
