"""A diverging phase is stopped, the best network of the phase put back, and said in one line."""

import math
import warnings

import pytest
import torch

from helpers import regression_data, short_growth_config
from topogrow import Callback, Grower, ResidualMLP
from topogrow.growth.divergence import DIVERGENCE_FACTOR, DivergenceGuard
from topogrow.sklearn import GrowingRegressor


def _model():
    torch.manual_seed(0)
    return ResidualMLP(4, 8, 1, 1).double()


def test_an_absurd_learning_rate_stops_at_the_first_epoch_with_the_initial_network_kept():
    model = _model()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    train, val = regression_data(256, 0), regression_data(128, 1)
    with pytest.warns(RuntimeWarning, match="training diverged at epoch 1") as caught:
        history = Grower(model, "mse", lr=1e3, max_depth=3).fit(train, val)
    message = history.diverged
    assert str(caught[0].message) == message and "\n" not in message
    assert "times the lowest validation loss of the phase" in message and "lower the learning rate" in message
    assert "the network it started from, was kept" in message
    assert history.epochs == [] and history.stop_reason == "training diverged" and model.depth == 1
    assert all(torch.equal(v, initial[k]) for k, v in model.state_dict().items())
    assert "diverged: training diverged" in history.summary()


class _Poison(Callback):
    """Puts a NaN into the head at the start of epoch ``at``: the training loss becomes NaN."""

    def __init__(self, at):
        self.at = at

    def on_train_epoch_start(self, grower):
        if len(grower.history.epochs) + 1 == self.at:
            with torch.no_grad():
                grower.model.head.weight[0, 0] = math.nan


@pytest.mark.parametrize("early_stopping", [True, False])
def test_a_nan_loss_keeps_the_best_network_of_the_phase(early_stopping):
    model = _model()
    train, val = regression_data(256, 2), regression_data(128, 3)
    states = {}

    class Keep(Callback):
        def on_stage_start(self, grower):
            states["start"] = ({k: v.clone() for k, v in grower.model.state_dict().items()}, grower.validation_loss())

        def on_epoch_end(self, grower, record):
            states[record.epoch] = ({k: v.clone() for k, v in grower.model.state_dict().items()}, record.val_loss)

    config = short_growth_config(early_stopping=early_stopping, epochs_per_stage=4)
    with pytest.warns(RuntimeWarning, match="the training loss became nan"):
        history = Grower(model, "mse", config, callbacks=[Keep(), _Poison(at=7)]).fit(train, val)
    assert len(history.epochs) == 6 and model.depth == 2  # the second stage diverged in its third epoch
    if early_stopping:  # the best of the stage's start and epochs 5 and 6
        best = min(("start", 5, 6), key=lambda e: states[e][1])
        expected = states[best][0]
        assert "the phase's best network" in history.diverged
    else:
        expected = states["start"][0]
        assert "the network the phase started from was kept" in history.diverged
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())


def test_the_guard_counts_losses_far_above_the_lowest_of_the_phase():
    guard = DivergenceGuard()
    guard.start_phase(torch.nn.Linear(1, 1), 0.5, keep=False)
    assert guard.lowest == 0.5 and guard.start_state is None
    assert guard.check(0.4, 0.45) is None and guard.lowest == 0.45
    assert guard.check(0.45 * DIVERGENCE_FACTOR * 0.99, 0.3) is None
    assert "is more than 100 times" in guard.check(0.3 * DIVERGENCE_FACTOR * 1.01, 0.3)
    assert guard.check(0.1, math.inf) == "the validation loss became inf"


def test_the_estimators_warn_as_scikit_learn_does():
    from sklearn.exceptions import ConvergenceWarning

    x, y = regression_data(200, 4, dtype=torch.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        GrowingRegressor(lr=1e4, max_depth=2, random_state=0).fit(x.numpy(), y.numpy().ravel())
    kinds = [type(w.message) for w in caught if "diverged" in str(w.message)]
    assert kinds == [ConvergenceWarning]
