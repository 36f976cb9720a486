"""The Navier–Stokes generator: conservation, exact decay, reproducibility, cache, tasks."""

import warnings

import numpy as np
import pytest
import torch

from topogrow.data.pde.navier_stokes import (
    NavierStokesConfig,
    cache_path,
    navier_stokes_data,
    navier_stokes_inverse,
    small_config,
    wind_reconstruction,
)
from topogrow.data.pde.spectral import SpectralNavierStokes, fno_forcing, gaussian_random_field
from topogrow.data.task import RelativeL2Task

SIZES = {"n_test": 20, "n_val": 10, "n_pool": 40}


def _random_state(solver, n=3, amplitude=10.0, seed=0):
    rng = np.random.default_rng(seed)
    return gaussian_random_field(rng, n, solver.grid) * solver.mask * amplitude


def test_inviscid_unforced_conserves_energy_and_enstrophy():
    solver = SpectralNavierStokes(32, viscosity=0.0)
    omega0 = _random_state(solver)  # max |u| ~ 1: strongly nonlinear over t = 0.5
    omega = solver.solve(omega0, final_time=0.5, dt=0.005)
    change = (
        np.abs(solver.to_physical(omega) - solver.to_physical(omega0)).max() / np.abs(solver.to_physical(omega0)).max()
    )
    assert change > 0.05  # the flow really evolved
    for quantity in (solver.energy, solver.enstrophy):
        drift = np.abs(quantity(omega) / quantity(omega0) - 1)
        assert drift.max() < 1e-7, drift


def test_single_mode_decays_exactly():
    nu, t = 0.01, 1.0
    solver = SpectralNavierStokes(32, viscosity=nu)
    x = np.arange(32) / 32
    omega0 = np.sin(2 * np.pi * (2 * x[:, None] + 3 * x[None, :]))  # a steady Euler solution
    omega = solver.to_physical(solver.solve(solver.to_spectral(omega0), final_time=t, dt=0.1))
    expected = omega0 * np.exp(-nu * (2 * np.pi) ** 2 * (2**2 + 3**2) * t)
    np.testing.assert_allclose(omega, expected, atol=1e-12)


def test_mean_vorticity_stays_zero_and_forcing_acts():
    solver = SpectralNavierStokes(32, viscosity=1e-3, forcing=fno_forcing(32))
    omega0 = _random_state(solver, amplitude=1.0)
    omega = solver.to_physical(solver.solve(omega0, final_time=1.0, dt=0.05))
    assert np.abs(omega.mean(axis=(-2, -1))).max() < 1e-12
    unforced = SpectralNavierStokes(32, viscosity=1e-3)
    assert not np.allclose(omega, unforced.to_physical(unforced.solve(omega0, 1.0, 0.05)))


def test_velocity_is_divergence_free_and_curl_is_vorticity():
    solver = SpectralNavierStokes(32, viscosity=0.0)
    omega_hat = _random_state(solver, n=2)
    u, v = np.moveaxis(solver.velocity(omega_hat), -3, 0)
    u_hat, v_hat = solver.to_spectral(u), solver.to_spectral(v)
    np.testing.assert_allclose(solver.ikx * u_hat + solver.iky * v_hat, 0, atol=1e-9)
    np.testing.assert_allclose(solver.ikx * v_hat - solver.iky * u_hat, omega_hat, atol=1e-9)


def test_float32_and_time_step_agree_with_a_fine_float64_solve():
    config = small_config()
    forcing = fno_forcing(config.grid)
    fine = SpectralNavierStokes(config.grid, config.viscosity, forcing, "float64")
    coarse = SpectralNavierStokes(config.grid, config.viscosity, forcing, "float32")
    omega0 = _random_state(fine, n=4, amplitude=1.0)
    reference = fine.to_physical(fine.solve(omega0, config.final_time, 0.0125))
    result = coarse.to_physical(coarse.solve(omega0, config.final_time, 0.05))
    assert np.linalg.norm(result - reference) / np.linalg.norm(reference) < 1e-4


def test_same_seed_same_data_and_prefix(tmp_path):
    config = small_config()
    a = navier_stokes_data(60, config, cache=False)
    b = navier_stokes_data(60, config, cache=False)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    c = navier_stokes_data(120, config, cache=False)
    np.testing.assert_array_equal(c["omega0"][:60], a["omega0"])
    other = navier_stokes_data(60, small_config(seed=1), cache=False)
    assert not np.allclose(other["omega0"], a["omega0"])
    assert a["omega0"].shape == (60, 8, 8) and a["velocityT"].shape == (60, 2, 8, 8)
    assert a["omegaT_sensors"].shape == (60, 16) and a["velocityT_sensors"].shape == (60, 2, 10)


