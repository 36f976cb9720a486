r"""Heat conductivity: the data set of :mod:`topogrow.data.pde.diffusion`'s steady diffusion with a random
log-conductivity (generated, cached), and two learning tasks.

**Randomness and cache** (:func:`generate_heat_dataset`). ``xi`` and ``eta`` come from two independent
streams spawned from ``numpy.random.SeedSequence(seed)`` and are drawn sample by sample, so the first
``N`` samples do not depend on how many are generated. A data set is cached as
``<dir>/pde/heat-<hash of the parameters>.npz`` with ``<dir>`` the ``data_dir`` argument, else
``$TOPOGROW_DATA_DIR``, else ``~/.cache/topogrow``; the file is written to a temporary name and renamed,
and a cache file that cannot be read or holds other parameters is regenerated (with a warning).

**Tasks.** Both use :data:`HEAT_DATA_SEED` for the data (one cached file) and ``seed`` for the
train/validation/test split (20% test, 16% validation, the rest — 1,600 of the default 2,500 samples —
for training, of which ``n_train`` are kept). Inputs are standardised with the training mean and std.

* :func:`heat_map` — the parameter-to-observable map: ``X`` = the 32 KL coefficients ``xi``, ``y`` = the
  49 noisy observations, standardised per sensor with the training mean and std. Metric: **test MSE of
  the standardised observations** (about ``1 - R^2`` averaged over the sensors; predicting the training
  mean scores about 1). ``task.target_mean`` / ``task.target_std`` turn predictions back into
  temperatures (``y * std + mean``; the MSE in those units is the metric times ``std^2``).
* :func:`heat_inverse` — the inversion: ``X`` = the 49 noisy observations, ``y`` = ``m`` on a 16 x 16 grid
  (the 32 x 32 cell values averaged over 2 x 2 blocks), flattened in ``[i, j]`` order, not rescaled.
  Metric: **mean relative L2 error** ``mean_i ||m_hat_i - m_i|| / ||m_i||`` over the test samples
  (predicting zeros scores 1).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from topogrow.data.pde.cache import cache_root, save_npz_atomic
from topogrow.data.pde.diffusion import coarsen, kl_basis, observation_matrix, sensor_locations, solve_diffusion
from topogrow.data.task import Task, relative_l2_error, split_and_standardise

#: Bumped whenever the generator changes what it produces (part of the cache key).
GENERATOR_VERSION = 1
#: The data seed of the tasks (the task ``seed`` only changes the split).
HEAT_DATA_SEED = 2025
#: Samples generated for the tasks: 500 test, 400 validation, 1,600 for training.
HEAT_TASK_SAMPLES = 2500
_VAL_FRACTION, _TEST_FRACTION = 0.16, 0.2


# ----------------------------------------------------------------------------------------------- data set


class HeatDataset(NamedTuple):
    """A generated data set (unpacks as ``xi, m, observations, ...``).

    ``xi`` ``(N, K)`` KL coefficients; ``m`` ``(N, n, n)`` float32 log-conductivity at the cell centres;
    ``observations`` ``(N, S)`` noisy ``u`` at the sensors; ``clean`` ``(N, S)`` without noise;
    ``noise_std`` ``(N,)`` the noise standard deviation of each sample; ``sensors`` ``(S, 2)``.
    """

    xi: np.ndarray
    m: np.ndarray
    observations: np.ndarray
    clean: np.ndarray
    noise_std: np.ndarray
    sensors: np.ndarray
    params: dict


def cache_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Where generated PDE data are cached: ``<data_dir or $TOPOGROW_DATA_DIR or ~/.cache/topogrow>/pde``."""
    return cache_root(data_dir) / "pde"


def _params(n_samples, seed, grid, n_modes, length_scale, sigma, mean, sensors, noise, forcing, average) -> dict:
    return {
        "generator": "heat",
        "version": GENERATOR_VERSION,
        "n_samples": int(n_samples),
        "seed": int(seed),
        "grid": int(grid),
        "n_modes": int(n_modes),
        "length_scale": float(length_scale),
        "sigma": float(sigma),
        "mean": float(mean),
        "sensors": int(sensors),
        "noise": float(noise),
        "forcing": float(forcing),
        "average": str(average),
    }


