"""
Where versus how: the ablations
===============================

The topological derivative answers two questions: *where* to insert a layer (the location
with the largest :math:`\\mu_l`) and *how* to initialise it (the leading eigenvectors). Two
ablations separate them: ``td-where`` takes only the location (random initialisation) and
``td-how`` only the initialisation (random location). ``random`` takes neither, and
``small-where`` (the library's default) takes the location and inserts a small random layer.

Two seeds on 1,000 samples of California housing, a few epochs per stage: far too little
to rank the strategies (the measured comparisons, 5 seeds at full budget, are in the user
guide), but enough to show how to run such a comparison and where each strategy puts its
layers.
"""

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch

from topogrow import Grower, GrowthConfig, ResidualMLP, data

STRATEGIES = ["td", "td-where", "td-how", "random", "small-where"]
SEEDS = [0, 1]

scores = {name: [] for name in STRATEGIES}
locations = {name: [] for name in STRATEGIES}
for seed in SEEDS:
    task = data.load("california", seed=seed, n_train=1000)  # each seed: its own split...
    for name in STRATEGIES:
        torch.manual_seed(seed)  # ...and the same initial network for every strategy
        model = ResidualMLP(task.in_features, width=16, depth=1, out_features=1)
        config = GrowthConfig(
            strategy=name, max_depth=3, epochs_per_stage=3, final_epochs=3, batch_size=128, seed=seed, rollback=False
        )
        history = Grower(model, "mse", config).fit((task.X_train, task.y_train), (task.X_val, task.y_val))
        scores[name].append(task.score(model))
        locations[name] += [stage.location for stage in history.insertions]

for name in STRATEGIES:
    print(
        f"{name:12s} test MSE {np.mean(scores[name]):.4f} (seeds: {np.round(scores[name], 4).tolist()}), "
        f"inserted at {locations[name]}"
    )

# %%
# Paired by seed
# --------------
# Every strategy starts from the same network and split for a given seed, so compare them
# seed by seed (``topogrow compare`` prints these pairs with a 95 % interval).
fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
for index, name in enumerate(STRATEGIES):
    left.scatter([index] * len(SEEDS), scores[name], c=["C0", "C1"][: len(SEEDS)])
left.set_xticks(range(len(STRATEGIES)), STRATEGIES, rotation=20)
left.set_ylabel("test MSE (one dot per seed)")
counts = np.zeros((len(STRATEGIES), 3))
for index, name in enumerate(STRATEGIES):
    for location in locations[name]:
        counts[index, location] += 1
right.imshow(counts, cmap="Blues")
right.set_yticks(range(len(STRATEGIES)), STRATEGIES)
right.set_xticks(range(3))
right.set_xlabel("location of the inserted layers")
right.set_title("how often each location was chosen")
fig.tight_layout()
plt.show()