def test_cache_round_trip_extension_and_corruption(tmp_path, monkeypatch):
    config = small_config()
    fresh = navier_stokes_data(50, config, data_dir=tmp_path)
    path = cache_path(config, tmp_path)
    assert path.is_file() and path.parent == tmp_path / "pde" and path.name.startswith("navier_stokes-")
    assert not list(path.parent.glob("*.tmp"))

    def fail(*args, **kwargs):
        raise AssertionError("should have been read from the cache")

    with monkeypatch.context() as patch:
        patch.setattr("topogrow.data.pde.navier_stokes.simulate_chunk", fail)
        cached = navier_stokes_data(30, config, data_dir=tmp_path)
    np.testing.assert_array_equal(cached["omega0"], fresh["omega0"][:30])
    longer = navier_stokes_data(100, config, data_dir=tmp_path)  # extends the cache by one chunk
    np.testing.assert_array_equal(longer["omega0"][:50], fresh["omega0"])
    assert len(np.load(path)["omega0"]) == 100

    path.write_bytes(b"not an npz file")
    with pytest.warns(UserWarning, match="unreadable"):
        again = navier_stokes_data(50, config, data_dir=tmp_path)
    np.testing.assert_array_equal(again["omega0"], fresh["omega0"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        navier_stokes_data(50, config, data_dir=tmp_path)  # the rewritten cache reads cleanly

    monkeypatch.setenv("TOPOGROW_DATA_DIR", str(tmp_path / "env"))
    navier_stokes_data(50, config)
    assert cache_path(config).parent == tmp_path / "env" / "pde" and cache_path(config).is_file()


class _Zero(torch.nn.Module):
    def __init__(self, out):
        super().__init__()
        self.out = out
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return torch.zeros(len(x), self.out) + 0 * self.dummy


class _Oracle(torch.nn.Module):
    def __init__(self, task):
        super().__init__()
        self.lookup = {tuple(x.tolist()): y for x, y in zip(task.X_test, task.y_test, strict=True)}
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return torch.stack([self.lookup[tuple(row.tolist())] for row in x.float()])


@pytest.mark.parametrize(
    "factory, inputs, outputs, percent",
    [(navier_stokes_inverse, 16, 64, False), (wind_reconstruction, 20, 128, True)],
)
def test_task_shapes_and_scores(tmp_path, factory, inputs, outputs, percent):
    task = factory(seed=0, data_dir=tmp_path, n_train=25, config=small_config(), **SIZES)
    assert isinstance(task, RelativeL2Task) and task.kind == "regression"
    assert task.X_train.shape == (25, inputs) and task.y_train.shape == (25, outputs)
    assert task.X_val.shape == (10, inputs) and task.X_test.shape == (20, inputs)
    assert task.out_features == outputs and task.loss == "mse"
    assert task.metric_name.startswith("test relative L2 error") and ("%" in task.metric_name) == percent
    assert task.score(_Zero(outputs)) == pytest.approx(100.0 if percent else 1.0)
    assert task.score(_Oracle(task)) == pytest.approx(0.0, abs=1e-6)
    torch.testing.assert_close(task.X_train.mean(0), torch.zeros(inputs), atol=1e-5, rtol=0)
    assert float((task.y_train**2).mean()) == pytest.approx(1.0, rel=1e-5)  # targets / training RMS

    again = factory(seed=0, data_dir=tmp_path, n_train=25, config=small_config(), **SIZES)
    torch.testing.assert_close(again.X_train, task.X_train)
    other = factory(seed=1, data_dir=tmp_path, n_train=25, config=small_config(), **SIZES)
    torch.testing.assert_close(other.y_test * other.target_scale, task.y_test * task.target_scale)  # same test set
    assert not torch.equal(other.y_train, task.y_train)  # the seed picks the training subset
    bigger = factory(seed=0, data_dir=tmp_path, n_train=60, config=small_config(), **SIZES)
    assert bigger.X_train.shape[0] == 60
    torch.testing.assert_close(bigger.y_test * bigger.target_scale, task.y_test * task.target_scale)


def test_noise_is_one_percent(tmp_path):
    config = small_config()
    data = navier_stokes_data(50, config, data_dir=tmp_path)
    from topogrow.data.pde.navier_stokes import NOISE_LEVEL, _noisy

    clean = data["omegaT_sensors"].astype(np.float64)
    noisy = _noisy(clean, NOISE_LEVEL, seed=1)
    ratio = np.linalg.norm(noisy - clean, axis=1) / np.linalg.norm(clean, axis=1)
    assert 0.005 < ratio.mean() < 0.015


def test_default_config_is_the_documented_one():
    config = NavierStokesConfig()
    assert (config.grid, config.viscosity, config.coarse) == (64, 1e-3, 16)
    assert (config.vorticity_sensors, config.velocity_sensors) == (64, 40)
    vorticity, velocity = config.sensors()
    assert len(np.unique(vorticity)) == 64 and len(np.unique(velocity)) == 40
