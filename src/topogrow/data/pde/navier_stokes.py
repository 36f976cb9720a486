"""2D incompressible Navier–Stokes data (solved by :mod:`topogrow.data.pde.spectral`), cached, and two
learning tasks built on it.

Data (:func:`navier_stokes_data`, :class:`NavierStokesConfig`), defaults as in the Fourier neural
operator benchmark:

* grid ``N = 64``, viscosity ``ν = 1e-3``, final time ``T = 2``, time step ``≤ 0.05`` and advective
  CFL number ``dt · max|u| · 2π K √2 ≤ 1`` (so ``dt = 0.05``, 40 steps, for these fields);
* forcing ``f(x, y) = 0.1 (sin(2π(x + y)) + cos(2π(x + y)))``;
* initial vorticity a Gaussian random field, mean zero, covariance
  ``σ² (−Δ + τ²I)^(−α)`` with ``α = 2.5``, ``τ = 7``, ``σ = τ^(α−1)``: Fourier coefficients
  ``ω̂_k = σ (4π²|k|² + τ²)^(−α/2) ξ_k`` with ``ξ_k`` complex standard normal (Hermitian), ``ξ_0 = 0``,
  truncated to the kept modes (standard deviation of ω ≈ 0.19);
* solved in single precision (complex64; relative difference from a float64 solve with ``dt/4``:
  5e-7) in chunks of 250 samples; chunk ``c`` draws its initial
  fields from ``numpy.random.default_rng([seed, c])``, so a data set of ``n`` samples is the first
  ``n`` samples of any larger one;
* stored per sample (float32): the initial vorticity and the vorticity and velocity at ``T`` on a
  coarse ``16 × 16`` grid (every ``N/16``-th node, point values), and the noise-free vorticity and
  velocity at ``T`` at fixed sensor nodes of the ``N × N`` grid (64 vorticity sensors, 40 velocity
  sensors, distinct nodes drawn with ``default_rng(sensor_seed)``).

Noise is added when a task is built: observation ``i`` of a sample is ``y_i + η · rms(y) · ξ_i``
with ``rms(y)`` the root mean square of that sample's noise-free observations, ``η = 0.01`` (1 %),
``ξ_i`` standard normal from ``default_rng(noise_seed)`` (fixed: the same noise for every task seed).

Cache: ``<data_dir>/pde/navier_stokes-<hash of the config>.npz``, ``data_dir`` given, else
``$TOPOGROW_DATA_DIR``, else ``~/.cache/topogrow``; written atomically (temporary file, then
rename); a cache that cannot be read or does not match its config is regenerated (with a
warning); a cache holding more samples than asked for is sliced, one holding fewer is extended.

Tasks (test = the first 500 samples, validation the next 250, the training pool after them,
1,000 samples unless ``n_train`` asks for more; the data are the same for every seed, the seed
picks the ``n_train`` training samples when the pool is larger; inputs standardised with
training statistics, targets divided by one scalar, their training RMS, which leaves a relative
error unchanged):

* :func:`navier_stokes_inverse` — ``"navier-stokes"``: vorticity at 64 sensor nodes at time ``T``
  plus 1 % noise → the initial vorticity on the 16 × 16 grid (256 outputs); metric the mean over
  test samples of ``‖ŷ − y‖₂ / ‖y‖₂``.
* :func:`wind_reconstruction` — ``"wind"``: the Navier–Stokes flow at time ``T`` is the
  (synthetic) atmospheric flow model; velocity ``(u, v)`` at 40 sensor nodes plus 1 % noise
  (80 inputs) → the full velocity field on the 16 × 16 grid (512 outputs, ``u`` then ``v``);
  metric the mean relative L2 error in percent.

Reference: ridge regression (intercept, penalty chosen on the validation set) scores 0.306 and 0.289
on ``navier-stokes`` with 250 and 500 training samples (the paper's best: 0.295 and 0.271) and
1.6 % on ``wind`` with 1,000 (paper: 12.4 %): at this resolution the velocity is smooth enough for
a linear map from 40 sensors, so ``wind`` is much easier than the paper's data set.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from topogrow.data.pde.cache import cache_root, save_npz_atomic
from topogrow.data.pde.spectral import SpectralNavierStokes, fno_forcing, gaussian_random_field
from topogrow.data.task import RelativeL2Task

__all__ = [
    "NavierStokesConfig",
    "navier_stokes_data",
    "navier_stokes_inverse",
    "wind_reconstruction",
]

#: Bumped whenever the generator changes what it produces (part of the cache key).
CACHE_VERSION = 1


@dataclass(frozen=True)
class NavierStokesConfig:
    """Everything that determines the generated data (the cache key); see the module docstring."""

    grid: int = 64
    viscosity: float = 1e-3
    final_time: float = 2.0
    max_dt: float = 0.05
    cfl: float = 1.0
    forcing_amplitude: float = 0.1
    alpha: float = 2.5
    tau: float = 7.0
    coarse: int = 16
    vorticity_sensors: int = 64
    velocity_sensors: int = 40
    sensor_seed: int = 2025
    seed: int = 0
    chunk: int = 250
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.grid % self.coarse:
            raise ValueError(f"coarse ({self.coarse}) must divide grid ({self.grid})")
        if max(self.vorticity_sensors, self.velocity_sensors) > self.grid**2:
            raise ValueError("more sensors than grid nodes")
        if self.chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {self.chunk}")

    def key(self) -> str:
        """A short hash of the configuration (and of the cache format)."""
        text = json.dumps({"version": CACHE_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def sensors(self) -> tuple[np.ndarray, np.ndarray]:
        """Flat node indices ``i·N + j`` of the vorticity and velocity sensors (distinct, sorted)."""
        rng = np.random.default_rng(self.sensor_seed)
        nodes = self.grid**2
        vorticity = np.sort(rng.choice(nodes, size=self.vorticity_sensors, replace=False))
        velocity = np.sort(rng.choice(nodes, size=self.velocity_sensors, replace=False))
        return vorticity, velocity


def simulate_chunk(config: NavierStokesConfig, index: int, n: int | None = None) -> dict[str, np.ndarray]:
    """Solve chunk ``index`` (``config.chunk`` samples unless ``n``) and return its stored arrays."""
    n = config.chunk if n is None else n
    rng = np.random.default_rng([config.seed, index])
    solver = SpectralNavierStokes(
        config.grid, config.viscosity, fno_forcing(config.grid, config.forcing_amplitude), config.dtype
    )
    omega0_hat = (gaussian_random_field(rng, n, config.grid, config.alpha, config.tau) * solver.mask).astype(
        solver.complex
    )
    dt = solver.stable_dt(omega0_hat, config.max_dt, config.cfl)
    omega_hat = solver.solve(omega0_hat, config.final_time, dt)
    omega0, omega = solver.to_physical(omega0_hat), solver.to_physical(omega_hat)
    velocity = solver.velocity(omega_hat)  # (n, 2, N, N)
    stride = config.grid // config.coarse
    vorticity_nodes, velocity_nodes = config.sensors()
    flat = velocity.reshape(n, 2, -1)
    return {
        "omega0": omega0[:, ::stride, ::stride].astype(np.float32),
        "omegaT": omega[:, ::stride, ::stride].astype(np.float32),
        "velocityT": velocity[:, :, ::stride, ::stride].astype(np.float32),
        "omegaT_sensors": omega.reshape(n, -1)[:, vorticity_nodes].astype(np.float32),
        "velocityT_sensors": flat[:, :, velocity_nodes].astype(np.float32),
        "dt": np.full(n, dt),
    }


def cache_path(config: NavierStokesConfig, data_dir: str | os.PathLike | None = None) -> Path:
    """``<root>/pde/navier_stokes-<config hash>.npz``."""
    return cache_root(data_dir) / "pde" / f"navier_stokes-{config.key()}.npz"


_KEYS = ("omega0", "omegaT", "velocityT", "omegaT_sensors", "velocityT_sensors", "dt")


def _read_cache(path: Path, config: NavierStokesConfig) -> dict[str, np.ndarray] | None:
    """The cached arrays, or ``None`` (with a warning) when the file is unreadable or does not match."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            stored = json.loads(str(archive["config"]))
            data = {key: np.asarray(archive[key]) for key in _KEYS}
        if stored != {"version": CACHE_VERSION, **asdict(config)}:
            raise ValueError("configuration does not match")
        n = len(data["omega0"])
        if any(len(a) != n for a in data.values()) or n % config.chunk:
            raise ValueError("inconsistent array lengths")
        return data
    except Exception as error:  # noqa: BLE001 - any unreadable cache is regenerated
        warnings.warn(f"ignoring unreadable Navier–Stokes cache {path} ({type(error).__name__}: {error})", stacklevel=3)
        return None


