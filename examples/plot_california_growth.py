"""
Growing a ResidualMLP on California housing
===========================================

Start from a residual MLP with one layer, let the topological derivative say where each new
layer goes and how it starts (the paper's rule, ``strategy="td"``), and read the leading
eigenvalue :math:`\\mu_l` of every insertion location at every stage.
"""

# %%
# The task and the initial network
# --------------------------------
# 2,000 training samples of California housing (8 features, the median house value in
# 100k$), standardised; a residual MLP of width 32 with one residual layer.
import matplotlib.pyplot as plt
import torch
from matplotlib.ticker import MaxNLocator

from topogrow import Grower, GrowthConfig, ResidualMLP, data, topological_derivative

torch.manual_seed(0)
task = data.load("california", seed=0, n_train=2000)
model = ResidualMLP(task.in_features, width=32, depth=1, out_features=1)
train, val = (task.X_train, task.y_train), (task.X_val, task.y_val)

# %%
# Where would a layer help now?
# -----------------------------
# One forward and one backward pass give :math:`\mu_l` at the two locations of the initial
# network: 0 (right after the stem) and 1 (right before the head).
td = topological_derivative(model, train, "mse")
print("mu_l:", [f"{mu:.2e}" for mu in td.eigenvalues.tolist()], "best location:", td.best_location)

# %%
# Grow while training
# -------------------
# Six epochs per stage, up to depth 4, then six more epochs. Early stopping and rollback are
# on (the defaults): an insertion that does not improve validation is undone.
config = GrowthConfig(strategy="td", max_depth=4, epochs_per_stage=6, final_epochs=6, batch_size=128, seed=0)
history = Grower(model, "mse", config).fit(train, val)
print(history.summary())
print(f"final depth {model.depth}, test MSE {task.score(model):.4f}")

# %%
# Reading :math:`\mu_l` per location
# ----------------------------------
# Each stage records the leading eigenvalue at every location of the network it ended with
# (``history.stages[i].eigenvalues``); the inserted layer went to the largest. The left panel
# shows the validation loss with the insertions marked.
fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
epochs = [record.epoch for record in history.epochs]
left.plot(epochs, [record.val_loss for record in history.epochs], label="validation")
left.plot(epochs, [record.train_loss for record in history.epochs], label="training", alpha=0.6)
for stage in history.insertions:
    left.axvline(stage.epoch, color="grey", linestyle=":")
left.set_xlabel("epoch")
left.set_ylabel("MSE")
left.legend()
for stage in history.stages:
    if stage.eigenvalues:
        right.plot(range(len(stage.eigenvalues)), stage.eigenvalues, marker="o", label=f"stage {stage.stage}")
        if stage.location is not None:
            right.plot(stage.location, stage.eigenvalues[stage.location], "k*", markersize=12)
right.set_xlabel("location l")
right.xaxis.set_major_locator(MaxNLocator(integer=True))
right.set_ylabel(r"$\mu_l$")
right.set_title("leading eigenvalue per location (star: chosen)")
right.legend()
fig.tight_layout()
plt.show()
