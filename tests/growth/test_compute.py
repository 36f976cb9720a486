"""FLOP accounting of a growth run (counted from shapes, not timed), against hand counts."""

import pytest
import torch

import helpers
import topogrow.growth.insertion as insertion_module
from topogrow import Grower, ResidualMLP
from topogrow.core.topological_derivative import EIGH_COST
from topogrow.growth.callbacks import Callback


def forward(depth, features=4, width=6, out=1):
    """Multiply-adds x 2 of the dense layers of a ResidualMLP for one sample."""
    return 2.0 * (features * width + depth * width * width + width * out)


class LineSearchPasses(Callback):
    """Counts the samples the model forwards in eval mode between the end of a stage and the
    insertion: the line search's evaluations (the TD pass trains, validation is elsewhere)."""

    def __init__(self) -> None:
        self.samples, self.on = [], False

    def on_fit_start(self, grower):
        grower.model.register_forward_hook(self._count)

    def _count(self, module, inputs, output):
        if self.on and not module.training:
            self.samples.append(inputs[0].shape[0])

    def on_stage_end(self, grower, context):
        self.on = True

    def on_insert(self, grower, insertion):
        self.on, self.search = False, insertion.search

    def on_stage_start(self, grower):
        self.on = False


@pytest.mark.parametrize("search", ["grid", "model"])
def test_flops_of_training_validation_td_and_line_search_match_a_hand_count(search, monkeypatch):
    monkeypatch.setattr(insertion_module, "PROBE_SAMPLES", 16)  # the model search's probe: 16 of the 64 samples
    train, val = helpers.regression_data(100, 1), helpers.regression_data(40, 2)
    cfg = helpers.short_growth_config(strategy="td", max_depth=2, line_search_samples=64, line_search=search)
    torch.manual_seed(0)
    passes = LineSearchPasses()
    grower = Grower(ResidualMLP(4, 6, 1, 1).double(), "mse", cfg, callbacks=[passes])
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
    if search == "grid":  # the loss before and both signs of every epsilon, on the 64 samples
        assert passes.samples == [32, 32] * (1 + 2 * len(cfg.epsilons))
    else:  # the loss before and the confirmations on the 64 samples, the rest on the first 16
        trials, probe_trials = passes.search.trials, passes.search.probe_trials
        assert sum(passes.samples) == 64 * (1 + len(trials)) + 16 * len(probe_trials)
        assert 64 * 3 < sum(passes.samples) < 64 * 8
    assert flops["line_search"] == pytest.approx(forward(2) * sum(passes.samples))
    assert flops["total"] == pytest.approx(sum(v for k, v in flops.items() if k != "total"))


def test_a_strategy_without_the_topological_derivative_counts_none():
    train = helpers.regression_data(100, 1)
    torch.manual_seed(0)
    history = Grower(ResidualMLP(4, 6, 1, 1).double(), "mse", helpers.short_growth_config(strategy="random")).fit(train)
    assert "topological_derivative" not in history.flops and history.flops["line_search"] > 0
    assert history.flops["validation"] == 0  # no validation data: the training loss stands in
