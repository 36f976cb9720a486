"""The heat-conductivity generator (topogrow.data.pde.diffusion, topogrow.data.pde.heat): solver, random
field, data, cache, tasks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from topogrow.data.pde import heat
from topogrow.data.pde.diffusion import (
    cell_centres,
    coarsen,
    diffusion_matrix,
    kl_basis,
    observation_matrix,
    sensor_locations,
    solve_diffusion,
)
from topogrow.data.pde.heat import cache_path, generate_heat_dataset, make_heat_inverse_task, make_heat_map_task
from topogrow.data.task import relative_l2_error

SMALL = {"n_samples": 40, "grid": 16, "n_modes": 12, "length_scale": 0.25, "sensors": 5}


def manufactured(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """m, f and the exact u at the cell centres for u = e^x sin(pi x) sin(pi y), m = sin(2 pi x) cos(pi y)/2 + 0.3 x.

    f = -div(e^m grad u) = -e^m (lap u + grad m . grad u), derived by hand.
    """
    x = cell_centres(n)
    X, Y = np.meshgrid(x, x, indexing="ij")
    pi, ex = np.pi, np.exp(X)
    m = 0.5 * np.sin(2 * pi * X) * np.cos(pi * Y) + 0.3 * X
    m_x = pi * np.cos(2 * pi * X) * np.cos(pi * Y) + 0.3
    m_y = -0.5 * pi * np.sin(2 * pi * X) * np.sin(pi * Y)
    u = ex * np.sin(pi * X) * np.sin(pi * Y)
    u_x = ex * (pi * np.cos(pi * X) + np.sin(pi * X)) * np.sin(pi * Y)
    u_y = pi * ex * np.sin(pi * X) * np.cos(pi * Y)
    u_xx = ex * (2 * pi * np.cos(pi * X) + (1 - pi**2) * np.sin(pi * X)) * np.sin(pi * Y)
    u_yy = -(pi**2) * u
    f = -np.exp(m) * (u_xx + u_yy + m_x * u_x + m_y * u_y)
    return m, f, u


@pytest.mark.parametrize("average", ["harmonic", "arithmetic"])
def test_manufactured_solution_converges_at_second_order(average):
    errors = []
    for n in (16, 32, 64):
        m, f, u = manufactured(n)
        errors.append(np.abs(solve_diffusion(m, f, average) - u).max())
    rates = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert errors[-1] < 2e-3
    assert np.all((rates > 1.8) & (rates < 2.3)), (errors, rates)


def test_matrix_is_symmetric_positive_definite_and_validated():
    m = np.random.default_rng(0).standard_normal((8, 8))
    matrix = diffusion_matrix(m).toarray()
    assert matrix.shape == (64, 64)
    np.testing.assert_allclose(matrix, matrix.T)
    assert np.linalg.eigvalsh(matrix).min() > 0
    with pytest.raises(ValueError, match="square"):
        diffusion_matrix(np.zeros((4, 5)))
    with pytest.raises(ValueError, match="NaN"):
        diffusion_matrix(np.full((4, 4), np.nan))
    with pytest.raises(ValueError, match="average"):
        diffusion_matrix(np.zeros((4, 4)), average="geometric")


def test_observations_interpolate_the_solution():
    points = sensor_locations(7)
    assert points.shape == (49, 2) and points.min() == pytest.approx(1 / 8) and points.max() == pytest.approx(7 / 8)
    n = 64
    x = cell_centres(n)
    X, Y = np.meshgrid(x, x, indexing="ij")
    u = np.sin(np.pi * X) * np.sin(np.pi * Y)
    observed = observation_matrix(n, points) @ u.ravel()
    exact = np.sin(np.pi * points[:, 0]) * np.sin(np.pi * points[:, 1])
    np.testing.assert_allclose(observed, exact, atol=2e-3)
    # next to the wall the missing neighbour is the wall value u = 0
    near_wall = observation_matrix(4, np.array([[0.05, 0.5]])).toarray()
    assert near_wall.sum() == pytest.approx(0.4)


def test_kl_modes_orthonormal_variance_and_correlation():
    n, ell = 16, 0.3
    basis = kl_basis(n, n_modes=24, length_scale=ell, sigma=1.5, mean=0.5)
    gram = np.einsum("kij,lij->kl", basis.modes, basis.modes) / n**2
    np.testing.assert_allclose(gram, np.eye(24), atol=1e-10)
    assert np.all(np.diff(basis.eigenvalues) <= 1e-15)
    assert 0.99 < basis.captured_variance <= 1.0
    # with (almost) all the variance kept the pointwise variance is sigma^2 everywhere
    np.testing.assert_allclose(basis.pointwise_variance(), 1.5**2, rtol=0.05)

    xi = np.random.default_rng(1).standard_normal((4000, 24))
    fields = basis.field(xi)
    assert fields.shape == (4000, n, n)
    np.testing.assert_allclose(fields.mean(axis=0), 0.5, atol=0.15)
    np.testing.assert_allclose(fields.var(axis=0), basis.pointwise_variance(), rtol=0.1)
    # correlation with the centre-left cell along x: close to the kernel and decreasing with distance
    x = cell_centres(n)
    row = fields[:, :, n // 2]
    correlation = np.array([np.corrcoef(row[:, 2], row[:, j])[0, 1] for j in range(2, n)])
    kernel = np.exp(-((x[2:] - x[2]) ** 2) / (2 * ell**2))
    np.testing.assert_allclose(correlation, kernel, atol=0.08)
    assert np.all(np.diff(correlation[:8]) < 0)

    # a shorter correlation length keeps less variance with the same number of modes
    assert kl_basis(n, 24, 0.1).captured_variance < kl_basis(n, 24, 0.3).captured_variance


def test_seed_reproduces_the_data_and_noise_is_one_percent():
    first = generate_heat_dataset(seed=3, cache=False, **SMALL)
    again = generate_heat_dataset(seed=3, cache=False, **SMALL)
    other = generate_heat_dataset(seed=4, cache=False, **SMALL)
    for name in ("xi", "m", "observations", "clean", "noise_std"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
        assert not np.array_equal(getattr(first, name), getattr(other, name))
    assert first.xi.shape == (40, 12) and first.m.shape == (40, 16, 16) and first.observations.shape == (40, 25)
    # the first samples do not depend on how many are generated
    fewer = generate_heat_dataset(seed=3, cache=False, **{**SMALL, "n_samples": 10})
    np.testing.assert_array_equal(fewer.observations, first.observations[:10])
    # noise: 1% of each sample's RMS observation
    rms = np.sqrt((first.clean**2).mean(axis=1))
    np.testing.assert_allclose(first.noise_std, 0.01 * rms)
    standardised = (first.observations - first.clean) / first.noise_std[:, None]
    assert 0.9 < standardised.std() < 1.1
    # the data are a solve of the field they report
    u = solve_diffusion(first.m[0].astype(np.float64))
    np.testing.assert_allclose(observation_matrix(16, first.sensors) @ u.ravel(), first.clean[0], rtol=1e-5)


def test_cache_round_trip_and_corrupt_file(tmp_path, monkeypatch):
    data = generate_heat_dataset(seed=5, data_dir=tmp_path, **SMALL)
    path = cache_path(data.params, tmp_path)
    assert path.is_file() and path.parent == tmp_path / "pde" and path.name.startswith("heat-")
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary files left behind
    assert path.stat().st_mode & 0o777 == 0o644

    def no_solving(*args, **kwargs):
        raise AssertionError("should have loaded the cache")

    with monkeypatch.context() as patch:
        patch.setattr(heat, "solve_diffusion", no_solving)
        loaded = generate_heat_dataset(seed=5, data_dir=tmp_path, **SMALL)
    for name in ("xi", "m", "observations", "clean", "noise_std", "sensors"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(data, name))
    assert loaded.params == data.params
    # other parameters: another file
    assert cache_path({**data.params, "length_scale": 0.1}, tmp_path) != path

    for garbage in (b"not a zip file", path.read_bytes()[:100]):
        path.write_bytes(garbage)
        with pytest.warns(UserWarning, match="unreadable heat data cache"):
            regenerated = generate_heat_dataset(seed=5, data_dir=tmp_path, **SMALL)
        np.testing.assert_array_equal(regenerated.observations, data.observations)
    # the regenerated file is valid again
    with monkeypatch.context() as patch:
        patch.setattr(heat, "solve_diffusion", no_solving)
        generate_heat_dataset(seed=5, data_dir=tmp_path, **SMALL)

    # an unwritable cache directory: a warning, and the data all the same
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.warns(UserWarning, match="could not cache"):
        uncached = generate_heat_dataset(seed=5, data_dir=blocker, **SMALL)
    np.testing.assert_array_equal(uncached.observations, data.observations)

    # the environment variable is the default data directory
    monkeypatch.setenv("TOPOGROW_DATA_DIR", str(tmp_path / "env"))
    generate_heat_dataset(seed=5, **{**SMALL, "n_samples": 3})
    assert len(list((tmp_path / "env" / "pde").glob("heat-*.npz"))) == 1


def test_relative_l2_error():
    target = np.array([[3.0, 4.0], [1.0, 0.0]])
    assert relative_l2_error(np.zeros_like(target), target) == pytest.approx(1.0)
    assert relative_l2_error(target, target) == 0.0
    assert relative_l2_error(target * 1.5, target) == pytest.approx(0.5)
    assert coarsen(np.arange(16.0).reshape(4, 4), 2).tolist() == [[2.5, 4.5], [10.5, 12.5]]


def zero_model(in_features: int, out_features: int) -> torch.nn.Module:
    model = torch.nn.Linear(in_features, out_features)
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.zeros_(model.bias)
    return model


def test_task_builders(tmp_path):
    dataset = {**SMALL, "n_samples": 60}
    forward = make_heat_map_task(seed=0, data_dir=tmp_path, n_train=30, **dataset)
    assert forward.kind == "regression" and forward.metric_name == "test MSE"
    assert forward.X_train.shape == (30, 12) and forward.y_train.shape == (30, 25) and forward.out_features == 25
    assert forward.X_test.shape == (12, 12) and forward.y_val.shape == (10, 25)
    assert forward.X_train.dtype == torch.float32
    # the full training split is standardised (inputs and targets)
    full = make_heat_map_task(seed=0, data_dir=tmp_path, **dataset)
    assert full.X_train.shape[0] == 38
    torch.testing.assert_close(full.y_train.mean(0), torch.zeros(25), atol=1e-5, rtol=0)
    torch.testing.assert_close(full.y_train.std(0, unbiased=False), torch.ones(25), atol=1e-4, rtol=0)
    expected = float((full.y_test.double() ** 2).mean())
    assert full.score(zero_model(12, 25)) == pytest.approx(expected, rel=1e-6)
    data = generate_heat_dataset(data_dir=tmp_path, seed=heat.HEAT_DATA_SEED, **dataset)
    physical = full.y_test * full.target_std + full.target_mean
    assert np.isin(np.round(physical.numpy()[:, 0], 6), np.round(data.observations[:, 0].astype(np.float32), 6)).all()

    inverse = make_heat_inverse_task(seed=1, data_dir=tmp_path, n_train=20, coarse=8, **dataset)
    assert inverse.metric_name == "test relative L2 error"
    assert inverse.X_train.shape == (20, 25) and inverse.y_train.shape == (20, 64) and inverse.out_features == 64
    assert inverse.score(zero_model(25, 64)) == pytest.approx(1.0)
    assert inverse.flattened().metric_name == "test relative L2 error"
    assert not torch.equal(
        inverse.y_test, make_heat_inverse_task(seed=2, data_dir=tmp_path, coarse=8, **dataset).y_test
    )
    with pytest.raises(ValueError, match="n_train must be at most 38"):
        make_heat_inverse_task(seed=0, data_dir=tmp_path, n_train=39, coarse=8, **dataset)


def test_registered_factories(tmp_path, monkeypatch):
    monkeypatch.setattr(heat, "HEAT_TASK_SAMPLES", 50)
    monkeypatch.setenv("TOPOGROW_DATA_DIR", str(tmp_path))
    forward = heat.heat_map(seed=0, n_train=20)
    assert forward.name == "heat-map"
    assert forward.X_train.shape == (20, 32) and forward.y_train.shape == (20, 49)
    inverse = heat.heat_inverse(seed=0, data_dir=None, n_train=None)
    assert inverse.name == "heat-inverse"
    assert inverse.X_train.shape == (32, 49) and inverse.y_train.shape == (32, 256)
    assert inverse.score(zero_model(49, 256)) == pytest.approx(1.0)
    assert len(list((tmp_path / "pde").glob("heat-*.npz"))) == 1  # both tasks share one data set
