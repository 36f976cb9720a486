"""Section ``td_decisions``: the growth loop's sampled pass against the full pass, over seeds."""

from __future__ import annotations

from typing import Any

import torch

from topogrow.core import topological_derivative
from topogrow.core.losses import resolve_loss
from topogrow.data import load as load_task
from topogrow.experiments.bench.config import SECTIONS, TD_BATCH, BenchConfig
from topogrow.experiments.bench.measure import bench_cnn, bench_mlp, log
from topogrow.experiments.bench.td_vs_epoch import agreement
from topogrow.growth import GrowthConfig
from topogrow.training.data import TensorBatches
from topogrow.training.epochs import train_epoch


@SECTIONS.register("td_decisions", help="the sampled TD pass's decisions against the full pass, over seeds")
def bench_td_decisions(cfg: BenchConfig) -> list[dict[str, Any]]:
    """For N seeds (split, initial network, sample order): the growth loop's sampled pass against the
    full pass on the td_vs_epoch models: same location, direction cosine, eigenvalue errors, samples read."""
    device = cfg.torch_device
    seeds = 2 if cfg.quick else 5
    rows = []
    for task_name, epochs in (("california", 2), ("mnist5k", 1)):
        for seed in range(seeds):
            log(f"td_decisions: {task_name} seed {seed}")
            task = load_task(task_name, seed=seed, data_dir=cfg.data_dir, n_train=1000 if cfg.quick else None)
            x, y = task.X_train.to(device), task.y_train.to(device)
            model = bench_mlp(64, 4, device, seed) if task_name == "california" else bench_cnn(device, seed)
            loss = resolve_loss(task.loss)
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
            for epoch in range(epochs):
                train_epoch(model, TensorBatches(x, y, 128, shuffle=True, seed=epoch), loss, optimizer)
            full = topological_derivative(model, (x, y), task.loss, batch_size=TD_BATCH)
            generator = torch.Generator().manual_seed(seed)
            sampled = topological_derivative(
                model, (x, y), task.loss, batch_size=TD_BATCH, sampling=GrowthConfig().sampling, generator=generator
            )
            chosen, best = sampled.best_location, full.best_location
            rows.append(
                {
                    "task": task_name,
                    "seed": seed,
                    "n_train": int(x.shape[0]),
                    "samples_read": int(sampled.n_samples),
                    "full_location": best,
                    "sampled_location": chosen,
                    "mu_full": full.eigenvalues.tolist(),
                    "mu_sampled": sampled.eigenvalues.tolist(),
                    "relative_standard_error": sampled.standard_errors[chosen]
                    / abs(float(sampled.eigenvalues[chosen])),
                    # the full pass's mu at the sampled choice over its best: the share of the decrease kept
                    "mu_kept": float(full.eigenvalues[chosen] / full.eigenvalues[best]),
                    **agreement(full, sampled),
                }
            )
    return rows
