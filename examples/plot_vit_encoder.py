"""
Growing a vision transformer by encoder blocks (matrix-free)
============================================================

A whole transformer encoder block (attention and MLP) has no closed-form Hessian, but the
definition of the topological derivative still applies: insert the block with zero
parameters, and its :math:`Q_l` is the Hessian of the Hamiltonian in the block's parameters.
:func:`~topogrow.core.matrix_free_topological_derivative` applies it to vectors with
``torch.func`` (Hessian-vector products) and finds the leading eigenpairs by Lanczos,
without ever forming the matrix. ``GrowthConfig(block="encoder")`` grows by such blocks.

The 8 x 8 digits of scikit-learn (task ``digits``), a ViT with 4 x 4 patches and token width
16, one encoder block to start, two more inserted.
"""

# %%
import matplotlib.pyplot as plt
import torch
from matplotlib.ticker import MaxNLocator

from topogrow import Grower, GrowthConfig, ViT, data
from topogrow.core import matrix_free_topological_derivative
from topogrow.nn import make_block

torch.manual_seed(0)
task = data.load("digits", seed=0)
model = ViT(image_size=8, patch_size=4, in_channels=1, dim=16, depth=1, heads=2, out_features=10)

# %%
# The operator, before any training
# ---------------------------------
# ``make_block("encoder", model, location)`` builds the block that would be inserted; the
# result holds the top eigenvalues of :math:`Q_l` at every location, and how many parameters
# the block has (the size of the matrix that is never formed).
block = make_block("encoder", model, 0)
n_parameters = sum(p.numel() for p in block.parameters())
td = matrix_free_topological_derivative(
    model,
    (task.X_train[:512], task.y_train[:512]),
    "cross_entropy",
    lambda location: make_block("encoder", model, location),
    k=3,
    tol=1e-3,
)
print(f"block parameters: {n_parameters} (Q_l would be {n_parameters} x {n_parameters})")
for location in td.locations:
    print(f"location {location}: top eigenvalues {[f'{v:.2e}' for v in td.block_eigenvalues[location].tolist()]}")

# %%
# Grow
# ----
config = GrowthConfig(
    strategy="td", block="encoder", max_depth=3, epochs_per_stage=4, final_epochs=4, batch_size=64, lr=3e-3, seed=0
)
history = Grower(model, "cross_entropy", config).fit((task.X_train, task.y_train), (task.X_val, task.y_val))
print(history.summary())
print(f"final depth {model.depth}, test accuracy {task.score(model):.3f}")

# %%
fig, axis = plt.subplots(figsize=(6, 3.6))
for stage in history.stages:
    if stage.eigenvalues:
        axis.plot(range(len(stage.eigenvalues)), stage.eigenvalues, marker="o", label=f"stage {stage.stage}")
axis.set_xlabel("location l")
axis.xaxis.set_major_locator(MaxNLocator(integer=True))
axis.set_ylabel(r"leading eigenvalue $\mu_l$ (Lanczos)")
axis.legend()
fig.tight_layout()
plt.show()
