"""Grow a residual MLP on California housing with the topological derivative.

Run: ``python examples/quickstart.py`` (about a minute on 2 cores).
"""

import os

import torch

from topogrow import Grower, GrowthConfig, ResidualMLP, data, topological_derivative

epochs = int(os.environ.get("QUICKSTART_EPOCHS", 8))  # epochs per stage (the tests use 1)
n_train = int(os.environ["QUICKSTART_N_TRAIN"]) if "QUICKSTART_N_TRAIN" in os.environ else None
torch.manual_seed(0)
task = data.load("california", seed=0, n_train=n_train)  # shared/datasets, --data-dir, or scikit-learn
model = ResidualMLP(task.in_features, width=32, depth=1, out_features=1)

# Where, and how, would one new layer lower the loss most right now?
td = topological_derivative(model, (task.X_train, task.y_train), "mse")
print("leading eigenvalue per location:", [round(mu, 5) for mu in td.eigenvalues.tolist()])
print("best location:", td.best_location)

# Grow while training: train a stage, insert at the best location with the
# eigenvector initialisation (epsilon by line search), repeat up to depth 4.
config = GrowthConfig(strategy="td", max_depth=4, epochs_per_stage=epochs, final_epochs=epochs, batch_size=256)
history = Grower(model, "mse", config).fit((task.X_train, task.y_train), (task.X_val, task.y_val))
print(history.summary())
print(f"final depth {model.depth}, test MSE {task.score(model):.4f} (in (100k$)^2)")
