"""Numerical faults in the grower: non-finite adjoints, singular blocks or proposals skip the
insertion with a warning; a run whose training diverges stops and says so (exit status 3)."""

import json
import warnings
from dataclasses import dataclass

import pytest
import torch

import helpers
import topogrow
from topogrow import Grower, ResidualMLP, core
from topogrow.cli import main
from topogrow.growth import STRATEGIES, Proposal, Strategy, context, register_strategy

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


def test_an_absurd_learning_rate_is_a_diverged_run_with_its_exit_status_and_run_json(tmp_path, capsys):
    """``topogrow run --lr 1e3``: training diverges in the first epoch. The run stops with the
    network it started from, writes its outputs (run.json says "diverged"), says why in one line
    and exits with status 3."""
    out = tmp_path / "run"
    code = main([*RUN, "--lr", "1e3", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3
    (line,) = [line for line in err if "diverged" in line]  # said once
    assert line.startswith("topogrow: the run diverged (exit status 3): training diverged at epoch 1")
    assert "lower the learning rate" in line
    payload = json.loads((out / "run.json").read_text())
    assert payload["status"] == "diverged" and payload["run"]["history"]["diverged"] in line
    model = topogrow.load(out)
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())


def test_a_run_that_does_not_diverge_says_completed(tmp_path):
    out = tmp_path / "run"
    assert main([*RUN, "--max-depth", "2", "--final-epochs", "1", "--out", str(out)]) == 0
    assert json.loads((out / "run.json").read_text())["status"] == "completed"
