"""Growth that pays: early stopping restores the best epoch, a rolled-back insertion restores the
exact network before it, the new insertion rules, the depth-search and no-growth baselines, and the
paired statistics of the tables."""

import copy
import math
import warnings
from dataclasses import dataclass

import pytest
import torch
from scipy import stats

import helpers
from topogrow import Callback, Grower, GrowthConfig, Proposal, ResidualMLP, Strategy
from topogrow.data import load as make_task
from topogrow.experiments.experiment import ModelConfig, compare, run
from topogrow.experiments.paired import paired
from topogrow.experiments.quality import summary
from topogrow.experiments.report import comparison_table
from topogrow.growth import STRATEGIES, register_strategy
from topogrow.growth.context import StageContext
from topogrow.growth.strategies import SMALL_SCALE, random_init, random_location


def data(n=160, seed=1):
    return helpers.regression_data(n, seed)


def model(depth=1, seed=0, width=6):
    torch.manual_seed(seed)
    return ResidualMLP(4, width, depth, 1).double()


def config(**changes):
    return helpers.short_growth_config(**{"early_stopping": True, "rollback": True, **changes})


class Weights(Callback):
    """The weights after every epoch and at every stage end (after the built-in callbacks)."""

    def __init__(self):
        self.after_epoch, self.at_stage_end = {}, []

    def on_epoch_end(self, grower, record):
        self.after_epoch[record.epoch] = copy.deepcopy(grower.model.state_dict())

    def on_stage_end(self, grower, context):
        self.at_stage_end.append(
            (copy.deepcopy(grower.model), copy.deepcopy(grower.optimizer.state_dict()), context.record.stage)
        )


def same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------- early stopping
def test_early_stopping_keeps_the_best_epoch_and_ends_the_final_phase_after_patience():
    watch = Weights()
    cfg = config(strategy="no-growth", final_epochs=60, lr=0.05, early_stopping_patience=3, rollback=False)
    train, val = data(), data(60, 2)
    grower = Grower(model(), "mse", cfg, callbacks=[watch])
    history = grower.fit(train, val)
    losses = [e.val_loss for e in history.epochs]
    best = min(range(len(losses)), key=losses.__getitem__)
    assert len(losses) < 60 and len(losses) - 1 - best == 3  # stopped 3 epochs after the best
    assert same_state(grower.model.state_dict(), watch.after_epoch[best + 1])  # the best epoch's weights
    assert grower.validation_loss() == pytest.approx(losses[best], rel=1e-12)


def test_early_stopping_restores_the_start_of_a_stage_when_no_epoch_improves_on_it():
    cfg = config(strategy="no-growth", final_epochs=4, lr=5.0, early_stopping_patience=None, rollback=False)
    grower = Grower(model(), "mse", cfg)
    start = copy.deepcopy(grower.model.state_dict())
    train, val = data(), data(60, 2)
    from topogrow.training.epochs import evaluate_loss

    before = evaluate_loss(grower.model, [val], grower.loss)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # it may diverge: then the start is kept as well
        history = grower.fit(train, val)
    if history.diverged or min(e.val_loss for e in history.epochs) >= before:  # an absurd rate: nothing helped
        assert same_state(grower.model.state_dict(), start)
    else:
        pytest.skip("the learning rate did not spoil every epoch on this platform")


# ------------------------------------------------------------------- rollback
@dataclass(frozen=True)
class Harmful(Strategy):
    """A large random layer at location 0: validation gets worse."""

    name: str = "harmful-test"

    def propose(self, context):
        return Proposal(0, 30 * random_init(context.model, 0, context.generator), epsilon=1.0)


@pytest.fixture
def harmful():
    register_strategy("harmful-test", Harmful)
    yield "harmful-test"
    STRATEGIES.unregister("harmful-test")


