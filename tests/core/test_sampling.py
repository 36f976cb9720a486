"""A topological-derivative pass that stops when the decision is settled (core/sampling.py)."""

import pytest
import torch
from tests.core.mlp_problems import make_data, make_model
from torch.nn import functional as F

from topogrow.core import Conv2d, hamiltonian_blocks, states_and_adjoints, topological_derivative
from topogrow.core.sampling import RunningValues, Sampling, sample_positions, settled


def _pass(model, data, rule, seed=0):
    return topological_derivative(model, data, "mse", sampling=rule, generator=torch.Generator().manual_seed(seed))


def test_a_sampled_pass_equals_the_full_pass_over_the_samples_it_read():
    x, y = make_data("mse", n_samples=3000, seed=1)
    model = make_model(6, 2, "mse")
    result = _pass(model, (x, y), Sampling(rel_error=0.5, min_samples=256, batch_size=128), seed=7)
    assert 256 <= result.n_samples < 3000  # it stopped early
    read = torch.randperm(3000, generator=torch.Generator().manual_seed(7))[: result.n_samples]
    full = topological_derivative(model, (x[read], y[read]), "mse")
    for sampled, exact in zip(result.block_eigenvalues, full.block_eigenvalues, strict=True):
        torch.testing.assert_close(sampled, exact, rtol=1e-10, atol=1e-12)
    assert result.loss == pytest.approx(full.loss, rel=1e-12)
    assert result.standard_errors is not None and all(e > 0 for e in result.standard_errors)


def test_a_rule_that_never_settles_reads_every_sample_and_the_cap_stops_it():
    x, y = make_data("mse", n_samples=700, seed=2)
    model = make_model(5, 2, "mse")
    never = Sampling(rel_error=1e-12, min_samples=64, batch_size=100)
    result = _pass(model, (x, y), never)
    full = topological_derivative(model, (x, y), "mse")
    assert result.n_samples == 700
    torch.testing.assert_close(result.eigenvalues, full.eigenvalues, rtol=1e-10, atol=1e-12)
    capped = _pass(model, (x, y), Sampling(rel_error=1e-12, min_samples=64, max_samples=250, batch_size=100))
    assert capped.n_samples == 300  # the mini-batch that crossed the cap is the last
    assert full.standard_errors is None


def test_the_standard_errors_are_those_of_the_per_sample_quadratic_forms():
    """The reported standard error of mu_l is std(q_s) / sqrt(S), q_s = sigma'' p_c (v . u)^2."""
    x, y = make_data("mse", n_samples=4000, seed=3)
    model = make_model(4, 1, "mse")
    result = _pass(model, (x, y), Sampling(rel_error=1e-12, min_samples=64, batch_size=500))
    full = topological_derivative(model, (x, y), "mse")
    _, states, adjoints = states_and_adjoints(model, x, y, F.mse_loss, 4000)
    for location in range(full.n_locations):
        channel = int(full.block_eigenvalues[location].argmax())
        v = full.block_eigenvectors[location][channel]
        u = torch.cat([states[location], torch.ones(4000, 1, dtype=x.dtype)], dim=1)
        q = model.activation_curvature * adjoints[location][:, channel] * (u @ v) ** 2
        assert q.mean().item() == pytest.approx(full.eigenvalues[location].item(), rel=1e-9)
        # estimated from the last 2000 samples with the previous check's direction: agrees to sampling error
        assert result.standard_errors[location] == pytest.approx(q.std().item() / 4000**0.5, rel=0.25)


def test_running_values_give_the_covariance_of_all_rows():
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(300, 3, generator=g, dtype=torch.float64) * torch.tensor([1.0, 5.0, 0.1], dtype=torch.float64)
    running = RunningValues()
    for piece in rows.split(37):
        running.add(piece)
    torch.testing.assert_close(running.mean, rows.mean(dim=0))
    torch.testing.assert_close(running.covariance(), torch.cov(rows.T))
    assert running.count == 300


def _values(means, spread, count=400, seed=0):
    """RunningValues of ``count`` rows around ``means`` with a shared noise (paired) plus ``spread``."""
    g = torch.Generator().manual_seed(seed)
    shared = torch.randn(count, 1, generator=g, dtype=torch.float64) * 10
    rows = torch.tensor(means, dtype=torch.float64) + shared + spread * torch.randn(count, len(means), generator=g)
    running = RunningValues()
    running.add(rows)
    return running


def test_settled_asks_for_a_clear_paired_margin_a_stable_direction_and_agreement():
    rule = Sampling(rel_error=0.1)
    eigenvalues = torch.tensor([1.0, 2.0, 5.0], dtype=torch.float64)
    clear = _values([1.0, 2.0, 5.0], spread=0.5)
    assert settled(eigenvalues, clear, cosine=0.99, rule=rule)  # the shared noise cancels in the differences
    assert not settled(eigenvalues, clear, cosine=0.5, rule=rule)  # the direction still moves
    assert not settled(torch.tensor([9.0, 2.0, 5.0], dtype=torch.float64), clear, 0.99, rule)  # they disagree
    close = _values([1.0, 4.9, 5.0], spread=3.0)
    assert not settled(eigenvalues, close, cosine=0.99, rule=rule)
    one = RunningValues()
    one.add(torch.ones(1, 3, dtype=torch.float64))
    assert not settled(eigenvalues, one, cosine=1.0, rule=rule)  # no variance yet


def test_sampled_positions_give_unbiased_blocks():
    g = torch.Generator().manual_seed(0)
    state = torch.randn(3, 2, 4, 3, generator=g, dtype=torch.float64)  # 12 pixels
    adjoint = torch.randn(3, 2, 4, 3, generator=g, dtype=torch.float64)
    kind = Conv2d()
    exact = hamiltonian_blocks(kind.patches(state), kind.adjoint_rows(adjoint), 1.0)
    draws = [hamiltonian_blocks(*sample_positions(kind, state, adjoint, 3, g), 1.0) for _ in range(4000)]
    torch.testing.assert_close(torch.stack(draws).mean(dim=0), exact, rtol=0.0, atol=0.1 * exact.abs().max().item())
    every, rows = sample_positions(kind, state, adjoint, 12, g)
    torch.testing.assert_close(every, kind.patches(state))
    torch.testing.assert_close(rows, kind.adjoint_rows(adjoint))


@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_convolution_patches_at_positions_are_those_of_the_unfolded_state(kernel_size):
    g = torch.Generator().manual_seed(kernel_size)
    state = torch.randn(4, 3, 6, 5, generator=g)
    kind = Conv2d(kernel_size)
    index = torch.randint(30, (4, 7), generator=g)
    full = kind.patches(state)
    torch.testing.assert_close(
        kind.patches_at(state, index), full.gather(1, index[:, :, None].expand(-1, -1, full.shape[-1]))
    )


def test_sampling_refuses_bad_settings_and_a_reduce():
    with pytest.raises(ValueError, match="rel_error"):
        Sampling(rel_error=0.0)
    with pytest.raises(ValueError, match="max_samples"):
        Sampling(max_samples=0)
    x, y = make_data("mse")
    with pytest.raises(ValueError, match="reduce"):
        topological_derivative(make_model(3, 1, "mse"), (x, y), "mse", sampling=Sampling(), reduce=lambda t: t)
