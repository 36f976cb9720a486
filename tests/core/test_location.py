"""The location-only pass (``core/location.py``) against its dense twin: ``eigh`` of the blocks."""

import math

import pytest
import torch
from mlp_problems import make_data, make_model

from topogrow import ResidualMLP
from topogrow.core import hamiltonian_blocks, location_derivative, quadratic_form, topological_derivative
from topogrow.core.location import EPOCH_FORWARDS, block_eigenvalue_estimates, location_flops, positive_start


def _random_problem(n=6, m=9, samples=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    patches = torch.randn(samples, m, generator=g, dtype=torch.float64)
    patches[:, -1] = 1.0  # the augmented 1
    rows = torch.randn(samples, n, generator=g, dtype=torch.float64)
    return patches, rows


def _dense_top(patches, rows, curvature):
    blocks = hamiltonian_blocks(patches[:, None], rows[:, None], curvature)  # (n, m, m)
    return torch.linalg.eigvalsh(blocks)[:, -1], blocks


def test_the_estimates_are_the_dense_eigenvalues_after_m_steps():
    patches, rows = _random_problem()
    exact, _ = _dense_top(patches, rows, 0.5 / patches.shape[0])
    estimate = block_eigenvalue_estimates(patches, rows, 0.5 / patches.shape[0], steps=patches.shape[1])
    torch.testing.assert_close(estimate.values, exact, rtol=1e-10, atol=1e-12)


def test_few_steps_give_lower_bounds_that_tighten_and_unit_ritz_vectors():
    patches, rows = _random_problem(seed=1)
    curvature = 1.0 / patches.shape[0]
    exact, blocks = _dense_top(patches, rows, curvature)
    previous = None
    for steps in (1, 2, 3, 5):
        estimate = block_eigenvalue_estimates(patches, rows, curvature, steps=steps)
        assert estimate.products == steps
        assert (estimate.values <= exact + 1e-12).all()  # Ritz values never exceed the eigenvalue
        if previous is not None:
            assert (estimate.values >= previous - 1e-12).all()
        previous = estimate.values
        torch.testing.assert_close(estimate.vectors.norm(dim=1), torch.ones(exact.shape[0], dtype=torch.float64))
        # each value is the Rayleigh quotient of its vector in its own block
        quotients = torch.einsum("ci,cij,cj->c", estimate.vectors, blocks, estimate.vectors)
        torch.testing.assert_close(estimate.values, quotients)


def test_the_start_is_the_centroid_of_the_positively_weighted_patches():
    patches, rows = _random_problem(n=3, m=4, samples=5)
    start = positive_start(patches, rows)
    for c in range(3):
        expected = sum(max(float(rows[i, c]), 0.0) * patches[i] for i in range(5))
        torch.testing.assert_close(start[c], expected)


def test_a_block_with_no_positive_adjoint_gets_a_drawn_start_and_a_nonpositive_value():
    patches, rows = _random_problem(n=2, m=4, samples=50)
    rows[:, 0] = -rows[:, 0].abs()  # block 0 is negative semidefinite
    estimate = block_eigenvalue_estimates(patches, rows, 1.0, steps=4, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(estimate.values).all()
    assert float(estimate.values[0]) <= 1e-12


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_every_sample_and_every_step_give_the_block_solver_exactly(loss):
    x, y = make_data(loss, n_samples=96)
    model = make_model(5, 2, loss)
    blocks = topological_derivative(model, (x, y), loss, solver="blocks")
    estimate = location_derivative(model, (x, y), loss, steps=6, batch_size=32)
    assert estimate.n_samples == 96
    assert estimate.solvers == ("lanczos",) * 3
    for ours, theirs in zip(estimate.block_eigenvalues, blocks.block_eigenvalues, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-12)
    assert estimate.best_location == blocks.best_location
    assert math.isclose(estimate.loss, blocks.loss, rel_tol=1e-12)


def _trained(width=16, depth=3, samples=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, 6, generator=g, dtype=torch.float64)
    y = torch.sin(x @ torch.randn(6, 2, generator=g, dtype=torch.float64)) + 0.1 * x[:, :2] ** 2
    torch.manual_seed(seed)
    model = ResidualMLP(6, width, depth, 2).double()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(30):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
    return model, (x, y)


@pytest.mark.parametrize("seed", range(3))
def test_a_few_steps_on_every_sample_keep_the_dense_decision(seed):
    model, data = _trained(seed=seed)
    dense = topological_derivative(model, data, "mse", solver="blocks")
    errors = []
    for steps in (2, 6):
        estimate = location_derivative(model, data, "mse", steps=steps)
        assert estimate.products == (steps,) * dense.n_locations
        relative = (dense.eigenvalues - estimate.eigenvalues) / dense.eigenvalues.abs()
        assert (relative >= -1e-12).all()  # from below
        errors.append(float(relative.max()))
    assert estimate.best_location == dense.best_location
    assert errors[1] < 0.01 and errors[1] <= errors[0]  # mu_l to 1 % at 6 steps of 17


def test_the_budget_bounds_the_flops_and_the_flops_add_up():
    model, data = _trained(samples=1024)
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(data[0][:1])
    epoch = EPOCH_FORWARDS * counter.get_total_flops() * 1024
    estimate = location_derivative(model, data, "mse", budget=0.5, generator=torch.Generator().manual_seed(0))
    assert 32 <= estimate.n_samples < 1024
    assert estimate.flops <= 0.5 * epoch * 1.01  # the last products may differ by rounding only
    everything = location_derivative(model, data, "mse")
    assert everything.n_samples == 1024 and everything.flops > estimate.flops
    # the pass's FLOPs: the adjoint pass per sample plus the products, as location_flops counts them
    per_location = sum(location_flops(16, 17, 1024, 2) for _ in range(4))
    assert everything.flops > per_location
    assert everything.flops < per_location + 3 * epoch / EPOCH_FORWARDS * 1.1


def test_max_samples_and_the_generator_choose_the_subset():
    model, data = _trained(samples=300)
    first = location_derivative(model, data, "mse", max_samples=100, generator=torch.Generator().manual_seed(1))
    again = location_derivative(model, data, "mse", max_samples=100, generator=torch.Generator().manual_seed(1))
    other = location_derivative(model, data, "mse", max_samples=100, generator=torch.Generator().manual_seed(2))
    assert first.n_samples == 100
    torch.testing.assert_close(first.eigenvalues, again.eigenvalues)
    assert not torch.equal(first.eigenvalues, other.eigenvalues)


def test_kept_samples_give_the_quadratic_form_of_the_blocks():
    model, data = _trained(samples=200)
    blocks = topological_derivative(model, data, "mse", keep_blocks=True)
    estimate = location_derivative(model, data, "mse", keep_samples=True)
    rows = torch.randn(16, 17, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for location in range(blocks.n_locations):
        expected = float(quadratic_form(blocks.blocks[location], rows))
        assert math.isclose(estimate.quadratic_form(location, rows), expected, rel_tol=1e-9)
    with pytest.raises(ValueError, match="needs the blocks"):
        location_derivative(model, data, "mse").quadratic_form(0, rows)


def test_refuses_a_model_without_states_and_a_bad_budget():
    with pytest.raises(TypeError, match="growable model"):
        location_derivative(torch.nn.Linear(2, 2), (torch.zeros(4, 2), torch.zeros(4, 2)))
    model, data = _trained(samples=64)
    with pytest.raises(ValueError, match="budget"):
        location_derivative(model, data, "mse", budget=0.0)