def _write_cache(path: Path, config: NavierStokesConfig, data: dict[str, np.ndarray]) -> None:
    """Write atomically (see :func:`topogrow.data.pde.cache.save_npz_atomic`)."""
    save_npz_atomic(path, config=np.array(json.dumps({"version": CACHE_VERSION, **asdict(config)})), **data)


def navier_stokes_data(
    n_samples: int,
    config: NavierStokesConfig | None = None,
    data_dir: str | os.PathLike | None = None,
    cache: bool = True,
) -> dict[str, np.ndarray]:
    """The first ``n_samples`` samples of the data set ``config`` describes (see the module docstring).

    Returns ``omega0 (n, c, c)``, ``omegaT (n, c, c)``, ``velocityT (n, 2, c, c)``,
    ``omegaT_sensors (n, P)``, ``velocityT_sensors (n, 2, Q)`` (float32, noise-free) and the time
    step ``dt (n,)`` of each sample's chunk, ``c = config.coarse``. Read from and written to the
    cache unless ``cache=False``.
    """
    config = NavierStokesConfig() if config is None else config
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    chunks = -(-n_samples // config.chunk)
    path = cache_path(config, data_dir)
    data = _read_cache(path, config) if cache and path.exists() else None
    have = 0 if data is None else len(data["omega0"]) // config.chunk
    if have < chunks:
        new = [simulate_chunk(config, index) for index in range(have, chunks)]
        parts = ([] if data is None else [data]) + new
        data = {key: np.concatenate([part[key] for part in parts]) for key in _KEYS}
        if cache:
            try:
                _write_cache(path, config, data)
            except OSError as error:
                warnings.warn(
                    f"could not cache the Navier–Stokes data at {path} ({error}); continuing without", stacklevel=2
                )
    return {key: value[:n_samples] for key, value in data.items()}


def _noisy(clean: np.ndarray, level: float, seed: int) -> np.ndarray:
    """``y + level · rms(y) · ξ`` per sample (row), ``ξ`` standard normal from ``default_rng(seed)``."""
    flat = clean.reshape(len(clean), -1).astype(np.float64)
    rms = np.sqrt((flat**2).mean(axis=1, keepdims=True))
    return flat + level * rms * np.random.default_rng(seed).standard_normal(flat.shape)


N_TEST, N_VAL, N_POOL = 500, 250, 1000
NOISE_LEVEL = 0.01


def _pde_task(
    name: str,
    inputs: np.ndarray,
    targets: np.ndarray,
    seed: int,
    n_train: int | None,
    sizes: tuple[int, int, int],
    percent: bool,
    description: str,
) -> RelativeL2Task:
    """Split (test first, validation next, then the training pool), standardise, wrap."""
    n_test, n_val, pool = sizes
    start = n_test + n_val
    train = start + np.arange(pool)
    if n_train is not None and n_train < pool:
        train = np.sort(np.random.default_rng(seed).permutation(train)[:n_train])
    X, Y = inputs.reshape(len(inputs), -1), targets.reshape(len(targets), -1).astype(np.float64)
    mean, std = X[train].mean(axis=0), X[train].std(axis=0)
    std[std == 0] = 1.0
    scale = float(np.sqrt((Y[train] ** 2).mean())) or 1.0

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32)

    parts = [(X[i] - mean) / std for i in (train, slice(n_test, start), slice(0, n_test))]
    labels = [Y[i] / scale for i in (train, slice(n_test, start), slice(0, n_test))]
    return RelativeL2Task(
        name,
        "regression",
        tensor(parts[0]),
        tensor(labels[0]),
        tensor(parts[1]),
        tensor(labels[1]),
        tensor(parts[2]),
        tensor(labels[2]),
        out_features=Y.shape[1],
        percent=percent,
        target_scale=scale,
        description=description,
    )