def cache_path(params: dict, data_dir: str | os.PathLike | None = None) -> Path:
    """``<cache dir>/heat-<16 hex digits of the SHA-256 of the parameters>.npz``."""
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir(data_dir) / f"heat-{key}.npz"


_ARRAYS = ("xi", "m", "observations", "clean", "noise_std", "sensors")


def _load(path: Path, params: dict) -> HeatDataset | None:
    """The cached data set, or ``None`` (with a warning) if the file is unreadable or for other parameters."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            stored = json.loads(str(archive["params"]))
            arrays = {name: archive[name] for name in _ARRAYS}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as error:
        warnings.warn(
            f"{path}: unreadable heat data cache ({type(error).__name__}: {error}); regenerating", stacklevel=3
        )
        return None
    n = params["n_samples"]
    if stored != params or len(arrays["xi"]) != n or arrays["m"].shape != (n, params["grid"], params["grid"]):
        warnings.warn(f"{path}: cached heat data do not match the requested parameters; regenerating", stacklevel=3)
        return None
    return HeatDataset(**arrays, params=params)


def _save(path: Path, data: HeatDataset) -> None:
    """Write atomically (see :func:`topogrow.data.pde.cache.save_npz_atomic`)."""
    save_npz_atomic(
        path,
        params=np.array(json.dumps(data.params, sort_keys=True)),
        **{name: getattr(data, name) for name in _ARRAYS},
    )


def generate_heat_dataset(
    n_samples: int = HEAT_TASK_SAMPLES,
    seed: int = HEAT_DATA_SEED,
    grid: int = 32,
    n_modes: int = 32,
    length_scale: float = 0.2,
    sensors: int = 7,
    noise: float = 0.01,
    data_dir: str | os.PathLike | None = None,
    *,
    sigma: float = 1.0,
    mean: float = 0.0,
    forcing: float = 1.0,
    average: str = "harmonic",
    cache: bool = True,
) -> HeatDataset:
    """Generate (or load from the cache) ``n_samples`` heat-conduction samples; see the module docstring.

    Each sample: ``xi ~ N(0, I_K)``, ``m`` its KL field on the ``grid x grid`` cells, ``u`` the solution
    of ``-div(e^m grad u) = forcing`` with ``u = 0`` on the wall, observed at ``sensors x sensors``
    interior points with Gaussian noise of standard deviation ``noise`` times the RMS of the sample's
    noise-free observations. ``cache=False`` neither reads nor writes the cache.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    params = _params(n_samples, seed, grid, n_modes, length_scale, sigma, mean, sensors, noise, forcing, average)
    path = cache_path(params, data_dir)
    if cache and path.is_file():
        loaded = _load(path, params)
        if loaded is not None:
            return loaded

    basis = kl_basis(grid, n_modes, length_scale, sigma, mean)
    points = sensor_locations(sensors)
    observe = observation_matrix(grid, points)
    xi_stream, noise_stream = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    xi = xi_stream.standard_normal((n_samples, n_modes))
    eta = noise_stream.standard_normal((n_samples, len(points)))
    m = basis.field(xi)
    clean = np.empty((n_samples, len(points)))
    for i in range(n_samples):
        clean[i] = observe @ solve_diffusion(m[i], forcing, average).ravel()
    noise_std = noise * np.sqrt((clean**2).mean(axis=1))
    data = HeatDataset(xi, m.astype(np.float32), clean + noise_std[:, None] * eta, clean, noise_std, points, params)
    if cache:
        try:
            _save(path, data)
        except OSError as error:
            warnings.warn(f"could not cache the heat data at {path} ({error}); continuing without", stacklevel=2)
    return data


# ----------------------------------------------------------------------------------------------- tasks


