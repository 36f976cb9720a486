"""topogrow.lightning with the real PyTorch Lightning on CPU: growth during ``Trainer.fit`` at
the scheduled epochs, into the live optimiser and scheduler; logging; reload and resume of a
grown module equal to an uninterrupted run."""

import csv
import math
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

import topogrow
import topogrow.lightning
from topogrow.lightning import LOGGED, GrowthCallback, chosen_mu

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*does not have many workers:UserWarning",
    "ignore:.*number of training batches.*:UserWarning",
    "ignore:.*LeafSpec.*is deprecated",
    "ignore:You defined a `validation_step` but have no `val_dataloader`",
    "ignore:The dirpath has changed",
)

LR, T_MAX = 1e-2, 12


def _data(n=256):
    generator = torch.Generator().manual_seed(0)
    X = torch.randn(n, 4, generator=generator)
    return X, torch.sin(2 * X[:, :1]) + X[:, 1:2] * X[:, 2:3]


def _loader():
    return DataLoader(TensorDataset(*_data()), batch_size=64)  # 4 batches, the same order every epoch


class Regressor(L.LightningModule):
    """A ResidualMLP of depth ``depth`` under Adam and one cosine decay over ``T_MAX`` epochs."""

    def __init__(self, depth=1, lr=LR):
        super().__init__()
        self.save_hyperparameters()
        torch.manual_seed(0)
        self.model = topogrow.ResidualMLP(4, 8, depth, 1)

    def forward(self, x):
        return self.model(x)

    def training_step(self, batch, _):
        loss = F.mse_loss(self(batch[0]), batch[1])
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, _):
        self.log("val_loss", F.mse_loss(self(batch[0]), batch[1]))

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=T_MAX)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}


class Recorder(Callback):
    """Every group's learning rate at the start of each epoch; Adam's step count of the first
    parameter after each epoch (after GrowthCallback's end of epoch)."""

    def __init__(self):
        self.lrs, self.steps = [], []

    def on_train_epoch_start(self, trainer, pl_module):
        self.lrs.append([group["lr"] for group in trainer.optimizers[0].param_groups])

    def on_train_epoch_end(self, trainer, pl_module):
        optimizer = trainer.optimizers[0]
        self.steps.append(int(optimizer.state[optimizer.param_groups[0]["params"][0]]["step"]))


def _trainer(epochs, *callbacks, **options):
    options = {"logger": False, **options}
    return L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        num_sanity_val_steps=0,
        callbacks=list(callbacks),
        **options,
    )


def _fit(epochs, tmp_path=None, ckpt_path=None, module=None, **options):
    """A Regressor trained ``epochs`` epochs, growing every 2 (at most to depth 3), with a
    checkpoint after every epoch in ``tmp_path`` when given."""
    growth = GrowthCallback("mse", epochs_per_stage=2, max_depth=3)
    callbacks = [growth, Recorder()]
    if tmp_path is not None:
        callbacks.append(ModelCheckpoint(dirpath=tmp_path, filename="{epoch}", save_top_k=-1))
    trainer = _trainer(epochs, *callbacks, **options)
    module = module or Regressor()
    trainer.fit(module, _loader(), _loader(), ckpt_path=ckpt_path)
    return module, trainer, growth, callbacks[1]


def _cosine(epoch):
    return LR * (1 + math.cos(math.pi * epoch / T_MAX)) / 2


def test_growth_happens_at_the_scheduled_epochs_until_max_depth():
    module, trainer, growth, _ = _fit(7)
    assert module.model.depth == 3
    assert [s.epoch for s in growth.history.stages] == [2, 4, 6]
    assert [s.depth for s in growth.history.stages] == [1, 2, 3]
    assert all(s.location is not None and s.epsilon is not None for s in growth.history.stages[:2])
    assert growth.history.stages[2].location is None
    assert growth.history.stop_reason == "reached max depth 3" and not growth.growing
    assert [e.depth for e in growth.history.epochs] == [1, 1, 2, 2, 3, 3, 3]
    assert len(trainer.optimizers[0].param_groups) == 3
    assert float(trainer.callback_metrics["growth/depth"]) == 3


def test_the_optimiser_keeps_adams_state_and_every_group_follows_the_schedule():
    module, trainer, growth, recorder = _fit(7)
    # Adam's step count of the old parameters goes on through both insertions (4 batches an epoch)
    assert recorder.steps == [4, 8, 12, 16, 20, 24, 28]
    optimizer = trainer.optimizers[0]
    new = optimizer.param_groups[1]["params"][0]
    assert int(optimizer.state[new]["step"]) == 4 * 5  # inserted after epoch 2
    # one cosine decay for every group, new groups joining at the current rate
    assert [len(lrs) for lrs in recorder.lrs] == [1, 1, 2, 2, 3, 3, 3]
    for epoch, lrs in enumerate(recorder.lrs):
        assert lrs == pytest.approx([_cosine(epoch)] * len(lrs), rel=1e-12, abs=0)
    assert [group["initial_lr"] for group in optimizer.param_groups] == [LR] * 3
    assert trainer.lr_scheduler_configs[0].scheduler.base_lrs == [LR] * 3