def test_a_harmful_insertion_is_rolled_back_to_the_exact_network_before_it(harmful):
    watch = Weights()
    cfg = config(strategy="harmful-test", max_depth=4, epochs_per_stage=2, early_stopping=False)
    grower = Grower(model(), "mse", cfg, callbacks=[watch])
    history = grower.fit(data(), data(60, 2))
    (rejected,) = history.rejected
    assert rejected.accepted is False and "rolled back" in rejected.note and history.insertions == []
    assert "did not improve validation" in history.stop_reason and grower.model.depth == 1
    (before, optimizer_before, _), (after, optimizer_after, _) = watch.at_stage_end[:2]
    # right after the rollback (the next stage end, after the built-in callbacks) the network is
    # exactly the one before the insertion: architecture, weights and optimiser state
    assert after.depth == before.depth == 1 and same_state(after.state_dict(), before.state_dict())
    assert optimizer_after["param_groups"] == optimizer_before["param_groups"]
    for index, state in optimizer_before["state"].items():
        assert all(torch.equal(state[k], optimizer_after["state"][index][k]) for k in state)


def test_retry_asks_for_another_location_once_then_stops():
    @dataclass(frozen=True)
    class HarmfulAnywhere(Strategy):
        name: str = "harmful-anywhere"

        def propose(self, context):
            location = random_location(context)
            return Proposal(location, 30 * random_init(context.model, location, context.generator), epsilon=1.0)

    register_strategy("harmful-anywhere", HarmfulAnywhere)
    try:
        cfg = config(strategy="harmful-anywhere", max_depth=4, early_stopping=False, on_reject="retry")
        grower = Grower(model(), "mse", cfg)
        history = grower.fit(data(), data(60, 2))
    finally:
        STRATEGIES.unregister("harmful-anywhere")
    first, second = history.rejected
    assert second.stage == first.stage + 1 and second.location != first.location  # the retry went elsewhere
    assert "did not improve validation" in history.stop_reason and grower.model.depth == 1


def test_an_accepted_insertion_improved_validation_and_growth_never_ends_worse_than_it_started():
    cfg = config(strategy="td", max_depth=4, epochs_per_stage=3, final_epochs=3, lr=0.02)
    grower = Grower(model(), "mse", cfg)
    history = grower.fit(data(), data(60, 2))
    assert all(s.accepted for s in history.insertions)
    assert grower.model.depth == 1 + len(history.insertions)
    first_stage = [e.val_loss for e in history.epochs if e.stage == 0]
    assert grower.validation_loss() <= min(first_stage) + 1e-12  # never worse than the best of not growing yet


def test_a_run_with_early_stopping_and_rollback_resumes_exactly(tmp_path, harmful):
    train, val = helpers.regression_data(120, 1, dtype=torch.float32), helpers.regression_data(40, 2, torch.float32)
    cfg = config(strategy="harmful-test", max_depth=3, epochs_per_stage=3, final_epochs=3, early_stopping_patience=2)
    torch.manual_seed(0)
    reference = Grower(ResidualMLP(4, 6, 1, 1), "mse", cfg)
    history = reference.fit(train, val, checkpoint_dir=tmp_path, checkpoint_every=1, keep_checkpoints=1000)
    assert history.rejected  # the run went through a rollback
    for checkpoint in sorted(tmp_path.glob("ckpt-*")):
        resumed = Grower.from_checkpoint(checkpoint)
        result = resumed.fit(train, val)
        assert [e.val_loss for e in result.epochs] == [e.val_loss for e in history.epochs], checkpoint.name
        assert same_state(resumed.model.state_dict(), reference.model.state_dict()), checkpoint.name


# ---------------------------------------------------------- insertion rules
def test_td_eigenspace_draws_every_row_from_its_blocks_positive_eigenspace():
    net = model(depth=2)
    x, y = data(200)
    cfg = GrowthConfig(strategy="td-eigenspace")
    context = StageContext(net, (x, y), "mse", cfg, torch.Generator().manual_seed(3))
    context.strategy = STRATEGIES["td-eigenspace"](name="td-eigenspace")
    proposal = context.proposal
    td = context.topological_derivative(keep=True)
    assert proposal.location == td.best_location and proposal.epsilon is None  # epsilon by the line search
    blocks = td.blocks[proposal.location]
    values, vectors = torch.linalg.eigh(blocks)
    top = float(values.max())
    rows = proposal.direction
    assert bool((rows.norm(dim=1) > 0).all())  # no dead row
    for r in range(rows.shape[0]):
        positive = vectors[r][:, values[r] > 0]
        if positive.shape[1] == 0:
            assert rows[r].abs().max() <= SMALL_SCALE / (rows.shape[1] - 1) ** 0.5
            continue
        residual = rows[r] - positive @ (positive.T @ rows[r])
        assert residual.norm() <= 1e-10 * rows[r].norm()  # in the span of the positive eigenvectors
    assert proposal.curvature == pytest.approx(td.quadratic_form(proposal.location, rows), rel=1e-12)
    assert top > 0 and proposal.curvature > 0