def _sizes(n_train: int | None, n_test: int, n_val: int, n_pool: int) -> tuple[int, int, int]:
    """(test, validation, training pool) sizes; the pool grows to ``n_train`` if that is larger."""
    if n_train is not None and n_train < 2:
        raise ValueError(f"n_train must be >= 2, got {n_train}")
    if min(n_test, n_val) < 1 or n_pool < 2:
        raise ValueError(f"need n_test, n_val >= 1 and n_pool >= 2, got {n_test}, {n_val}, {n_pool}")
    return n_test, n_val, n_pool if n_train is None else max(n_pool, int(n_train))


def navier_stokes_inverse(
    seed: int = 0,
    data_dir: str | None = None,
    n_train: int | None = None,
    *,
    config: NavierStokesConfig | None = None,
    n_test: int = N_TEST,
    n_val: int = N_VAL,
    n_pool: int = N_POOL,
) -> RelativeL2Task:
    """Initial vorticity (16 × 16 grid, 256 outputs) from the vorticity at 64 sensor nodes at time
    ``T = 2`` with 1 % noise; test metric the mean relative L2 error (paper: S = 250 → 0.295,
    S = 500 → 0.271). 500 test, 250 validation samples; see the module docstring."""
    config = NavierStokesConfig() if config is None else config
    sizes = _sizes(n_train, n_test, n_val, n_pool)
    data = navier_stokes_data(sum(sizes), config, data_dir)
    observed = _noisy(data["omegaT_sensors"], NOISE_LEVEL, seed=config.seed + 1)
    return _pde_task(
        "navier-stokes",
        observed,
        data["omega0"],
        seed,
        n_train,
        sizes,
        percent=False,
        description="initial vorticity from sparse noisy vorticity at time T",
    )


