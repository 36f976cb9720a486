"""The growth loop: line search, configuration, strategies, a short real run, errors."""

import copy
import math

import pytest
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from topogrow import STRATEGIES, Grower, GrowthConfig, GrowthHistory, ResidualMLP
from topogrow.growth import line_search
from topogrow.growth.callbacks import Callback
from topogrow.growth.line_search import DEFAULT_EPSILONS
from topogrow.growth.strategies import growth_strategies, inserts_layers, transfer_strategies

IN_FEATURES = 4


# ---------------------------------------------------------------- helpers
def regression_data(n_samples: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_samples, IN_FEATURES, generator=g, dtype=torch.float64)
    y = (
        torch.sin(2 * x[:, :1])
        + x[:, 1:2] * x[:, 2:3]
        + 0.05 * torch.randn(n_samples, 1, generator=g, dtype=torch.float64)
    )
    return x, y


def classification_data(n_samples: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_samples, IN_FEATURES, generator=g, dtype=torch.float64)
    y = (x[:, 0] > 0).long() + (x[:, 1] * x[:, 2] > 0.3).long()
    return x, y


def small_model(out_features=1, width=8, depth=1, seed=0):
    torch.manual_seed(seed)
    return ResidualMLP(IN_FEATURES, width, depth, out_features).double()


def short_config(**changes):
    base = dict(
        max_depth=3,
        epochs_per_stage=2,
        final_epochs=1,
        growth_patience=100,  # only max depth (or mu <= tolerance) may stop these runs
        batch_size=32,
        lr=1e-2,
        device="cpu",
        seed=0,
    )
    base.update(changes)
    return GrowthConfig(**base)


@pytest.fixture(scope="module")
def train_val():
    return regression_data(300, seed=1), regression_data(100, seed=2)


def optimizer_parameter_ids(optimizer):
    return [id(p) for group in optimizer.param_groups for p in group["params"]]


# ------------------------------------------------------- 5. line search
def test_line_search_returns_zero_when_every_epsilon_raises_the_loss():
    calls = []

    def evaluate(eps):
        calls.append(eps)
        return 1.0 + eps**2

    result = line_search(evaluate, 1.0, (0.01, 0.1, 1.0))
    assert result.epsilon == 0.0
    assert result.loss_after == result.loss_before == 1.0
    assert result.change == 0.0
    assert sorted(calls) == [-1.0, -0.1, -0.01, 0.01, 0.1, 1.0]
    assert len(result.trials) == 6


def test_line_search_does_not_accept_a_loss_equal_to_the_loss_before():
    result = line_search(lambda eps: 2.0, 2.0, (0.1, 1.0))
    assert result.epsilon == 0.0 and result.change == 0.0


def test_line_search_picks_the_minimum_of_either_sign():
    result = line_search(lambda eps: (eps - 0.1) ** 2 + 0.5, 0.51)
    assert result.epsilon == pytest.approx(0.1)
    assert result.loss_after == pytest.approx(0.5)
    assert result.change < 0
    result = line_search(lambda eps: (eps + 0.3) ** 2, 0.09)
    assert result.epsilon == pytest.approx(-(10**-0.5))
    assert result.loss_after == min(loss for _, loss in result.trials)
    # one sign only
    result = line_search(lambda eps: (eps + 0.3) ** 2, 0.09, both_signs=False)
    assert result.epsilon == 0.0


def test_line_search_ignores_non_finite_losses():
    def evaluate(eps):
        if eps > 0.5:
            return float("nan")
        if eps < -0.5:
            return float("-inf")
        return 1.0 - abs(eps)

    result = line_search(evaluate, 1.0, (0.1, 0.3, 1.0, 3.0))
    assert abs(result.epsilon) == pytest.approx(0.3)
    assert result.loss_after == pytest.approx(0.7)
    assert math.isfinite(result.loss_after)
    assert line_search(lambda eps: float("nan"), 1.0, (0.1,)).epsilon == 0.0


def test_line_search_needs_candidates():
    with pytest.raises(ValueError, match="at least one"):
        line_search(lambda eps: 0.0, 1.0, ())


def test_default_epsilons_span_1e_minus_3_to_10():
    assert DEFAULT_EPSILONS[0] == pytest.approx(1e-3)
    assert DEFAULT_EPSILONS[-1] == pytest.approx(10.0)
    assert list(DEFAULT_EPSILONS) == sorted(DEFAULT_EPSILONS)


