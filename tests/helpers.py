"""Small data, configurations and CLI arguments shared by the tests (importable from every folder)."""

import torch

from topogrow import GrowthConfig


def regression_data(n_samples: int, seed: int, dtype=torch.float64):
    """A smooth 4-feature regression with 5 % noise, seeded."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_samples, 4, generator=g, dtype=dtype)
    y = torch.sin(2 * x[:, :1]) + x[:, 1:2] * x[:, 2:3] + 0.05 * torch.randn(n_samples, 1, generator=g, dtype=dtype)
    return x, y


def short_growth_config(**changes) -> GrowthConfig:
    """A growth run of a few epochs that always reaches its max depth (depth 3 by default)."""
    base = dict(
        max_depth=3,
        epochs_per_stage=2,
        final_epochs=2,
        growth_patience=100,
        batch_size=32,
        lr=1e-2,
        device="cpu",
        seed=0,
        line_search_samples=64,
        early_stopping=False,  # the mechanics of growth; early stopping and rollback have their own tests
        rollback=False,
        lr_schedule="constant",
    )
    base.update(changes)
    return GrowthConfig(**base)


# A CLI run on the synthetic task that writes a few checkpoints (depth 4, 3 epochs per stage);
# append "--out" and more options.
CLI_RUN = [
    "run",
    "synthetic",
    "--threads",
    "1",
    "--width",
    "8",
    "--epochs-per-stage",
    "3",
    "--final-epochs",
    "3",
    "--max-depth",
    "4",
    "--quiet",
]


def write_csv(path, header, rows):
    """A CSV file with a header row; returns its path."""
    import csv

    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path
