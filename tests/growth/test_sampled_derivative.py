"""The growth loop's topological derivative reads samples until its decision is settled (td_samples)."""

import pytest
import torch
from tests import helpers

from topogrow import Grower, GrowthConfig, ResidualMLP


def _grow(**changes):
    x, y = helpers.regression_data(3000, seed=0, dtype=torch.float32)
    torch.manual_seed(0)
    model = ResidualMLP(4, 8, 1, 1)
    cfg = helpers.short_growth_config(strategy="td", max_depth=2, batch_size=256, **changes)
    return Grower(model, "mse", cfg).fit((x, y))


def test_the_history_records_the_samples_each_pass_read_and_its_error():
    sampled_run = _grow(td_samples="auto", td_rel_error=1.0)
    sampled = sampled_run.stages[0]
    assert 1024 <= sampled.td_samples < 3000 and 0 < sampled.td_error < 1
    capped = _grow(td_samples=1100).stages[0]
    assert 1024 <= capped.td_samples <= 1100 + 255  # the mini-batch that crossed the cap is the last
    full_run = _grow(td_samples="all")
    full = full_run.stages[0]
    assert full.td_samples == 3000 and full.td_error is None
    # the FLOPs counted follow the samples read
    assert sampled_run.flops["topological_derivative"] < full_run.flops["topological_derivative"]


def test_data_no_larger_than_the_floor_gets_the_full_pass_and_the_same_run():
    x, y = helpers.regression_data(500, seed=1, dtype=torch.float32)
    runs = []
    for samples in ("auto", "all"):
        torch.manual_seed(0)
        history = Grower(
            ResidualMLP(4, 8, 1, 1), "mse", helpers.short_growth_config(strategy="td", td_samples=samples)
        ).fit((x, y))
        runs.append([(s.eigenvalues, s.location, s.epsilon, s.td_samples) for s in history.stages])
    assert runs[0] == runs[1]


@pytest.mark.parametrize("value", [0, -5, "some", 2.5, True])
def test_td_samples_refuses_what_is_not_auto_all_or_a_count(value):
    with pytest.raises(ValueError, match="td_samples must be 'auto', 'all' or a number"):
        GrowthConfig(td_samples=value)


def test_td_samples_from_the_command_line_is_a_count():
    assert GrowthConfig(td_samples="2048").td_samples == 2048
    assert GrowthConfig(td_samples="all").sampling is None
    assert GrowthConfig(td_samples=5000, td_rel_error=0.2).sampling.max_samples == 5000