# -------------------------------------------------------- configuration
@pytest.mark.parametrize(("name", "suggestion"), [("tdd", "td"), ("radnom", "random"), ("td_how", "td-how")])
def test_unknown_strategy_suggests_the_closest(name, suggestion):
    with pytest.raises(ValueError, match=rf"did you mean '{suggestion}'\?"):
        GrowthConfig(strategy=name)
    with pytest.raises(ValueError, match="did you mean"):
        Grower(small_model(), "mse", GrowthConfig(), strategy=name)


def test_config_validation():
    growth = {"td", "td-where", "td-how", "random", "zero", "scratch", "forward-thinking", "sensli"}
    growth |= {"td-eigenspace", "small", "small-where", "no-growth", "small-init"}
    transfer = {"td", "small-where", "td-eigenspace", "random-location", "zero-location", "head-only", "full", "lora"}
    assert set(growth_strategies()) == growth and set(transfer_strategies()) == transfer
    assert set(STRATEGIES) == growth | transfer
    for name in STRATEGIES:
        assert GrowthConfig(strategy=name).strategy == name
    with pytest.raises(ValueError, match="did you mean 'plateau'"):
        GrowthConfig(schedule="plateu")
    for bad in (
        {"max_depth": 0},
        {"epochs_per_stage": 1.5},
        {"batch_size": True},
        {"final_epochs": -1},
        {"lr": 0.0},
        {"lr": float("nan")},
        {"weight_decay": -1.0},
        {"neurons": 0},
        {"epsilons": ()},
        {"epsilons": (0.1, -0.1)},
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            GrowthConfig(**bad)
    config = GrowthConfig(epsilons=[1, 2])
    assert config.epsilons == (1.0, 2.0)
    with pytest.raises(ValueError, match="did you mean 'max_depth'"):
        GrowthConfig.from_dict({"max_dept": 3})
    with pytest.raises(ValueError, match="did you mean 'max_depth'"):
        config.replace(max_dept=3)
    with pytest.raises(ValueError, match="max_depth"):
        config.replace(max_depth=0)
    assert GrowthConfig.from_dict(config.to_dict()) == config


# ------------------------------------------------- 6. a short real growth run
@pytest.fixture(scope="module")
def td_run(train_val):
    train, val = train_val
    grower = Grower(small_model(), "mse", short_config(strategy="td"))
    history = grower.fit(train, val)
    return grower, history


def test_td_growth_reaches_max_depth(td_run):
    grower, history = td_run
    assert isinstance(history, GrowthHistory)
    assert grower.model.depth == 3
    assert "max depth" in history.stop_reason
    assert [s.depth for s in history.stages] == [1, 2, 3]
    assert len(history.insertions) == 2
    assert len(history.epochs) == 3 * 2 + 1
    assert [e.depth for e in history.epochs] == [1, 1, 2, 2, 3, 3, 3]
    assert [e.epoch for e in history.epochs] == list(range(1, 8))
    assert all(math.isfinite(e.train_loss) and math.isfinite(e.val_loss) for e in history.epochs)
    assert history.stages[-1].location is None  # no insertion once max depth is reached
    assert history.wall_time > 0
    assert "max depth" in history.summary()


def test_td_insertions_record_eigenvalues_and_never_raise_the_loss(td_run):
    _, history = td_run
    for record in history.insertions:
        assert record.eigenvalues is not None
        assert len(record.eigenvalues) == record.depth + 1
        assert record.location == max(range(len(record.eigenvalues)), key=record.eigenvalues.__getitem__)
        assert max(record.eigenvalues) > 0
        assert record.epsilon != 0.0
        assert record.actual_change <= 0
        assert record.actual_change < 0  # mu > 0: some epsilon strictly lowers the training loss
        assert record.predicted_change < 0


def test_optimizer_covers_every_parameter_of_the_grown_model(td_run):
    grower, _ = td_run
    ids = optimizer_parameter_ids(grower.optimizer)
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in grower.model.parameters()}
    # the final epoch stepped every parameter, the inserted layers included
    assert all(p in grower.optimizer.state for p in grower.model.parameters())
    # Adam's state of the old parameters survives each rebuild; new layers start fresh:
    # 300 samples / batch 32 = 10 steps per epoch; 7 epochs in all; the layer inserted
    # after stage 0 trained 5 epochs, the one inserted after stage 1 trained 3.
    steps = {name: int(grower.optimizer.state[p]["step"]) for name, p in grower.model.named_parameters()}
    assert steps["stem.0.weight"] == steps["head.bias"] == 70
    inserted = sorted(steps[f"layers.{i}.affine.weight"] for i in range(3))
    assert inserted == [30, 50, 70]


