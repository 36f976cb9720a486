"""
Transfer learning: inserting layers with ``adapt`` against LoRA
===============================================================

:func:`topogrow.adapt <topogrow.transfer.adapt>` freezes a trained network, inserts new layers one at a time where the
topological derivative on the *target* data is largest, and trains only the new layers (and
the head): a parameter-efficient fine-tuning method. Its natural rival is LoRA, a low-rank
adapter :math:`W + BA` on every weight of every residual layer (``strategy="lora"``, with the
rank whose parameter count matches the inserted layers').

A synthetic source task and a target task with an added linear term, 80 samples; three seeds
are far too few to rank the methods (the measured benchmarks, 5 seeds, are in the user guide).
"""

# %%
import copy

import matplotlib.pyplot as plt
import numpy as np
import torch

import topogrow
from topogrow import ResidualMLP


def task(n, shift, generator):
    x = torch.randn(n, 4, generator=generator)
    y = torch.sin(2 * x[:, :1]) + x[:, 1:2] * x[:, 2:3] + shift * x[:, 3:4]
    return x, y


def pretrain(seed):
    """A ResidualMLP of width 32 and depth 2 trained on 2,000 source samples."""
    g = torch.Generator().manual_seed(seed)
    x, y = task(2000, 0.0, g)
    torch.manual_seed(seed)
    model = ResidualMLP(4, 32, 2, 1)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(30):
        for batch in torch.randperm(2000, generator=g).split(64):
            loss = torch.nn.functional.mse_loss(model(x[batch]), y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return model


STRATEGIES = ["small-where", "td", "lora", "head-only", "full"]
results = {name: [] for name in STRATEGIES}
trainable = {}
for seed in range(3):
    source_model = pretrain(seed)
    g = torch.Generator().manual_seed(100 + seed)
    target, val, test = task(80, 0.7, g), task(40, 0.7, g), task(1000, 0.7, g)
    with torch.no_grad():
        before = torch.nn.functional.mse_loss(source_model(test[0]), test[1]).item()
    for name in STRATEGIES:
        model = copy.deepcopy(source_model)
        result = topogrow.adapt(model, target, "mse", n_layers=2, strategy=name, val_data=val, epochs=60, seed=seed)
        with torch.no_grad():
            results[name].append(torch.nn.functional.mse_loss(model(test[0]), test[1]).item())
        trainable[name] = result.n_trainable
    print(
        f"seed {seed}: target test MSE without adaptation {before:.3f}; "
        + ", ".join(f"{name} {results[name][-1]:.3f}" for name in STRATEGIES)
    )

for name in STRATEGIES:
    print(
        f"{name:12s} target test MSE {np.mean(results[name]):.3f} +- {np.std(results[name]):.3f}, "
        f"{trainable[name]} trainable parameters"
    )

# %%
fig, axis = plt.subplots(figsize=(7, 3.6))
for index, name in enumerate(STRATEGIES):
    axis.scatter([trainable[name]] * len(results[name]), results[name], label=name, color=f"C{index}")
axis.set_xscale("log")
axis.set_xlabel("trainable parameters")
axis.set_ylabel("target test MSE (one dot per seed)")
axis.legend()
fig.tight_layout()
plt.show()