def test_mu_location_epsilon_and_depth_are_logged(tmp_path):
    _, _, growth, _ = _fit(5, logger=CSVLogger(tmp_path, name="run"))
    rows = list(csv.DictReader((tmp_path / "run" / "version_0" / "metrics.csv").open()))
    assert set(LOGGED) <= set(rows[0])
    grown = [row for row in rows if row["growth/location"]]
    stages = growth.history.stages
    assert len(grown) == 2
    for row, stage in zip(grown, stages, strict=True):
        assert int(row["epoch"]) + 1 == stage.epoch
        assert float(row["growth/location"]) == stage.location
        assert float(row["growth/epsilon"]) == pytest.approx(stage.epsilon, rel=1e-6)
        assert stage.eigenvalues is not None
        assert float(row["growth/mu"]) == pytest.approx(chosen_mu(stage), rel=1e-6)
    assert [float(row["growth/depth"]) for row in rows if row["growth/depth"]] == [1, 2, 2, 3, 3]


@pytest.mark.parametrize(
    "epochs, options",
    [(3, {}), (4, {"check_val_every_n_epoch": 2})],
    ids=["saved-at-epoch-end", "saved-at-validation-end"],
)
def test_a_stopped_run_resumed_from_its_checkpoint_equals_the_uninterrupted_run(tmp_path, recwarn, epochs, options):
    """Stopped after 3 epochs (grown once, after epoch 2), or after 4 with the checkpoint written
    at validation end, before that epoch's insertion (Lightning replays the epoch's end)."""
    whole, whole_trainer, whole_growth, _ = _fit(7, tmp_path / "whole", **options)
    _fit(epochs, tmp_path / "stopped", **options)
    checkpoint = tmp_path / "stopped" / f"epoch={epochs - 1}.ckpt"
    resumed, trainer, growth, _ = _fit(7, tmp_path / "resumed", ckpt_path=checkpoint, **options)
    assert resumed.model.depth == whole.model.depth == 3
    expected, got = whole.state_dict(), resumed.state_dict()
    assert list(got) == list(expected)
    assert all(torch.equal(got[name], expected[name]) for name in expected)
    decisions = [(s.epoch, s.location, s.epsilon, s.eigenvalues, s.val_loss) for s in growth.history.stages]
    assert decisions == [
        (s.epoch, s.location, s.epsilon, s.eigenvalues, s.val_loss) for s in whole_growth.history.stages
    ]
    optimizer, whole_optimizer = trainer.optimizers[0], whole_trainer.optimizers[0]
    assert [g["lr"] for g in optimizer.param_groups] == [g["lr"] for g in whole_optimizer.param_groups]
    for p, q in zip(resumed.parameters(), whole.parameters(), strict=True):
        assert torch.equal(optimizer.state[p]["exp_avg_sq"], whole_optimizer.state[q]["exp_avg_sq"])
    assert not [w for w in recwarn if "GrowthCallback" in str(w.message)]


def test_a_grown_checkpoint_reloads_at_its_depth_with_equal_outputs(tmp_path):
    module, *_ = _fit(5, tmp_path)
    reloaded = Regressor.load_from_checkpoint(tmp_path / "epoch=4.ckpt")
    assert reloaded.hparams.depth == 1
    assert reloaded.model.depth == module.model.depth == 3
    X, _ = _data()
    module.eval(), reloaded.eval()
    assert torch.equal(reloaded(X), module(X))


class Scored(Regressor):
    """Logs a scripted validation score, so the plateau schedule's decisions are known."""

    SCORES = [1.0, 0.5, 0.5, 0.5, 0.4, 0.4, 0.4, 0.4]

    def validation_step(self, batch, _):
        self.log("score", self.SCORES[self.current_epoch])


def test_the_plateau_schedule_watches_the_logged_metric():
    growth = GrowthCallback("mse", schedule="plateau", patience=2, epochs_per_stage=5, monitor="score", max_depth=4)
    module = Scored()
    _trainer(7, growth).fit(module, _loader(), _loader())
    # stage 0: [1, .5, .5, .5] has plateaued after 4 epochs; stage 1: [.4, .4, .4] after 3
    assert [s.epoch for s in growth.history.stages] == [4, 7]
    assert module.model.depth == 3