def test_inserted_layer_is_epsilon_times_unit_eigenvector_and_change_is_real(train_val):
    """Right after the insertion (before any training) the new layer is epsilon * phi."""
    train, _ = train_val
    snapshots = []

    class Spy(Callback):
        def on_insert(self, grower, insertion):
            snapshots.append((copy.deepcopy(grower.model), insertion.proposal, insertion.search))

    config = short_config(strategy="td", max_depth=2, final_epochs=0, neurons=1)
    grower = Grower(small_model(), "mse", config, callbacks=[Spy()])
    history = grower.fit(train)
    (record,) = history.insertions
    ((model, proposal, search),) = snapshots
    assert record.location == proposal.location
    assert record.epsilon == search.epsilon
    layer = model.layers[record.location]
    assert torch.equal(layer.affine.weight.detach(), record.epsilon * proposal.direction[:, :-1])
    assert torch.equal(layer.affine.bias.detach(), record.epsilon * proposal.direction[:, -1])
    rows = proposal.direction
    norms = rows.norm(dim=1)
    assert int((norms > 0).sum()) == 1  # neurons=1: one active row, a unit eigenvector
    assert norms.max().item() == pytest.approx(1.0, rel=1e-12)
    assert proposal.curvature == pytest.approx(max(record.eigenvalues), rel=1e-12)
    assert record.predicted_change == pytest.approx(-0.5 * record.epsilon**2 * max(record.eigenvalues), rel=1e-12)
    # actual_change is the real change of the training loss (all 300 samples are searched)
    x, y = train
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        zeroed.layers[record.location].affine.weight.zero_()
        zeroed.layers[record.location].affine.bias.zero_()
        change = F.mse_loss(model(x), y).item() - F.mse_loss(zeroed(x), y).item()
    assert change == pytest.approx(record.actual_change, rel=1e-9, abs=1e-13)
    assert change < 0


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_every_strategy_runs(strategy, train_val):
    """Every registered strategy runs through the grower (the transfer baselines too)."""
    train, val = train_val
    grower = Grower(small_model(), "mse", short_config(strategy=strategy))
    history = grower.fit(train, val)
    assert history.strategy == strategy
    ids = optimizer_parameter_ids(grower.optimizer)
    assert set(ids) == {id(p) for p in grower.model.parameters()}
    if strategy == "small-init":  # the layers go in before training, small: no stage inserts one
        assert grower.model.depth == 3 and history.insertions == [] and {e.depth for e in history.epochs} == {3}
        return
    if not inserts_layers(strategy):
        assert grower.model.depth == 1
        assert history.insertions == []
        assert "no growth" in history.stop_reason
        assert {e.depth for e in history.epochs} == {1}
        assert len(history.epochs) == 1  # only the final epochs train
        return
    assert grower.model.depth == 3
    assert "max depth" in history.stop_reason
    assert len(history.insertions) == 2
    for record in history.insertions:
        assert 0 <= record.location <= record.depth
        if strategy in ("td", "td-where", "td-how", "small-where", "td-eigenspace"):
            assert len(record.eigenvalues) == record.depth + 1
        else:
            assert record.eigenvalues is None
        if strategy in ("td", "td-where", "small-where", "td-eigenspace"):
            assert record.location == max(range(record.depth + 1), key=record.eigenvalues.__getitem__)
        if strategy in ("td", "td-how", "td-eigenspace"):
            assert record.actual_change <= 0
        if strategy in ("td-where", "random", "random-location", "zero", "small", "small-where"):
            assert record.epsilon == 1.0  # inserted as proposed, no line search
        if strategy == "zero":
            assert record.location == record.depth  # the last location: right before the head
            assert record.actual_change == 0.0
            assert record.predicted_change == 0.0
    if strategy == "zero":
        # sigma'(0) = 0: a zero layer gets zero gradient and stays exactly zero while training
        for layer in grower.model.layers[1:]:
            assert torch.count_nonzero(layer.affine.weight) == 0
            assert torch.count_nonzero(layer.affine.bias) == 0


def test_plateau_schedule():
    from topogrow.growth.schedules import FixedEpochs, Plateau

    assert not FixedEpochs(2).stage_done([1.0]) and FixedEpochs(2).stage_done([1.0, 0.9])
    plateau = Plateau(patience=2, min_delta=0.01, max_epochs=6)
    assert not plateau.stage_done([1.0, 1.0])  # not enough epochs to judge
    assert not plateau.stage_done([1.0, 0.5, 0.25])  # still improving
    assert plateau.stage_done([1.0, 0.5, 0.499, 0.498])  # < 1% better than the best before
    assert plateau.stage_done([1.0, 0.9, 0.8, 0.7, 0.6, 0.5])  # max_epochs


