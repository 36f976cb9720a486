"""What a PyTorch user expects of a trainer, in the Grower: gradient clipping and accumulation,
autocast, per-batch and epoch-start hooks, metrics that early stopping and rollback monitor,
batch transforms, CSV and TensorBoard loggers, the model's own device, the global RNG left alone."""

import csv
import math

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from helpers import regression_data, short_growth_config
from topogrow import Callback, Grower, ResidualMLP
from topogrow.growth import CSVLogger, TensorBoardLogger


def _fixed(**changes):
    """A fixed network (no growth): one phase of ``final_epochs`` plain epochs."""
    return short_growth_config(strategy="no-growth", **changes)


def _model(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return ResidualMLP(4, 8, 1, 1).to(dtype)


def test_gradient_clipping_bounds_every_step():
    data = regression_data(64, 0)
    model = _model()
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    # one SGD step of lr 1 on one batch: the update is the clipped gradient
    Grower(model, "mse", _fixed(optimizer="sgd", lr=1.0, grad_clip=1e-3, final_epochs=1, batch_size=64)).fit(data)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert torch.linalg.vector_norm(after - before) == pytest.approx(1e-3, rel=1e-6)


def test_accumulating_two_batches_equals_one_batch_of_twice_the_size():
    data = regression_data(128, 1)
    config = _fixed(optimizer="sgd", lr=0.1, final_epochs=2)
    accumulated, whole = _model(), _model()
    Grower(accumulated, "mse", config.replace(batch_size=32, accumulate_batches=2)).fit(data)
    # TensorBatches cut one permutation per epoch: batches of 64 hold the same samples as pairs of 32
    Grower(whole, "mse", config.replace(batch_size=64)).fit(data)
    for a, b in zip(accumulated.parameters(), whole.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_an_epochs_last_shorter_accumulation_steps_too():
    steps = []

    class Counter(Callback):
        def on_fit_start(self, grower):
            original = grower.optimizer.step

            def step(*args, **kwargs):
                steps.append(1)
                return original(*args, **kwargs)

            grower.optimizer.step = step

    # 5 batches of 32 a epoch, steps after batches 3 and 5
    Grower(_model(), "mse", _fixed(final_epochs=1, accumulate_batches=3), callbacks=[Counter()]).fit(
        regression_data(160, 2)
    )
    assert len(steps) == 2


def test_autocast_bfloat16_runs_the_forward_in_bfloat16_on_cpu():
    model = _model(dtype=torch.float32)
    seen = []
    model.head.register_forward_hook(lambda module, args, out: seen.append(out.dtype) if module.training else None)
    x, y = regression_data(128, 3, dtype=torch.float32)
    history = Grower(model, "mse", _fixed(final_epochs=2, autocast="bfloat16")).fit((x, y))
    assert seen.count(torch.bfloat16) == 2 * 4  # every training batch (2 epochs of 4); probes run in float32
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert math.isfinite(history.epochs[-1].train_loss)
    with pytest.raises(ValueError, match="autocast='float16' needs CUDA"):
        Grower(_model(), "mse", _fixed(autocast="float16"))
    with pytest.raises(ValueError, match="autocast"):
        _fixed(autocast="fp8")


def test_hooks_see_every_epoch_and_batch_and_the_optimizer_exists_at_fit_start():
    events = []

    class Watcher(Callback):
        def on_fit_start(self, grower):
            events.append(("fit_start", grower.optimizer is not None))

        def on_train_epoch_start(self, grower):
            events.append(("epoch_start", len(grower.history.epochs) + 1))

        def on_train_batch_end(self, grower, index, loss):
            events.append(("batch", index, math.isfinite(loss)))

    # 96 samples in batches of 32: 3 batches per epoch; growth to depth 3 with stages of 2 epochs
    history = Grower(_model(), "mse", short_growth_config(), callbacks=[Watcher()]).fit(regression_data(96, 4))
    assert events[0] == ("fit_start", True)
    starts = [e[1] for e in events if e[0] == "epoch_start"]
    assert starts == list(range(1, len(history.epochs) + 1))
    batches = [e[1:] for e in events if e[0] == "batch"]
    assert batches == [(i, True) for _ in history.epochs for i in range(3)]


def test_a_per_step_schedule_of_your_own_runs_through_insertions_without_a_jump():
    data = regression_data(96, 5)  # 3 batches per epoch
    config = short_growth_config(
        lr_schedule=lambda optimizer: torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.05, total_steps=200),
        lr_interval="step",
    )
    rates = []

    class Rates(Callback):
        def on_train_batch_end(self, grower, index, loss):
            rates.append([group["lr"] for group in grower.optimizer.param_groups])

    model = _model()
    history = Grower(model, "mse", config, callbacks=[Rates()]).fit(data)
    assert model.depth == 3 and len(rates) == 3 * len(history.epochs)
    reference = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.05)
    plain = torch.optim.lr_scheduler.OneCycleLR(reference, max_lr=0.05, total_steps=200)
    for step_rates in rates:
        reference.step()
        plain.step()
        assert step_rates == pytest.approx([reference.param_groups[0]["lr"]] * len(step_rates), rel=1e-12)
    with pytest.raises(ValueError, match="lr_interval='step' steps a scheduler of your own"):
        short_growth_config(lr_interval="step")


