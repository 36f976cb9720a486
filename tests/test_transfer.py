"""Transfer learning by growth (topogrow.transfer.adapt)."""

import math

import pytest
import torch

from topogrow import ResidualCNN, ResidualMLP, ViT
from topogrow.growth.config import GrowthConfig
from topogrow.growth.strategies import transfer_strategies
from topogrow.nn.lora import adaptable_modules, add_low_rank_adapters
from topogrow.transfer import adapt

torch.set_num_threads(1)


def _mlp_task():
    """A pretrained-looking float64 MLP and a target task it does not solve yet."""
    torch.manual_seed(0)
    model = ResidualMLP(in_features=3, width=6, depth=1, out_features=1).double()
    x = torch.randn(96, 3, dtype=torch.float64)
    y = torch.sin(2 * x[:, :1]) * x[:, 1:2] + 0.5 * x[:, 2:3] ** 2
    return model, (x, y), "mse"


def _cnn_task():
    torch.manual_seed(0)
    model = ResidualCNN(1, channels=(3, 4), depths=(1, 0), out_features=2, image_size=8).double()
    x = torch.randn(48, 1, 8, 8, dtype=torch.float64)
    y = (x[:, 0, :4].mean(dim=(1, 2)) > 0).long()
    return model, (x, y), "cross_entropy"


def _vit_task():
    torch.manual_seed(0)
    model = ViT(image_size=8, patch_size=4, in_channels=1, dim=8, depth=1, heads=2, out_features=2).double()
    x = torch.randn(48, 1, 8, 8, dtype=torch.float64)
    y = (x[:, 0, :, :4].mean(dim=(1, 2)) > 0).long()
    return model, (x, y), "cross_entropy"


TASKS = {"mlp": _mlp_task, "cnn": _cnn_task, "vit": _vit_task}


def _snapshot(model):
    """Each pretrained parameter (by identity) with a copy of its values, and the head's ones."""
    head = {id(p) for module in model.head_modules() for p in module.parameters()}
    return [(p, p.detach().clone(), id(p) in head) for p in model.parameters()]


@pytest.mark.parametrize("name", sorted(TASKS))
@pytest.mark.parametrize("train_head", [True, False])
def test_td_adapt_freezes_inserts_and_lowers_the_target_loss(name, train_head):
    model, data, loss = TASKS[name]()
    before = _snapshot(model)
    depth, n_locations = model.depth, len(model.locations)
    result = adapt(
        model, data, loss, n_layers=2, train_head=train_head, epochs=4, lr=1e-2, batch_size=16, strategy="td"
    )

    assert result.model is model
    assert model.depth == depth + 2 and result.n_inserted == 2
    assert len(result.epsilons) == len(result.eigenvalues) == len(result.line_searches) == 2
    # Frozen: every pretrained parameter is bit-identical; the head moved iff it trained.
    for parameter, values, is_head in before:
        if is_head and train_head:
            assert not torch.equal(parameter, values)
        else:
            assert torch.equal(parameter, values)
            assert not parameter.requires_grad
    old = {id(p) for p, _, _ in before}
    new = [p for p in model.parameters() if id(p) not in old]
    head = sum(v.numel() for _, v, is_head in before if is_head)
    assert len(new) == 4  # weight and bias of two layers
    assert all(p.requires_grad for p in new)
    assert result.n_trainable == sum(p.numel() for p in new) + (head if train_head else 0)
    assert result.n_parameters == sum(p.numel() for p in model.parameters())
    # Each line search never raised the target loss, and found a decrease at the first insertion.
    for search in result.line_searches:
        assert search.loss_after <= search.loss_before
    assert result.line_searches[0].loss_after < result.line_searches[0].loss_before
    assert result.epsilons[0] != 0.0
    assert [len(mu) for mu in result.eigenvalues] == [n_locations, n_locations + 1]  # recomputed after each
    assert result.final_loss < result.initial_loss
    # epochs // n_layers per insertion
    assert [r.stage for r in result.history] == [0, 0, 1, 1]