@dataclass
class HeatTask(Task):
    """A :class:`Task` whose test metric is ``"mse"`` or ``"relative_l2"`` (mean ``||pred - y|| / ||y||``).

    ``target_mean`` / ``target_std`` (``(out_features,)``, or ``None``) undo a standardisation of the
    targets: physical value = ``y * target_std + target_mean``.
    """

    metric: str = "mse"
    target_mean: torch.Tensor | None = None
    target_std: torch.Tensor | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.metric not in ("mse", "relative_l2"):
            raise ValueError(f"metric must be 'mse' or 'relative_l2', got {self.metric!r}")

    @property
    def metric_name(self) -> str:
        return "test relative L2 error" if self.metric == "relative_l2" else "test MSE"

    @torch.no_grad()
    def score(self, model: torch.nn.Module, batch_size: int = 2048) -> float:
        """Test MSE, or the mean over test samples of ``||prediction - y|| / ||y||``."""
        if self.metric == "mse":
            return super().score(model, batch_size)
        return relative_l2_error(self.predict_test(model, batch_size), self.y_test)


def _split(X: np.ndarray, y: np.ndarray, seed: int, n_train: int | None) -> list[np.ndarray]:
    n = len(X)
    available = n - int(round(_TEST_FRACTION * n)) - int(round(_VAL_FRACTION * n))
    if n_train is not None and n_train > available:
        raise ValueError(f"n_train must be at most {available} (the training samples of {n}), got {n_train}")
    return list(split_and_standardise(X, y, seed, n_train, _VAL_FRACTION, _TEST_FRACTION))


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32)


def make_heat_map_task(
    seed: int = 0,
    data_dir: str | None = None,
    n_train: int | None = None,
    *,
    standardise_targets: bool = True,
    **dataset: object,
) -> HeatTask:
    """KL coefficients -> noisy observations (``dataset`` goes to :func:`generate_heat_dataset`)."""
    dataset.setdefault("n_samples", HEAT_TASK_SAMPLES)
    dataset.setdefault("seed", HEAT_DATA_SEED)
    data = generate_heat_dataset(data_dir=data_dir, **dataset)
    parts = _split(data.xi, data.observations, seed, n_train)
    mean, std = np.zeros(parts[1].shape[1]), np.ones(parts[1].shape[1])
    if standardise_targets:
        mean, std = parts[1].mean(axis=0), parts[1].std(axis=0)
        std[std == 0] = 1.0
        for k in (1, 3, 5):
            parts[k] = (parts[k] - mean) / std
    tensors = [_tensor(p) for p in parts]
    return HeatTask(
        "heat-map",
        "regression",
        *tensors,
        out_features=tensors[1].shape[1],
        metric="mse",
        target_mean=_tensor(mean),
        target_std=_tensor(std),
    )


def make_heat_inverse_task(
    seed: int = 0,
    data_dir: str | None = None,
    n_train: int | None = None,
    *,
    coarse: int = 16,
    **dataset: object,
) -> HeatTask:
    """Noisy observations -> ``m`` on a ``coarse x coarse`` grid (``dataset`` goes to :func:`generate_heat_dataset`)."""
    dataset.setdefault("n_samples", HEAT_TASK_SAMPLES)
    dataset.setdefault("seed", HEAT_DATA_SEED)
    data = generate_heat_dataset(data_dir=data_dir, **dataset)
    target = coarsen(data.m.astype(np.float64), coarse).reshape(len(data.m), -1)
    tensors = [_tensor(p) for p in _split(data.observations, target, seed, n_train)]
    return HeatTask("heat-inverse", "regression", *tensors, out_features=tensors[1].shape[1], metric="relative_l2")


def heat_map(seed: int = 0, data_dir: str | None = None, n_train: int | None = None) -> Task:
    """Heat conductivity, parameter-to-observable map: 32 KL coefficients -> 49 noisy sensor temperatures.

    Targets standardised per sensor (training statistics); test metric MSE of the standardised
    observations. 2,500 generated samples (cached), 1,600 for training. See :mod:`topogrow.data.pde.heat`.
    """
    return make_heat_map_task(seed=seed, data_dir=data_dir, n_train=n_train)


def heat_inverse(seed: int = 0, data_dir: str | None = None, n_train: int | None = None) -> Task:
    """Heat conductivity inversion: 49 noisy sensor temperatures -> log-conductivity on a 16 x 16 grid.

    Test metric: mean relative L2 error ``||m_hat - m|| / ||m||``. 2,500 generated samples (cached),
    1,600 for training. See :mod:`topogrow.data.pde.heat`.
    """
    return make_heat_inverse_task(seed=seed, data_dir=data_dir, n_train=n_train)
