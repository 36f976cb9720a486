"""Both topological derivative results satisfy :class:`topogrow.core.TopologicalDerivativeResult`.

- closed form (MLP and CNN): ``direction`` is ``rows(l, 1.0, ...)`` bit for bit, ``curvature``
  is the sum of the chosen block eigenvalues (and ``phi^T Q phi`` of that direction), slope and
  linear form are 0;
- ``improvable`` agrees with the growth loop's rule "stop when max mu_l <= tolerance and no
  location is first order", for tolerances on either side of max mu_l, and a first-order
  matrix-free location (a Linear block) is improvable whatever the tolerance;
- code written against the protocol alone gives each result's own predicted change.
"""

import pytest
import torch
from torch import nn

from topogrow import ResidualMLP, topological_derivative
from topogrow.core import (
    MatrixFreeTopologicalDerivative,
    TopologicalDerivative,
    TopologicalDerivativeResult,
    matrix_free_topological_derivative,
)
from topogrow.nn.blocks import make_block
from topogrow.nn.cnn import ResidualCNN

# torch.func imports torch internals that still call torch.jit.script
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")

CHOICES = [(1, None), (3, None), (None, 0.3), (None, 0.0)]  # (k, rel_threshold)


def regression(n_samples: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(300 + seed)
    x = torch.randn(n_samples, 4, generator=g, dtype=torch.float64)
    y = (
        torch.sin(2 * x[:, :1])
        + x[:, 1:2] * x[:, 2:3]
        + 0.05 * torch.randn(n_samples, 1, generator=g, dtype=torch.float64)
    )
    return x, y


def mlp(seed: int = 0) -> ResidualMLP:
    torch.manual_seed(seed)
    return ResidualMLP(4, 5, 2, 1).double()


def inline_rule(td, tolerance: float) -> bool:
    """The growth loop's stop test before ``improvable`` (grower.py), negated."""
    first_order = isinstance(td, MatrixFreeTopologicalDerivative) and bool(td.first_order_locations)
    return not (float(td.eigenvalues.max()) <= tolerance and not first_order)


def expected_curvature(values: torch.Tensor, k, rel_threshold) -> float:
    """Sum of the chosen eigenvalues, largest first (as the growth strategies computed it)."""
    ordered = values.sort(descending=True).values
    if k is None:
        ordered = ordered[: max(int(((ordered > 0) & (ordered >= rel_threshold * ordered[0])).sum()), 1)]
    else:
        ordered = ordered[:k]
    return float(ordered.sum())


def generic_prediction(td: TopologicalDerivativeResult, epsilon: float) -> tuple[int, float]:
    """What a strategy does with any result: the best location and the model of the change."""
    location = td.best_location
    return location, -epsilon * td.slope(location) - 0.5 * epsilon**2 * td.curvature(location)


@pytest.fixture(scope="module")
def closed_mlp() -> TopologicalDerivative:
    x, y = regression()
    return topological_derivative(mlp(), (x, y), "mse", batch_size=24, keep_blocks=True)


@pytest.fixture(scope="module")
def closed_cnn() -> TopologicalDerivative:
    g = torch.Generator().manual_seed(7)
    x, y = torch.randn(20, 1, 6, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (20,), generator=g)
    torch.manual_seed(1)
    model = ResidualCNN(1, (3, 4), (1, 1), 3).double()
    return topological_derivative(model, (x, y), "cross_entropy", batch_size=8, keep_blocks=True)


@pytest.fixture(scope="module")
def second_order() -> MatrixFreeTopologicalDerivative:
    x, y = regression()
    model = mlp()
    return matrix_free_topological_derivative(
        model, (x, y), "mse", lambda loc: make_block("gelu-mlp", model, loc), k=3, keep_operators=True
    )


@pytest.fixture(scope="module")
def first_order() -> MatrixFreeTopologicalDerivative:
    x, y = regression()
    model = mlp()
    return matrix_free_topological_derivative(model, (x, y), "mse", lambda: nn.Linear(5, 5), k=2)


@pytest.mark.parametrize("name", ["closed_mlp", "closed_cnn", "second_order", "first_order"])
def test_every_result_satisfies_the_protocol(name, request):
    td = request.getfixturevalue(name)
    assert isinstance(td, TopologicalDerivativeResult)
    assert td.eigenvalues.shape == (td.n_locations,)
    assert 0 <= td.best_location < td.n_locations
    assert td.n_samples > 0 and td.loss > 0


def test_other_objects_do_not_satisfy_the_protocol():
    assert not isinstance(object(), TopologicalDerivativeResult)
    assert not isinstance(mlp(), TopologicalDerivativeResult)


@pytest.mark.parametrize("name", ["closed_mlp", "closed_cnn"])
def test_closed_form_direction_is_rows_at_unit_epsilon_and_curvature_the_chosen_eigenvalues(name, request):
    td = request.getfixturevalue(name)
    for location in range(td.n_locations):
        for k, rel_threshold in CHOICES:
            if k is not None and k > td.block_eigenvalues[location].numel():
                continue
            direction = td.direction(location, k, rel_threshold)
            rows = td.rows(location, 1.0, k, rel_threshold)
            assert direction.dtype == rows.dtype and torch.equal(direction, rows)
            chosen = td.neurons(location, k, rel_threshold)
            assert int((direction.abs().sum(dim=1) > 0).sum()) == chosen.numel()  # only the chosen rows
            curvature = td.curvature(location, k, rel_threshold)
            assert isinstance(curvature, float)
            assert curvature == expected_curvature(td.block_eigenvalues[location], k, rel_threshold)
            assert curvature == float(td.block_eigenvalues[location][chosen].sum())
            # the blocks are per neuron and the rows unit eigenvectors: phi^T Q phi is that sum
            assert td.quadratic_form(location, direction) == pytest.approx(curvature, rel=1e-9, abs=1e-12)
            assert td.slope(location) == 0.0 and td.linear_form(location, direction) == 0.0
            epsilon = 0.3
            assert td.predicted_change(location, epsilon, k, rel_threshold) == pytest.approx(
                -0.5 * epsilon**2 * curvature, rel=1e-12
            )
    assert td.direction(0).shape == td.block_eigenvectors[0].shape


def test_closed_form_defaults_are_the_top_neuron(closed_mlp):
    location = closed_mlp.best_location
    assert torch.equal(closed_mlp.direction(location), closed_mlp.rows(location, 1.0))
    assert closed_mlp.curvature(location) == float(closed_mlp.block_eigenvalues[location].max())
    assert closed_mlp.curvature(location) == float(closed_mlp.eigenvalues[location])


def test_closed_form_checks_the_location(closed_mlp):
    for method in (closed_mlp.slope, closed_mlp.direction, closed_mlp.curvature):
        with pytest.raises(ValueError, match="location"):
            method(closed_mlp.n_locations)
    with pytest.raises(ValueError, match="location"):
        closed_mlp.linear_form(-1, torch.zeros(5, 6))


@pytest.mark.parametrize("name", ["closed_mlp", "closed_cnn", "second_order"])
def test_improvable_agrees_with_the_growth_loop_rule(name, request):
    td = request.getfixturevalue(name)
    top = float(td.eigenvalues.max())
    assert top > 0
    for tolerance in (0.0, 0.5 * top, top * (1 - 1e-9), top, top * (1 + 1e-9), 2 * top, -1.0):
        assert td.improvable(tolerance) is inline_rule(td, tolerance), tolerance
    assert td.improvable(0.5 * top) and td.improvable()
    assert not td.improvable(top) and not td.improvable(2 * top)


def test_a_first_order_location_is_always_improvable(first_order):
    assert first_order.first_order_locations
    top = float(first_order.eigenvalues.max())  # a Linear block is linear in theta: Q = 0
    assert abs(top) < 1e-8
    for tolerance in (0.0, 1.0, 1e6):
        assert first_order.improvable(tolerance)
        assert first_order.improvable(tolerance) is inline_rule(first_order, tolerance)


@pytest.mark.parametrize("name", ["second_order", "first_order"])
def test_matrix_free_direction_is_rows_at_unit_epsilon(name, request):
    td = request.getfixturevalue(name)
    for location in range(td.n_locations):
        assert torch.equal(td.direction(location), td.rows(location, 1.0))
        assert torch.equal(td.direction(location, 2), td.rows(location, 1.0, 2))


def test_the_protocol_alone_gives_each_result_its_predicted_change(closed_mlp, second_order, first_order):
    epsilon = 0.2
    for td in (closed_mlp, second_order, first_order):
        location, change = generic_prediction(td, epsilon)
        assert location == td.best_location
        assert change == pytest.approx(td.predicted_change(location, epsilon), rel=1e-12)
        assert change < 0
    location = first_order.best_location
    assert first_order.slope(location) > 0 and first_order.curvature(location) == 0.0
    assert first_order.linear_form(location, first_order.direction(location)) == pytest.approx(
        first_order.slope(location), rel=1e-12
    )
    location = second_order.best_location
    assert second_order.slope(location) == 0.0
    assert second_order.quadratic_form(location, second_order.direction(location)) == pytest.approx(
        second_order.curvature(location), rel=1e-6
    )