def test_td_line_search_follows_the_second_order_prediction():
    """A small first insertion on the untouched model: the measured change has the sign and
    size of -(eps^2/2) sum mu (the eigenvector initialisation really is a descent direction)."""
    model, data, loss = _mlp_task()
    result = adapt(
        model, data, loss, n_layers=1, epochs=0, epsilons=(1e-3,), neurons=1, train_head=False, strategy="td"
    )
    predicted, actual = result.predicted_changes[0], result.line_searches[0].change
    assert predicted < 0 and actual < 0
    assert actual / predicted == pytest.approx(1.0, abs=0.05)
    assert result.final_loss == pytest.approx(result.line_searches[0].loss_after, rel=1e-12)
    assert result.history == []


def test_epochs_schedule_puts_the_remainder_after_the_last_insertion():
    model, data, loss = _mlp_task()
    val = (data[0][:20], data[1][:20])
    result = adapt(model, data, loss, n_layers=2, epochs=5, val_data=val)
    assert [r.stage for r in result.history] == [0, 0, 1, 1, 1]
    assert [r.depth for r in result.history] == [2, 2, 3, 3, 3]
    assert all(r.val_loss != r.train_loss for r in result.history)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_random_and_zero_location_baselines(name):
    for strategy in ("random-location", "zero-location"):
        model, data, loss = TASKS[name]()
        before = _snapshot(model)
        old = {id(p) for p, _, _ in before}
        result = adapt(model, data, loss, n_layers=2, epochs=2, lr=1e-2, batch_size=16, strategy=strategy, seed=3)
        assert result.n_inserted == 2 and result.line_searches == [] and result.eigenvalues == []
        new = [p for p in model.parameters() if id(p) not in old]
        assert len(new) == 4
        for parameter, values, is_head in before:
            assert torch.equal(parameter, values) != is_head
        if strategy == "random-location":
            assert result.epsilons == [1.0, 1.0]
            assert all(p.abs().sum() > 0 for p in new)
        else:
            # sigma'(0) = 0: a zero layer gets no gradient and stays exactly the identity.
            assert result.epsilons == [0.0, 0.0]
            assert all(torch.equal(p, torch.zeros_like(p)) for p in new)
            assert "cannot train" in result.notes[0]


def test_head_only_and_full_baselines():
    model, data, loss = _vit_task()
    before = _snapshot(model)
    result = adapt(model, data, loss, n_layers=3, epochs=2, lr=1e-2, batch_size=16, strategy="head-only")
    assert result.n_inserted == 0 and model.depth == 1
    assert result.n_trainable == sum(v.numel() for _, v, is_head in before if is_head)
    for parameter, values, is_head in before:
        assert torch.equal(parameter, values) != is_head
    assert len(result.history) == 2

    model, data, loss = _mlp_task()
    before = _snapshot(model)
    result = adapt(model, data, loss, epochs=3, lr=1e-2, batch_size=16, strategy="full", train_head=False)
    assert result.n_inserted == 0
    assert result.n_trainable == result.n_parameters == sum(v.numel() for _, v, _ in before)
    assert all(not torch.equal(parameter, values) for parameter, values, _ in before)
    assert result.final_loss < result.initial_loss


def test_no_insertion_with_td_trains_only_the_head():
    model, data, loss = _mlp_task()
    result = adapt(model, data, loss, n_layers=0, epochs=2)
    assert result.n_inserted == 0 and len(result.history) == 2
    assert result.n_trainable == sum(p.numel() for p in model.head.parameters())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"strategy": "tdd"}, "did you mean 'td'"),
        ({"strategy": "adapter"}, "unknown strategy"),
        ({"n_layers": -1}, "n_layers must be an integer >= 0"),
        ({"n_layers": 1.5}, "n_layers"),
        ({"n_layers": True}, "n_layers"),
        ({"epochs": -2}, "epochs"),
        ({"lr": 0.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"batch_size": 0}, "batch_size"),
        ({"seed": -1}, "seed"),
        ({"train_head": "yes"}, "train_head"),
        ({"neurons": 0}, "neurons"),
        ({"rel_threshold": 1.5}, "rel_threshold"),
        ({"rel_threshold": None}, "neurons"),
        ({"epsilons": ()}, "epsilons"),
        ({"epsilons": (0.1, -1.0)}, "epsilons"),
        ({"loss": "mae"}, "unknown loss"),
        ({"strategy": "head-only", "train_head": False}, "nothing to train"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match):
    model, data, loss = _mlp_task()
    kwargs = {"loss": loss, **kwargs}
    with pytest.raises(ValueError, match=match):
        adapt(model, data, **kwargs)


