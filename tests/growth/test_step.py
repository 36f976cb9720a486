"""topogrow.grow: one growth step for a training loop of your own, with the user's optimiser and
scheduler, undone by GrowthStep.undo."""

import pytest
import torch
from torch.optim import lr_scheduler

import helpers
import topogrow
from topogrow import ResidualMLP


def _train(model, optimizer, scheduler, data, epochs):
    x, y = data
    rates = []
    for _ in range(epochs):
        rates.append([group["lr"] for group in optimizer.param_groups])
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
        scheduler.step()
    return rates


def test_a_growth_step_in_your_own_loop_continues_the_schedule_and_can_be_undone():
    data = helpers.regression_data(300, 1, dtype=torch.float32)
    torch.manual_seed(0)
    model = ResidualMLP(4, 8, 1, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    scheduler = lr_scheduler.CosineAnnealingLR(optimizer, T_max=20)
    twin = lr_scheduler.CosineAnnealingLR(torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=0.01), T_max=20)
    before = _train(model, optimizer, scheduler, data, 7)
    old = {id(p): {k: v.clone() for k, v in optimizer.state[p].items()} for p in model.parameters()}

    step = topogrow.grow(model, data, "mse", optimizer=optimizer, scheduler=scheduler)
    assert model.depth == 2 and step.layer in list(model.modules())
    assert step.record.eigenvalues is not None and step.location == max(
        range(len(step.record.eigenvalues)), key=step.record.eigenvalues.__getitem__
    )
    assert len(optimizer.param_groups) == 2 and len(scheduler.base_lrs) == 2
    assert [id(p) for p in optimizer.param_groups[1]["params"]] == [id(p) for p in step.layer.parameters()]
    for p in (q for q in model.parameters() if id(q) in old):  # Adam's state of the old parameters is kept
        assert all(torch.equal(optimizer.state[p][k], v) for k, v in old[id(p)].items())
    after = _train(model, optimizer, scheduler, data, 10)
    expected = []  # the uninterrupted schedule
    for _ in range(17):
        expected.append(twin.get_last_lr()[0])
        twin.optimizer.step()
        twin.step()
    assert [r[0] for r in before + after] == pytest.approx(expected, rel=1e-12)
    assert [r[1] for r in after] == pytest.approx([r[0] for r in after], rel=1e-12)  # no jump for the new group

    step.undo()
    assert model.depth == 1 and len(optimizer.param_groups) == 1 and len(scheduler.base_lrs) == 1
    assert {id(p) for p in optimizer.param_groups[0]["params"]} == {id(p) for p in model.parameters()}


def test_grow_takes_config_fields_and_says_why_it_does_not_grow():
    data = helpers.regression_data(200, 1, dtype=torch.float32)
    torch.manual_seed(0)
    model = ResidualMLP(4, 6, 1, 1)
    with pytest.warns(RuntimeWarning, match="in no optimiser and will not train"):
        step = topogrow.grow(model, data, strategy="td", line_search="grid")  # no optimiser: only the model grows
    assert model.depth == 2 and step.search.samples == 200 and step.record.predicted_change is not None
    with pytest.raises(topogrow.growth.context.StopGrowth, match="does not grow"):
        topogrow.grow(model, data, strategy="no-growth", optimizer=torch.optim.Adam(model.parameters()))
    with pytest.raises(ValueError, match="did you mean"):
        topogrow.grow(model, data, strategy="smal-where")
