"""Learning-rate schedules that survive insertions and rollbacks: parameters added to a live
optimiser and scheduler follow the uninterrupted schedule, a grown run's rates equal the
schedule computed by hand, Adam's state survives, and a budget holds."""

import math

import pytest
import torch
from torch.optim import lr_scheduler

import helpers
from topogrow import Grower, ResidualMLP
from topogrow.growth import Callback, GrowthConfig
from topogrow.training import add_parameters, remove_parameters

config = helpers.short_growth_config


def _schedulers():
    """Name -> (optimizer -> scheduler, whether step() takes the validation loss)."""
    return {
        "cosine": (lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=12), False),
        "onecycle": (lambda o: lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=40), False),
        "linear-sequential": (
            lambda o: lr_scheduler.SequentialLR(
                o,
                [lr_scheduler.LinearLR(o, start_factor=0.1, total_iters=5), lr_scheduler.ExponentialLR(o, gamma=0.9)],
                milestones=[5],
            ),
            False,
        ),
        "lambda": (lambda o: lr_scheduler.LambdaLR(o, lambda epoch: 1 / (1 + epoch)), False),
        "plateau": (lambda o: lr_scheduler.ReduceLROnPlateau(o, factor=0.5, patience=1), True),
    }


@pytest.mark.parametrize("name", list(_schedulers()))
def test_parameters_added_midway_follow_the_uninterrupted_schedule(name):
    build, with_loss = _schedulers()[name]
    losses = [1.0, 0.9, 0.9, 0.9, 0.8, 0.8, 0.8, 0.8, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7]

    def rates(add_at: int | None) -> list[list[float]]:
        old, new = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))
        optimizer = torch.optim.Adam([old], lr=0.01)
        scheduler = build(optimizer)
        seen = []
        for step, loss in enumerate(losses):
            if step == add_at:
                add_parameters(optimizer, [new], scheduler)
            seen.append([group["lr"] for group in optimizer.param_groups])
            optimizer.step()
            scheduler.step(loss) if with_loss else scheduler.step()
        return seen

    uninterrupted, grown = rates(None), rates(7)
    assert [r[0] for r in grown] == [r[0] for r in uninterrupted]  # the old group's rates
    assert [r[1] for r in grown[7:]] == [r[0] for r in uninterrupted[7:]]  # the new one joins at the current rate
    assert len({round(r[0], 12) for r in uninterrupted}) > 2  # the schedule moves


def test_removing_added_parameters_restores_the_optimizer_and_scheduler_lists():
    old, new = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.Adam([old], lr=0.01)
    scheduler = lr_scheduler.LambdaLR(optimizer, lambda epoch: 0.5**epoch)
    add_parameters(optimizer, [new], scheduler)
    new.grad = torch.ones(2)
    optimizer.step()
    assert len(optimizer.param_groups) == 2 and len(scheduler.base_lrs) == 2 and new in optimizer.state
    remove_parameters(optimizer, [new], scheduler)
    assert len(optimizer.param_groups) == 1 and len(scheduler.base_lrs) == 1 and len(scheduler.lr_lambdas) == 1
    assert new not in optimizer.state
    with pytest.raises(ValueError, match="already in the optimiser"):
        add_parameters(optimizer, [old], scheduler)


def _grow(train, val, **changes):
    torch.manual_seed(0)
    grower = Grower(ResidualMLP(4, 6, 1, 1), "mse", config(**changes))
    history = grower.fit(train, val)
    return grower, history


def test_a_cosine_run_with_two_insertions_follows_the_cosine_computed_by_hand():
    train, val = helpers.regression_data(160, 1), helpers.regression_data(60, 2)
    grower, history = _grow(train, val, lr_schedule="cosine", warmup_epochs=1, lr=0.02, final_epochs=6)
    assert len(history.insertions) == 2
    horizon = 3 * 2 + 6  # three stages of 2 epochs (the third ends growth) and the final epochs
    expected = [0.02 * (0.5 if t < 1 else 0.5 * (1 + math.cos(math.pi * (t - 1) / (horizon - 1)))) for t in range(13)]
    assert [e.lr for e in history.epochs] == pytest.approx(expected[:12], rel=1e-12, abs=1e-15)
    assert [g["lr"] for g in grower.optimizer.param_groups] == pytest.approx([expected[12]] * 3, abs=1e-15)


def test_a_plateau_run_halves_the_rate_when_validation_stalls_as_computed_by_hand():
    train, val = helpers.regression_data(160, 1), helpers.regression_data(60, 2)
    grower, history = _grow(train, val, lr_schedule="plateau", lr_patience=1, lr=0.05, final_epochs=14, min_delta=0.05)
    lr, best, bad, expected = 0.05, math.inf, 0, []
    for record in history.epochs:  # ReduceLROnPlateau's rule, from the recorded validation losses
        expected.append(lr)
        if record.val_loss < best * (1 - 0.05):
            best, bad = record.val_loss, 0
        else:
            bad += 1
        if bad > 1:
            lr, bad = lr * 0.5, 0
    assert [e.lr for e in history.epochs] == pytest.approx(expected, rel=1e-12)
    assert min(expected) < 0.05  # it did halve
    assert [g["lr"] for g in grower.optimizer.param_groups] == pytest.approx([lr] * 3, rel=1e-12)