@pytest.mark.parametrize("name", ["small", "small-where"])
def test_small_layers_are_a_tenth_of_the_default_scale(name):
    net = model(depth=2)
    x, y = data(200)
    context = StageContext(net, (x, y), "mse", GrowthConfig(strategy=name), torch.Generator().manual_seed(3))
    context.strategy = STRATEGIES[name](name=name)
    proposal = context.proposal
    assert proposal.epsilon == 1.0 and proposal.direction.abs().max() <= SMALL_SCALE / 6**0.5
    if name == "small-where":
        assert proposal.location == context.topological_derivative().best_location
    else:
        assert not context.has_derivative


# ---------------------------------------------------------- baselines, stats
def test_compare_measures_every_arm_against_the_converged_reference():
    growth = GrowthConfig(max_depth=3, epochs_per_stage=2, final_epochs=40, batch_size=32, seed=0)
    strategies = ("small-where", "no-growth", "small-init", "depth-search")
    comparison = compare("synthetic", strategies, 2, growth, ModelConfig(width=6), n_train=200, progress=False)
    by = comparison.by_strategy()
    for search, small in zip(by["depth-search"], by["small-init"], strict=True):
        assert 1 <= search.final_depth <= 3 and small.final_depth == search.final_depth  # the reference depth
        # the search's cost is every depth's run: more than the chosen network's own
        assert search.flops > search.history.flops["total"] and search.total_epochs > len(search.history.epochs)
    for result in comparison.results:  # one rule: the growth stages, then at most the final cap
        assert len(result.history.epochs) <= 3 * 2 + 40
        assert all(e.flops is not None and e.wall_time is not None for e in result.history.epochs)
    quality = summary(comparison)
    for seed in (0, 1):  # compute to quality, by hand from the anytime curves
        reference = next(r for r in by["depth-search"] if r.seed == seed)
        target = min(e.val_loss for e in reference.history.epochs)
        own = next(e.flops for e in reference.history.epochs if e.val_loss <= target)
        run = next(r for r in by["small-where"] if r.seed == seed)
        first = next((e.flops for e in run.history.epochs if e.val_loss <= target), None)
        row = next(r for r in quality["small-where"]["per_seed"] if r["seed"] == seed)
        assert row["flops"] == (None if first is None else pytest.approx(first / own))
        assert row["total_vs_search"] == pytest.approx(run.history.flops["total"] / reference.flops)
        assert row["total_vs_reference"] == pytest.approx(run.history.flops["total"] / reference.history.flops["total"])
    assert quality["depth-search"]["flops_to_quality"] == 1.0 and quality["depth-search"]["reached"] == 2
    table = comparison_table(comparison)
    assert "FLOPs to quality" in table and "reference" in table
    against = comparison.paired_with("depth-search")
    assert set(against) == {"small-where", "no-growth", "small-init"} and all(p.n == 2 for p in against.values())


def test_paired_statistics_are_the_t_interval_of_the_per_seed_differences():
    reference, other = [0.30, 0.25, 0.28, 0.31, 0.27], [0.32, 0.26, 0.31, 0.30, 0.29]
    result = paired(reference, other, higher_better=False)
    diffs = [o - r for r, o in zip(reference, other, strict=True)]
    mean = sum(diffs) / 5
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 4)
    half = stats.t.ppf(0.975, 4) * sd / math.sqrt(5)
    assert result.mean == pytest.approx(mean) and result.wins == 4 and result.n == 5
    assert (result.low, result.high) == (pytest.approx(mean - half), pytest.approx(mean + half))
    assert result.verdict == ("better" if mean - half > 0 else "tie")
    flipped = paired(other, reference, higher_better=True)
    assert flipped.mean == pytest.approx(result.mean) and flipped.wins == result.wins
    with pytest.raises(ValueError, match="same seeds"):
        paired([1.0], [1.0, 2.0], higher_better=True)