def test_a_resumed_plateau_run_decides_on_the_metric_its_checkpoint_saw(tmp_path):
    """Validating twice an epoch, checkpoints are written at validation end, before the epoch's
    end; resumed from epoch 4's, Lightning replays that end, when the score is no longer logged."""

    def fit(epochs, folder, ckpt_path=None):
        growth = GrowthCallback("mse", schedule="plateau", patience=2, epochs_per_stage=5, monitor="score")
        checkpoints = ModelCheckpoint(dirpath=tmp_path / folder, filename="{epoch}", save_top_k=-1)
        module = Scored()
        _trainer(epochs, growth, checkpoints, val_check_interval=0.5).fit(
            module, _loader(), _loader(), ckpt_path=ckpt_path
        )
        return module, growth

    whole, _ = fit(7, "whole")
    fit(4, "stopped")
    resumed, growth = fit(7, "resumed", tmp_path / "stopped" / "epoch=3.ckpt")
    assert [s.epoch for s in growth.history.stages] == [4, 7]
    assert [s.val_loss for s in growth.history.stages] == pytest.approx([0.5, 0.4])
    expected, got = whole.state_dict(), resumed.state_dict()
    assert all(torch.equal(got[name], expected[name]) for name in expected)


def test_the_plateau_schedule_without_its_metric_says_what_was_logged():
    growth = GrowthCallback("mse", schedule="plateau", monitor="val_acc")
    with pytest.raises(KeyError, match=r"watches 'val_acc', which was not logged \(logged: .*val_loss"):
        _trainer(1, growth).fit(Regressor(), _loader(), _loader())


class Plain(L.LightningModule):
    def __init__(self, attribute="net"):
        super().__init__()
        setattr(self, attribute, torch.nn.Sequential(torch.nn.Linear(4, 1)))

    def training_step(self, batch, _):
        return F.mse_loss(self.net(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters())


@pytest.mark.parametrize(
    "module, callback, message",
    [
        (Plain(), GrowthCallback(), r"Plain has no attribute 'model' and is not a growable model itself \(.*\); "),
        (Plain(), GrowthCallback(attribute="net"), r"Plain.net: Sequential cannot grow: it has no forward_states"),
    ],
    ids=["no-model", "not-growable"],
)
def test_a_module_without_a_growable_model_is_refused_in_one_line(module, callback, message):
    with pytest.raises(TypeError, match=message) as error:
        _trainer(1, callback).fit(module, _loader())
    assert "\n" not in str(error.value)


def test_the_module_itself_may_be_the_growable_model():
    class Itself(Regressor):
        pass

    module = Itself()
    callback = GrowthCallback(attribute=None)
    with pytest.raises(TypeError, match=r"GrowthCallback: Itself is not a growable model itself"):
        _trainer(1, callback).fit(module, _loader())
    assert callback.growable(module.model, check=True) is module.model  # a growable module is its own model


def test_several_schedulers_on_the_models_optimiser_are_refused():
    class TwoSchedulers(Regressor):
        def configure_optimizers(self):
            optimizer = torch.optim.Adam(self.parameters())
            first = torch.optim.lr_scheduler.StepLR(optimizer, 2)
            second = torch.optim.lr_scheduler.ExponentialLR(optimizer, 0.9)
            return [optimizer], [first, second]

    with pytest.raises(RuntimeError, match="2 learning-rate schedulers drive the model's optimiser"):
        _trainer(1, GrowthCallback()).fit(TwoSchedulers(), _loader())


def test_growth_leaves_the_global_random_state_as_it_was():
    """Training shuffles from the global generator; a decision that iterated the same loader would
    draw from it too, and every later epoch would see other batches."""
    states = []
    for max_depth in (1, 3):  # 1: the stop rule ends growth before any decision
        torch.manual_seed(0)
        shuffled = DataLoader(TensorDataset(*_data()), batch_size=64, shuffle=True)
        growth = GrowthCallback("mse", epochs_per_stage=1, max_depth=max_depth)
        module = Regressor()
        _trainer(2, growth).fit(module, shuffled)
        assert module.model.depth == max_depth
        states.append(torch.random.get_rng_state())
    assert torch.equal(*states)


@pytest.mark.slow
def test_only_topogrow_lightning_imports_lightning():
    code = (
        "import sys, topogrow, topogrow.sklearn, topogrow.growth, topogrow.nn, topogrow.cli\n"
        "assert 'lightning' not in sys.modules and 'pytorch_lightning' not in sys.modules, "
        "sorted(m for m in sys.modules if 'lightning' in m)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)


def test_the_public_names_have_docstrings_and_an_api_page():
    page = (Path(__file__).resolve().parents[1] / "docs" / "api" / "topogrow.lightning.rst").read_text()
    assert topogrow.lightning.__doc__
    for name in topogrow.lightning.__all__:
        assert f"topogrow.lightning.{name}" in page, name
        obj = getattr(topogrow.lightning, name)
        if callable(obj):
            assert obj.__doc__, name
    for name, member in vars(GrowthCallback).items():
        if not name.startswith("_") and callable(member):
            assert member.__doc__, name