def test_not_a_growable_model_raises_type_error():
    with pytest.raises(TypeError, match="growable model"):
        adapt(torch.nn.Linear(3, 1), (torch.randn(4, 3), torch.randn(4, 1)))


def test_strategies_listed():
    expected = ("td", "small-where", "td-eigenspace", "random-location", "zero-location", "head-only", "full", "lora")
    assert transfer_strategies() == expected


def test_dataloader_and_float32():
    """A DataLoader as the target data, on a float32 model."""
    torch.manual_seed(0)
    model = ResidualMLP(in_features=3, width=6, depth=1, out_features=1)
    x = torch.randn(64, 3)
    y = torch.tanh(x.sum(dim=1, keepdim=True))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16, shuffle=True)
    result = adapt(model, loader, "mse", n_layers=1, epochs=3, lr=1e-2)
    assert result.n_inserted == 1 and len(result.history) == 3
    search = result.line_searches[0]  # small-where inserts its small layer as drawn, and records the change
    assert search.epsilon == 1.0 and abs(search.loss_after - search.loss_before) < 0.01 * search.loss_before
    assert result.final_loss < result.initial_loss


# ----------------------------------------------------------------------------- low-rank adapters (LoRA)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_low_rank_adapters_start_as_the_pretrained_network(name):
    """B = 0: attaching adapters leaves the function unchanged; the weight is original + B A."""
    model, (x, _), _ = TASKS[name]()
    before = model(x).detach()
    modules = adaptable_modules(model)
    adapters = add_low_rank_adapters(model, rank=2, generator=torch.Generator().manual_seed(0))
    assert len(adapters) == len(modules) > 0
    assert torch.equal(model(x), before)
    for module, adapter in zip(modules, adapters, strict=True):
        torch.nn.init.normal_(adapter.up)
        original = module.parametrizations.weight.original
        expected = original + (adapter.up @ adapter.down).reshape(original.shape)
        assert torch.allclose(module.weight, expected, rtol=0, atol=1e-12)
        assert adapter.down.shape == (2, original[0].numel()) and adapter.up.shape == (original.shape[0], 2)
    assert not torch.allclose(model(x), before)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_lora_adapt_matches_the_td_budget_and_freezes_the_pretrained_weights(name):
    model, data, loss = TASKS[name]()
    before = _snapshot(model)
    depth = model.depth
    result = adapt(model, data, loss, n_layers=2, epochs=6, lr=1e-2, batch_size=16, strategy="lora")
    assert model.depth == depth and result.n_inserted == 0
    # Pretrained weights (now the parametrizations' "original") bit-identical; the head trained.
    for parameter, values, is_head in before:
        assert torch.equal(parameter, values) != is_head
        assert parameter.requires_grad == is_head
    head = sum(v.numel() for _, v, is_head in before if is_head)
    adapters = result.n_trainable - head
    # The rank is the one whose adapters come closest to two inserted layers' parameters.
    layer = sum(math.prod(model.insertion_shape(loc)) for loc in model.locations) / len(model.locations)
    per_rank = adapters / result.lora_rank
    assert abs(adapters - 2 * layer) <= per_rank / 2 + 1e-9 or result.lora_rank == 1
    assert result.final_loss < result.initial_loss


def test_lora_explicit_rank_and_errors():
    model, data, loss = _mlp_task()
    result = adapt(model, data, loss, n_layers=0, epochs=1, strategy="lora", lora_rank=1, train_head=False)
    assert result.lora_rank == 1 and result.n_trainable == model.depth * (6 + 6)
    with pytest.raises(ValueError, match="lora_rank"):
        adapt(_mlp_task()[0], data, loss, strategy="lora", lora_rank=0)
    with pytest.raises(ValueError, match="n_layers >= 1 or lora_rank"):
        adapt(_mlp_task()[0], data, loss, strategy="lora", n_layers=0)
    shallow = ResidualMLP(in_features=3, width=6, depth=0, out_features=1).double()
    with pytest.raises(ValueError, match="no residual layers to adapt"):
        adapt(shallow, data, loss, strategy="lora")