def test_td_eigenspace_on_wide_layers_uses_the_leading_eigenpair_of_each_block(monkeypatch):
    """Above KEEP_LIMIT the blocks are not kept: each row is sqrt(lambda_r / mu_max) z_r v_r along
    its block's leading eigenvector, and the curvature is the exact sum of z_r^2 lambda_r^2 / mu_max."""
    from topogrow.growth.strategies import TDEigenspace

    monkeypatch.setattr(TDEigenspace, "KEEP_LIMIT", 2)
    net = model(depth=2)
    x, y = data(200)
    context = StageContext(net, (x, y), "mse", GrowthConfig(strategy="td-eigenspace"), torch.Generator())
    context.strategy = TDEigenspace(name="td-eigenspace")
    proposal = context.proposal
    td = context.topological_derivative()
    values, vectors = td.block_eigenvalues[proposal.location], td.block_eigenvectors[proposal.location]
    rows = proposal.direction
    if bool((values <= 0).any()):
        pytest.skip("a block without a positive eigenvalue: its row is random")
    cosines = (rows * vectors).sum(dim=1).abs() / rows.norm(dim=1)
    torch.testing.assert_close(cosines, torch.ones_like(cosines))  # each row along its leading eigenvector
    exact = GrowthConfig()  # the curvature against the dense blocks of the same network
    blocks = StageContext(net, (x, y), "mse", exact).topological_derivative(keep=True)
    assert proposal.curvature == pytest.approx(blocks.quadratic_form(proposal.location, rows), rel=1e-6)


def test_td_eigenspace_grows_by_a_registered_block():
    cfg = config(strategy="td-eigenspace", block="gelu-mlp", max_depth=3, early_stopping=False, rollback=False)
    grower = Grower(model(), "mse", cfg)
    history = grower.fit(data(), data(60, 2))
    assert grower.model.depth == 3 and all(s.predicted_change is not None for s in history.insertions)
    assert all(s.actual_change <= 0 for s in history.insertions)  # the line search never raises the loss


def test_td_where_keeps_the_blocks_only_where_they_are_cheap(monkeypatch):
    """td-where needs only the location: above KEEP_LIMIT it forces no solver and keeps no blocks,
    and its predicted change (bookkeeping) is then unknown."""
    from topogrow.growth import strategies

    cfg = config(strategy="td-where", max_depth=2, early_stopping=False, rollback=False)
    (kept,) = Grower(model(), "mse", cfg).fit(data()).insertions
    assert kept.predicted_change is not None
    monkeypatch.setattr(strategies, "KEEP_LIMIT", 2)
    calls = []
    real = StageContext.topological_derivative

    def spy(self, keep=False, location_only=False):
        calls.append(keep)
        return real(self, keep, location_only)

    monkeypatch.setattr(StageContext, "topological_derivative", spy)
    (wide,) = Grower(model(), "mse", cfg).fit(data()).insertions
    assert calls == [False] and wide.predicted_change is None
    assert wide.location == kept.location and wide.eigenvalues == pytest.approx(kept.eigenvalues)


def test_every_arm_chooses_its_learning_rate_from_the_same_set_on_validation():
    growth = GrowthConfig(max_depth=2, epochs_per_stage=1, final_epochs=6, batch_size=32, seed=0)
    lrs = (1e-4, 3e-2)
    strategies = ("small-where", "depth-search")
    comparison = compare("synthetic", strategies, 1, growth, ModelConfig(width=6), n_train=200, progress=False, lrs=lrs)
    assert comparison.lrs == lrs
    task = make_task("synthetic", seed=0, n_train=200)
    for result in comparison.results:  # the kept run is the better of the two on validation
        name = "no-growth" if result.strategy == "depth-search" else result.strategy
        depth = result.final_depth if result.strategy == "depth-search" else None
        each = [
            run(task, growth.replace(strategy=name, lr=lr), ModelConfig(width=6), initial_depth=depth)[0] for lr in lrs
        ]
        best = min(each, key=lambda r: min(e.val_loss for e in r.history.epochs))
        assert result.history.epochs[0].lr == best.history.epochs[0].lr and result.metric == best.metric
    assert {r.history.epochs[0].lr for r in comparison.results} != {1e-4}  # not simply the first