def test_plateau_growth_run(train_val):
    train, val = train_val
    config = short_config(strategy="td", schedule="plateau", patience=1, epochs_per_stage=3)
    grower = Grower(small_model(), "mse", config)
    history = grower.fit(train, val)
    assert grower.model.depth == 3
    stage_lengths = [sum(e.stage == s.stage for e in history.epochs) for s in history.stages]
    assert all(2 <= n <= 3 for n in stage_lengths[:-1])


def test_growth_is_reproducible_with_a_seed(train_val):
    train, val = train_val
    runs = [Grower(small_model(), "mse", short_config(strategy="td-how", seed=3)).fit(train, val) for _ in range(2)]
    assert [s.location for s in runs[0].stages] == [s.location for s in runs[1].stages]
    assert [e.val_loss for e in runs[0].epochs] == [e.val_loss for e in runs[1].epochs]


def test_cross_entropy_growth_with_a_dataloader():
    x, y = classification_data(200, seed=4)
    loader = DataLoader(TensorDataset(x, y), batch_size=25, shuffle=True, generator=torch.Generator().manual_seed(0))
    grower = Grower(
        small_model(out_features=3, width=6), "cross_entropy", short_config(strategy="td", max_depth=2, final_epochs=0)
    )
    history = grower.fit(loader)
    assert grower.model.depth == 2
    (record,) = history.insertions
    assert record.actual_change <= 0
    assert len(record.eigenvalues) == 2


def test_growth_stops_when_no_eigenvalue_exceeds_the_tolerance(train_val):
    train, val = train_val
    grower = Grower(small_model(), "mse", short_config(strategy="td", tolerance=1e12))
    history = grower.fit(train, val)
    assert grower.model.depth == 1
    assert "tolerance" in history.stop_reason
    assert history.insertions == []
    assert history.stages[0].eigenvalues is not None


# ------------------------------------------------------------ 7. errors
def test_nan_in_training_or_validation_data_is_rejected(train_val):
    (x, y), (xv, yv) = train_val
    for bad in ("x", "y"):
        xb, yb = x.clone(), y.clone()
        (xb if bad == "x" else yb)[17, 0] = float("nan")
        with pytest.raises(ValueError, match="NaN"):
            Grower(small_model(), "mse", short_config()).fit((xb, yb), (xv, yv))
    xvb = xv.clone()
    xvb[3, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        Grower(small_model(), "mse", short_config()).fit((x, y), (xvb, yv))


def test_malformed_training_data_is_rejected(train_val):
    (x, y), _ = train_val
    with pytest.raises(ValueError, match="300 samples but y has 299"):
        Grower(small_model(), "mse", short_config()).fit((x, y[:-1]))
    with pytest.raises(ValueError, match=r"expected input of shape \(batch, 4\)"):
        Grower(small_model(), "mse", short_config()).fit((x[:, :3], y))
    with pytest.raises(ValueError, match="per sample but the model predicts"):
        Grower(small_model(), "mse", short_config()).fit((x, y[:, 0]))
    with pytest.raises(ValueError, match="empty"):
        Grower(small_model(), "mse", short_config()).fit((x[:0], y[:0]))
    with pytest.raises(ValueError, match="empty"):
        Grower(small_model(), "mse", short_config()).fit(DataLoader(TensorDataset(x[:0], y[:0])))
    with pytest.raises(TypeError):
        Grower(small_model(), "mse", short_config()).fit((x, y, y))


def test_unknown_loss_name_is_rejected():
    with pytest.raises(ValueError, match="did you mean 'mse'"):
        Grower(small_model(), "mae", short_config())


def test_class_labels_out_of_range_are_rejected():
    x, y = classification_data(200, seed=5)
    for labels in (y + 3, y - 1):
        with pytest.raises(ValueError, match=r"class labels must be in 0\.\.2"):
            Grower(small_model(out_features=3), "cross_entropy", short_config()).fit((x, labels))


def test_a_single_class_label_out_of_range_is_rejected():
    x, y = classification_data(200, seed=5)
    y[0] = 3
    with pytest.raises(ValueError, match="class labels"):
        Grower(small_model(out_features=3), "cross_entropy", short_config()).fit((x, y))


def test_validation_labels_out_of_range_are_rejected():
    x, y = classification_data(200, seed=5)
    with pytest.raises(ValueError, match="class labels"):
        Grower(small_model(out_features=3), "cross_entropy", short_config()).fit((x, y), (x, y + 3))


def test_nan_in_a_training_dataloader_is_rejected(train_val):
    (x, y), _ = train_val
    xb = x.clone()
    xb[100, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        Grower(small_model(), "mse", short_config()).fit(DataLoader(TensorDataset(xb, y), batch_size=32))