def wind_reconstruction(
    seed: int = 0,
    data_dir: str | None = None,
    n_train: int | None = None,
    *,
    config: NavierStokesConfig | None = None,
    n_test: int = N_TEST,
    n_val: int = N_VAL,
    n_pool: int = N_POOL,
) -> RelativeL2Task:
    """Velocity ``(u, v)`` on the 16 × 16 grid (512 outputs) from 40 point sensors of ``(u, v)``
    with 1 % noise, the flow being the Navier–Stokes solution at time ``T`` (the synthetic
    atmospheric-flow model); test metric the mean relative L2 error in percent (paper: S = 1000 →
    12.4 %, S = 5000 → 3.77 %). 500 test, 250 validation samples; see the module docstring."""
    config = NavierStokesConfig() if config is None else config
    sizes = _sizes(n_train, n_test, n_val, n_pool)
    data = navier_stokes_data(sum(sizes), config, data_dir)
    observed = _noisy(data["velocityT_sensors"], NOISE_LEVEL, seed=config.seed + 2)
    return _pde_task(
        "wind",
        observed,
        data["velocityT"],
        seed,
        n_train,
        sizes,
        percent=True,
        description="velocity field from sparse noisy velocity sensors",
    )


def small_config(**changes) -> NavierStokesConfig:
    """A cheap configuration for tests and quick checks (32 × 32 grid, 8 × 8 targets, chunks of 50)."""
    return replace(
        NavierStokesConfig(grid=32, coarse=8, vorticity_sensors=16, velocity_sensors=10, chunk=50), **changes
    )
