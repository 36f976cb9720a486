"""FLOP accounting of a growth run (counted from shapes, not timed), against hand counts."""

import pytest
import torch

import helpers
from topogrow import Grower, ResidualMLP
from topogrow.core.topological_derivative import EIGH_COST


def forward(depth, features=4, width=6, out=1):
    """Multiply-adds x 2 of the dense layers of a ResidualMLP for one sample."""
    return 2.0 * (features * width + depth * width * width + width * out)


def test_flops_of_training_validation_td_and_line_search_match_a_hand_count():
    train, val = helpers.regression_data(100, 1), helpers.regression_data(40, 2)
    cfg = helpers.short_growth_config(strategy="td", max_depth=2, line_search_samples=64)
    torch.manual_seed(0)
    grower = Grower(ResidualMLP(4, 6, 1, 1).double(), "mse", cfg)
    history = grower.fit(train, val)
    flops = history.flops
    depths = [e.depth for e in history.epochs]
    assert flops["training"] == pytest.approx(sum(3 * forward(d) * 100 for d in depths))
    assert flops["validation"] == pytest.approx(sum(forward(d) * 40 for d in depths))
    (insertion,) = history.insertions
    # one TD pass on the depth-1 network: forward + backward over 100 samples, blocks at 2 locations
    n, m = 6, 7
    blocks = 2 * (2.0 * 100 * n * m * m + EIGH_COST * n * m**3)
    assert flops["topological_derivative"] == pytest.approx(3 * forward(1) * 100 + blocks)
    evaluations = 2 + 2 * len(cfg.epsilons)  # before, both signs of every epsilon, after
    assert flops["line_search"] == pytest.approx(forward(2) * 64 * evaluations)
    assert flops["total"] == pytest.approx(sum(v for k, v in flops.items() if k != "total"))


def test_a_strategy_without_the_topological_derivative_counts_none():
    train = helpers.regression_data(100, 1)
    torch.manual_seed(0)
    history = Grower(ResidualMLP(4, 6, 1, 1).double(), "mse", helpers.short_growth_config(strategy="random")).fit(train)
    assert "topological_derivative" not in history.flops and history.flops["line_search"] > 0
    assert history.flops["validation"] == 0  # no validation data: the training loss stands in