@pytest.mark.parametrize("strategy", ["td", "full"])
def test_restore_best_keeps_the_epoch_with_the_lowest_validation_loss(strategy):
    """Early stopping: the returned model's validation loss is the lowest of the last stage's epochs
    (and of its starting point), and the model is that epoch's."""
    from topogrow.training.data import TensorBatches
    from topogrow.training.epochs import evaluate_loss

    model, (x, y), loss = _mlp_task()
    val = (x[:24] + 0.3 * torch.randn_like(x[:24]), y[:24])
    result = adapt(
        model,
        (x[24:], y[24:]),
        loss,
        n_layers=2,
        epochs=12,
        lr=5e-2,
        val_data=val,
        restore_best=True,
        strategy=strategy,
        batch_size=16,
    )
    last_stage = [r for r in result.history if r.stage == result.history[-1].stage]
    kept = evaluate_loss(model, TensorBatches(*val, 64, False, 0), torch.nn.functional.mse_loss)
    first_of_stage = len(result.history) - len(last_stage)
    assert first_of_stage <= result.best_epoch <= len(result.history)
    if result.best_epoch > first_of_stage:
        assert kept == pytest.approx(result.history[result.best_epoch - 1].val_loss, rel=1e-12)
    assert kept <= min(r.val_loss for r in last_stage) + 1e-12
    with pytest.raises(ValueError, match="restore_best needs val_data"):
        adapt(_mlp_task()[0], (x, y), loss, restore_best=True)


def test_forced_locations():
    """td at a forced location still inserts by the eigenvectors there (its line search lowers the
    loss); random-location goes there too; bad locations are named."""
    _, data, loss = _mlp_task()
    model = ResidualMLP(in_features=3, width=6, depth=2, out_features=1).double()
    result = adapt(model, data, loss, n_layers=2, epochs=0, strategy="td", locations=[0, 0])
    assert result.locations == [0, 0]
    assert all(s.loss_after <= s.loss_before for s in result.line_searches)
    assert result.line_searches[0].loss_after < result.line_searches[0].loss_before
    model = ResidualMLP(in_features=3, width=6, depth=2, out_features=1).double()
    result = adapt(model, data, loss, n_layers=2, epochs=0, strategy="random-location", locations=[2, 3])
    assert result.locations == [2, 3]
    assert not torch.equal(model.layers[3].affine.weight, torch.zeros(6, 6))
    for kwargs, match in [
        ({"locations": [0]}, "one location per inserted layer"),
        ({"locations": [0, 4]}, r"locations\[1\] must be an integer in 0..3"),
        ({"locations": [3, 0]}, r"locations\[0\] must be an integer in 0..2"),
        ({"locations": [0, 0], "strategy": "lora"}, "inserting strategies"),
    ]:
        with pytest.raises(ValueError, match=match):
            deep = ResidualMLP(in_features=3, width=6, depth=2, out_features=1).double()
            adapt(deep, data, loss, n_layers=2, **{"strategy": "td", **kwargs})


def test_adapt_uses_the_librarys_default_strategy():
    model, data, loss = _mlp_task()
    result = adapt(model, data, loss, n_layers=1, epochs=1, batch_size=16)
    assert result.strategy == GrowthConfig().strategy == "small-where" and result.n_inserted == 1


def test_adapt_trains_to_convergence_by_default():
    """epochs=None: a stage after each insertion but the last, then the default rule: the run ends
    stop_patience epochs after its best validation loss, and that epoch is the one kept."""
    torch.manual_seed(0)
    model = ResidualMLP(in_features=3, width=6, depth=1, out_features=1)
    x = torch.randn(96, 3)
    y = torch.tanh(x.sum(dim=1, keepdim=True))
    train, val = (x[:64], y[:64]), (x[64:], y[64:])
    result = adapt(model, train, "mse", n_layers=2, val_data=val, lr=1e-2, batch_size=16)
    defaults = GrowthConfig()
    losses = [e.val_loss for e in result.history]
    best = min(range(len(losses)), key=losses.__getitem__)
    assert result.n_inserted == 2 and result.model.depth == 3
    assert [e.depth for e in result.history[: defaults.epochs_per_stage]] == [2] * defaults.epochs_per_stage
    assert len(losses) < defaults.epochs_per_stage + defaults.final_epochs  # it converged, not the cap
    assert len(losses) - 1 - best >= defaults.stop_patience  # nothing gained in the last stop_patience epochs
    assert result.best_epoch == result.history[best].epoch
    fixed = adapt(ResidualMLP(3, 6, 1, 1), train, "mse", n_layers=2, epochs=6, val_data=val, batch_size=16)
    assert len(fixed.history) == 6  # a number of epochs is a fixed budget, as before
