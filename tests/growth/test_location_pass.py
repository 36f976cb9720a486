"""Strategies that need only the location get the budgeted location-only pass; ``td`` does not."""

import torch

from topogrow import ResidualMLP
from topogrow.growth import GrowthConfig
from topogrow.growth.config import LOCATION_BUDGET
from topogrow.growth.context import StageContext
from topogrow.growth.strategies import make_strategy


def _context(strategy: str, samples: int = 600, **config):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(samples, 5, generator=g)
    y = torch.sin(x[:, :2]) + 0.1 * torch.randn(samples, 2, generator=g)
    torch.manual_seed(0)
    model = ResidualMLP(5, 12, 2, 2)
    cfg = GrowthConfig(strategy=strategy, seed=0, **config)
    return StageContext(model, (x, y), "mse", config=cfg, strategy=make_strategy(strategy))


def test_small_where_decides_from_the_location_only_pass_within_its_budget():
    context = _context("small-where")
    proposal = context.proposal
    derivative = context.topological_derivative(location_only=True)
    assert derivative.solvers == ("lanczos",) * 3
    assert proposal.location == derivative.best_location
    assert derivative.n_samples < 600  # the budget of LOCATION_BUDGET epochs reads a subset
    assert context.derivative_flops == derivative.flops > 0
    assert context.record is None or context.record.td_samples == derivative.n_samples
    assert 0 < LOCATION_BUDGET <= 1


def test_td_where_predicts_its_random_layer_from_the_kept_samples():
    context = _context("td-where")
    proposal = context.proposal
    derivative = context.topological_derivative(location_only=True)
    assert derivative.solvers[0] == "lanczos"
    assert proposal.curvature == derivative.quadratic_form(proposal.location, proposal.direction)


def test_td_keeps_the_exact_pass_and_a_full_pass_serves_a_location_request():
    context = _context("td", td_samples="all", line_search="grid")
    assert context.proposal.location == context.topological_derivative().best_location
    full = context.topological_derivative()
    assert set(full.solvers) == {"blocks"} and full.flops is None
    assert context.derivative_flops is None  # the counter's model of the block pass applies
    assert context.topological_derivative(location_only=True) is full
