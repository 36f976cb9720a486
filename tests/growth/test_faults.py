"""Numerical faults in the grower: non-finite adjoints, singular blocks or proposals skip the
insertion with a warning; a loss that becomes non-finite stops the run at the last good checkpoint."""

import warnings
from dataclasses import dataclass

import pytest
import torch

import helpers
import topogrow
from topogrow import Grower, ResidualMLP, core
from topogrow.cli import main
from topogrow.growth import STRATEGIES, Proposal, Strategy, context, register_strategy
from topogrow.growth import checkpoint as ckpt

config = helpers.short_growth_config
RUN = helpers.CLI_RUN


def regression_data(n_samples: int, seed: int):
    return helpers.regression_data(n_samples, seed, dtype=torch.float32)


# ------------------------------------------------------ numerical faults
@pytest.mark.parametrize("strategy", ["td", "small-where"])
def test_nan_adjoints_skip_the_insertion_with_a_warning_and_training_goes_on(strategy, monkeypatch, tmp_path):
    # td takes the exact pass; small-where the location-only one
    owner, name = (core, "topological_derivative") if strategy == "td" else (context, "location_derivative")
    real = getattr(owner, name)
    calls = []

    def faulty(model, data, loss, **kwargs):
        calls.append(1)
        if len(calls) == 1:  # the first stage's adjoints come out NaN: the core refuses the blocks
            raise FloatingPointError("the Hessian blocks contain NaN or inf: the adjoints are not finite")
        return real(model, data, loss, **kwargs)

    monkeypatch.setattr(owner, name, faulty)  # what the stage context calls
    grower = Grower(ResidualMLP(4, 4, 1, 1), "mse", config(max_depth=3, growth_patience=3, strategy=strategy))
    with pytest.warns(RuntimeWarning, match=r"stage 0 \(epoch 2, depth 1\): insertion skipped: .*NaN"):
        history = grower.fit(regression_data(100, seed=1), checkpoint_dir=tmp_path)
    assert history.stages[0].location is None and "NaN" in history.stages[0].note
    assert "note: insertion skipped" in history.summary()
    assert grower.model.depth == 3 and len(history.insertions) == 2  # growth went on afterwards
    assert Grower.from_checkpoint(tmp_path).history.stages[0].note == history.stages[0].note


def test_a_singular_or_non_finite_block_skips_and_repeated_faults_stop_growth(monkeypatch):
    def singular(*args, **kwargs):
        raise torch.linalg.LinAlgError("linalg.eigh: the algorithm failed to converge")

    monkeypatch.setattr(core, "topological_derivative", singular)
    grower = Grower(ResidualMLP(4, 4, 1, 1), "mse", config(growth_patience=2, strategy="td"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = grower.fit(regression_data(100, seed=1))
    assert sum("insertion skipped" in str(w.message) for w in caught) == 2
    assert history.stop_reason == "numerical faults in 2 consecutive stages"
    assert grower.model.depth == 1 and history.total_epochs == 2 * 2 + 2


def test_a_non_finite_proposal_is_skipped():
    @dataclass(frozen=True)
    class NaNLayer(Strategy):
        name: str = "nan"

        def propose(self, context):
            return Proposal(0, torch.full(context.model.insertion_shape(0), float("nan")))

    register_strategy("nan", NaNLayer)
    try:
        grower = Grower(ResidualMLP(4, 4, 1, 1), "mse", config(strategy="nan", growth_patience=1))
        with pytest.warns(RuntimeWarning, match="the proposed layer at location 0 is not finite"):
            history = grower.fit(regression_data(100, seed=1))
    finally:
        STRATEGIES.unregister("nan")
    assert grower.model.depth == 1 and history.stop_reason == "numerical faults in 1 consecutive stages"


def test_a_loss_that_becomes_non_finite_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    """An absurd learning rate: the loss overflows after a few full-batch steps. The run stops
    with one line naming the epoch and the last good checkpoint, which loads and is finite."""
    stopped_after_a_checkpoint = False
    for lr in ("3e8", "2e8", "4e8", "1.5e8", "6e8", "1e8", "1e9"):
        out = tmp_path / lr
        argv = [*RUN, "--batch-size", "2048", "--lr", lr, "--out", str(out), "--checkpoint-every", "1"]
        code = main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        if code == 0:
            continue
        assert code == 2 and not (out / "run.json").exists()
        line = err[-1]
        assert line.startswith("topogrow: error: epoch ") and "loss became" in line and "the run stopped" in line
        last = ckpt.find_checkpoint(out / "checkpoints")
        if last is None:
            assert "no checkpoint had been written yet" in line
            continue
        assert f"the last good checkpoint is {last}" in line
        model = topogrow.load(last)
        assert all(torch.isfinite(v).all() for v in model.state_dict().values())
        grower = Grower.from_checkpoint(last)
        assert grower.history.total_epochs >= 1
        stopped_after_a_checkpoint = True
        break
    assert stopped_after_a_checkpoint, "no learning rate diverged after the first checkpoint"