class _AdamState(Callback):
    """Adam's state of every parameter at the end of the stage, and right after the insertion."""

    def __init__(self):
        self.before, self.after, self.new, self.groups = {}, {}, [], []

    def on_stage_end(self, grower, context):
        if self.after:
            return
        self.before = {id(p): {k: v.clone() for k, v in s.items()} for p, s in grower.optimizer.state.items()}

    def on_insert(self, grower, insertion):
        self.after = {id(p): {k: v.clone() for k, v in s.items()} for p, s in grower.optimizer.state.items()}
        self.new = list(insertion.layer.parameters())
        self.groups = [[id(p) for p in g["params"]] for g in grower.optimizer.param_groups]


def test_adam_state_of_the_old_parameters_survives_an_insertion():
    train, val = helpers.regression_data(160, 1), helpers.regression_data(60, 2)
    spy = _AdamState()
    torch.manual_seed(0)
    grower = Grower(ResidualMLP(4, 6, 1, 1), "mse", config(max_depth=2), callbacks=[spy])
    grower.fit(train, val)
    assert spy.before and spy.before.keys() == spy.after.keys()
    for key, state in spy.before.items():
        for name, value in state.items():
            assert torch.equal(spy.after[key][name], value), name
    assert all(id(p) not in spy.after for p in spy.new)  # new parameters start fresh
    assert spy.groups[-1] == [id(p) for p in spy.new]  # in a group of their own


def test_a_rollback_removes_the_layer_from_the_optimizer_and_keeps_the_current_rate():
    train, val = helpers.regression_data(160, 1), helpers.regression_data(60, 2)
    changes = dict(lr_schedule="cosine", rollback=True, min_delta=0.9, max_depth=3, final_epochs=4)
    grower, history = _grow(train, val, **changes)
    assert history.rejected and grower.model.depth == 1
    assert len(grower.optimizer.param_groups) == 1 and len(grower.scheduler.base_lrs) == 1
    assert {id(p) for p in grower.optimizer.param_groups[0]["params"]} == {id(p) for p in grower.model.parameters()}
    horizon = 3 * 2 + 4
    rates = [0.01 * 0.5 * (1 + math.cos(math.pi * t / horizon)) for t in range(len(history.epochs))]
    assert [e.lr for e in history.epochs] == pytest.approx(rates, rel=1e-12)  # no jump back after the rollback


@pytest.mark.parametrize("budget", ["30 epochs", 6e7])
def test_a_budget_holds_within_one_epoch_and_leaves_the_final_phase_half(budget):
    train, val = helpers.regression_data(400, 1), helpers.regression_data(100, 2)
    changes = dict(max_depth=6, final_epochs=1000, early_stopping=True, lr_schedule="cosine", budget=budget)
    torch.manual_seed(0)
    grower = Grower(ResidualMLP(4, 16, 1, 1), "mse", config(**changes))
    history = grower.fit(train, val)
    plan, spent = history.budget, history.flops["total"]
    epoch = grower.budget.counter.epoch_flops(grower)  # the final network's epoch
    assert plan["spent"] == spent <= plan["flops"] + epoch
    assert plan["growth_spent"] <= plan["flops"] / 2 + epoch
    assert spent > 0.8 * plan["flops"]  # it spends what it was given
    assert history.epochs[-1].lr < 0.01 * 0.05  # the cosine decayed over the budget
    if isinstance(budget, str):
        first = history.epochs[0].flops
        assert plan["flops"] == pytest.approx(30 * first)  # epochs of the initial network


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(lr_schedule="cosin"), "did you mean"),
        (dict(lr_factor=1.5), "lr_factor"),
        (dict(budget="many"), "budget"),
        (dict(budget=-1.0), "budget"),
        (dict(budget="0 epochs"), "budget"),
        (dict(early_stopping_patience="soon"), "early_stopping_patience"),
        (dict(lr_reductions=-1), "lr_reductions"),
    ],
)
def test_bad_schedule_and_budget_settings_are_one_line_errors(changes, message):
    with pytest.raises((ValueError, TypeError), match=message) as error:
        GrowthConfig(**changes)
    assert "\n" not in str(error.value)


def test_the_default_rule_trains_until_the_rate_was_lowered_in_vain():
    assert GrowthConfig().stop_patience == (GrowthConfig().lr_reductions + 1) * (GrowthConfig().lr_patience + 1)
    assert GrowthConfig(budget="20 epoch").budget == "20 epochs"
    assert GrowthConfig(budget="1e9").budget == 1e9
    assert GrowthConfig(early_stopping_patience="7").stop_patience == 7
