"""
Growing inside PyTorch Lightning
================================

:class:`topogrow.lightning.GrowthCallback` grows a LightningModule's network while
``Trainer.fit`` trains it: every ``epochs_per_stage`` epochs (or on a plateau of a logged
metric) the registered strategy decides where to insert a layer and how to initialise it, and
the new parameters join the trainer's optimiser as a group at the current learning rate, so
Adam's state and the cosine schedule go on. A grown module reloads with ``load_from_checkpoint``
and resumes with ``fit(ckpt_path=...)``. Install with ``pip install 'topogrow[lightning]'``.
"""

# %%
# A LightningModule around a growable network
# -------------------------------------------
# The module keeps its network as ``self.model`` (where the callback looks by default), and
# builds its optimiser and scheduler as any LightningModule does.
import shutil
import tempfile
from pathlib import Path

import lightning as L
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from topogrow import ResidualMLP
from topogrow.lightning import GrowthCallback, chosen_mu

EPOCHS = 24


class Regressor(L.LightningModule):
    def __init__(self, depth=1, lr=1e-2):
        super().__init__()
        self.save_hyperparameters()
        self.model = ResidualMLP(in_features=4, width=16, depth=depth, out_features=1)

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
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=EPOCHS)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}


def loaders():
    generator = torch.Generator().manual_seed(0)
    X = torch.randn(1024, 4, generator=generator)
    y = torch.sin(2 * X[:, :1]) + X[:, 1:2] * X[:, 2:3]
    train = DataLoader(TensorDataset(X[:768], y[:768]), batch_size=64, shuffle=True)
    return train, DataLoader(TensorDataset(X[768:], y[768:]), batch_size=256)


# %%
# Fit with the growth callback
# ----------------------------
# One insertion every 6 epochs, up to depth 4. The checkpoints go to a temporary folder.
torch.manual_seed(0)
folder = Path(tempfile.mkdtemp())
growth = GrowthCallback("mse", epochs_per_stage=6, max_depth=4)
lr_per_group = []


class LearningRates(L.Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        lr_per_group.append([group["lr"] for group in trainer.optimizers[0].param_groups])


trainer = L.Trainer(
    max_epochs=EPOCHS,
    accelerator="cpu",
    logger=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    callbacks=[growth, LearningRates(), ModelCheckpoint(dirpath=folder, filename="last")],
)
module = Regressor()
trainer.fit(module, *loaders())

for stage in growth.history.stages:
    if stage.location is not None:
        print(
            f"after epoch {stage.epoch:2d}: a layer at location {stage.location} "
            f"(mu = {chosen_mu(stage):.3g}, epsilon = {stage.epsilon:.3g}), depth {stage.depth + 1}"
        )
print(f"stopped growing: {growth.history.stop_reason}; final validation loss {growth.history.epochs[-1].val_loss:.4f}")

# %%
# The validation loss and every group's learning rate
# ---------------------------------------------------
# Each new layer's group joins at the rate of the moment and follows the same cosine decay.
epochs = [record.epoch for record in growth.history.epochs]
fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
left.plot(epochs, [record.val_loss for record in growth.history.epochs], marker=".")
for stage in growth.history.stages:
    if stage.location is not None:
        left.axvline(stage.epoch + 0.5, color="grey", linestyle=":")
left.set(xlabel="epoch", ylabel="validation loss", yscale="log", title="insertions (dotted)")
for group in range(len(lr_per_group[-1])):
    start = next(i for i, lrs in enumerate(lr_per_group) if len(lrs) > group)
    rates = [lrs[group] for lrs in lr_per_group[start:]]
    right.plot(range(start + 1, EPOCHS + 1), rates, linewidth=6 - 1.5 * group, label=f"group {group}")
right.set(xlabel="epoch", ylabel="learning rate", title="one schedule for every group")
right.legend()
fig.tight_layout()

# %%
# Reload and resume
# -----------------
# The hyper-parameters say ``depth=1``; the checkpoint's state dict records the insertions, so
# the module reloads at its grown depth. ``fit(ckpt_path=...)`` with a new callback would go on
# from the same point: the callback's state and the optimiser's groups are in the checkpoint.
reloaded = Regressor.load_from_checkpoint(folder / "last.ckpt")
X, _ = next(iter(loaders()[1]))
module.eval(), reloaded.eval()
print(f"reloaded: hparams depth {reloaded.hparams.depth}, model depth {reloaded.model.depth}")
print("same predictions:", torch.equal(module(X), reloaded(X)))
shutil.rmtree(folder)