def _accuracy(prediction, target):
    return (prediction.argmax(dim=1) == target).double().mean()


class _StatefulAccuracy:
    """A metric with reset/update/compute, as torchmetrics' are."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.right, self.total = 0, 0

    def update(self, prediction, target):
        self.right += int((prediction.argmax(dim=1) == target).sum())
        self.total += len(target)

    def compute(self):
        return torch.tensor(self.right / self.total)


def _classification(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g, dtype=torch.float64)
    return x, (x[:, 0] * x[:, 1] > 0).long()


def test_metrics_are_recorded_and_early_stopping_keeps_the_best_epoch_by_the_monitored_metric():
    train, val = _classification(256, 6), _classification(128, 7)
    torch.manual_seed(0)
    model = ResidualMLP(4, 8, 1, 2).double()
    config = _fixed(final_epochs=8, early_stopping=True, monitor="val_accuracy", mode="max")
    metrics = {"accuracy": _accuracy, "stateful": _StatefulAccuracy()}
    history = Grower(model, "cross_entropy", config, metrics=metrics).fit(train, val)
    values = [record.metrics["val_accuracy"] for record in history.epochs]
    assert [record.metrics["val_stateful"] for record in history.epochs] == pytest.approx(values)
    best = max(range(len(values)), key=lambda i: (values[i], -i))  # the first epoch of the best value
    kept = _accuracy(model(val[0]), val[1]).item()
    assert kept == pytest.approx(values[best])
    with pytest.raises(ValueError, match="monitor 'val_f1' is not a loss or a metric"):
        Grower(_model(), "mse", _fixed(monitor="val_f1"), metrics={"accuracy": _accuracy})
    with pytest.raises(TypeError, match="metric 'bad'"):
        Grower(_model(), "mse", _fixed(), metrics={"bad": 3})


def test_rollback_judges_an_insertion_by_the_monitored_metric():
    train, val = _classification(256, 8), _classification(128, 9)
    torch.manual_seed(0)
    model = ResidualMLP(4, 8, 1, 2).double()
    config = short_growth_config(rollback=True, monitor="val_accuracy", mode="max", min_delta=0.5)
    history = Grower(model, "cross_entropy", config, metrics={"accuracy": _accuracy}).fit(train, val)
    # an accuracy that rises by half of itself is out of reach: the first insertion is rolled back
    judged = [stage for stage in history.stages if stage.accepted is not None]
    assert judged and judged[0].accepted is False and "val_accuracy" in judged[0].note


class _Dicts(Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, index):
        return {"features": self.x[index], "target": self.y[index], "weight": 1.0}


def test_a_batch_transform_reads_dict_batches_everywhere_growth_reads_data():
    x, y = regression_data(128, 10)

    def loader():
        return DataLoader(_Dicts(x, y), batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))

    model = _model()
    with pytest.raises(TypeError, match="got a dict; pass batch_transform"):
        Grower(model, "mse", short_growth_config()).fit(loader())
    history = Grower(model, "mse", short_growth_config()).fit(
        loader(), batch_transform=lambda batch: (batch["features"], batch["target"])
    )
    pairs = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))
    same = Grower(_model(), "mse", short_growth_config()).fit(pairs)
    assert model.depth == 3
    assert [e.val_loss for e in history.epochs] == [e.val_loss for e in same.epochs]
    assert history.flops == same.flops
    triples = DataLoader(TensorDataset(x, y, torch.ones(128)), batch_size=32)
    with pytest.raises(TypeError, match="got a list of 3 items"):
        Grower(_model(), "mse", short_growth_config()).fit(triples)


def test_csv_logger_writes_a_row_per_epoch_and_per_insertion(tmp_path):
    history = Grower(_model(), "mse", short_growth_config(), callbacks=[CSVLogger(tmp_path / "log")]).fit(
        regression_data(96, 11)
    )
    with (tmp_path / "log" / "epochs.csv").open() as file:
        epochs = list(csv.DictReader(file))
    with (tmp_path / "log" / "insertions.csv").open() as file:
        insertions = list(csv.DictReader(file))
    assert [float(row["val_loss"]) for row in epochs] == [record.val_loss for record in history.epochs]
    inserted = [stage for stage in history.stages if stage.location is not None]
    assert [int(row["location"]) for row in insertions] == [stage.location for stage in inserted]
    assert [float(row["epsilon"]) for row in insertions] == [stage.epsilon for stage in inserted]


def test_tensorboard_logger_writes_scalars_or_says_what_to_install(tmp_path):
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install tensorboard"):
            TensorBoardLogger(tmp_path)
        return
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    history = Grower(_model(), "mse", short_growth_config(), callbacks=[TensorBoardLogger(tmp_path / "tb")]).fit(
        regression_data(96, 12)
    )
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert {"train_loss", "val_loss", "depth", "insertion/location"} <= set(scalars)
    assert [e.value for e in events.Scalars("depth")] == [record.depth for record in history.epochs]


def test_device_none_keeps_the_model_where_it_is(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a machine with a GPU
    model = _model()
    grower = Grower(model, "mse", short_growth_config(device=None))
    assert grower.device == torch.device("cpu") and next(model.parameters()).device.type == "cpu"


def test_growth_leaves_the_global_random_state_as_training_alone_leaves_it():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    model = _model()
    torch.set_rng_state(state)
    Grower(model, "mse", short_growth_config(strategy="random")).fit(regression_data(96, 13))
    assert model.depth == 3
    assert torch.equal(torch.get_rng_state(), state)


def test_a_callback_that_adds_layers_without_handing_them_over_gets_a_warning():
    class Inserts(Callback):
        def on_fit_start(self, grower):
            grower.model.insert_layer(0)

    with pytest.warns(RuntimeWarning, match="in no optimiser group and will not train"):
        Grower(_model(), "mse", _fixed(final_epochs=1), callbacks=[Inserts()]).fit(regression_data(64, 14))

    weight = 0.1 * torch.randn(8, 8, dtype=torch.float64)

    class HandsOver(Callback):
        def on_fit_start(self, grower):
            grower.add_parameters(grower.model.insert_layer(0, weight, torch.zeros(8)).parameters())

    model = _model()
    Grower(model, "mse", _fixed(final_epochs=1), callbacks=[HandsOver()]).fit(regression_data(64, 14))
    assert not torch.equal(model.layers[0].affine.weight, weight)  # it trained


def test_a_torchmetrics_metric_is_recorded_as_its_own_compute():
    torchmetrics = pytest.importorskip("torchmetrics")
    train, val = _classification(256, 15), _classification(128, 16)
    torch.manual_seed(0)
    model = ResidualMLP(4, 8, 1, 2).double()
    metric = torchmetrics.classification.MulticlassAccuracy(num_classes=2, average="micro").double()
    history = Grower(model, "cross_entropy", _fixed(final_epochs=3), metrics={"acc": metric}).fit(train, val)
    assert history.epochs[-1].metrics["val_acc"] == pytest.approx(_accuracy(model(val[0]), val[1]).item())
