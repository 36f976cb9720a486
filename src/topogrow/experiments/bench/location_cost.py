"""Section ``location_cost``: the default strategy's decision per insertion against an epoch of the
current network, for every paper row's task and network."""

from __future__ import annotations

import time
from typing import Any

import torch

from topogrow.core import topological_derivative
from topogrow.core.losses import resolve_loss
from topogrow.data import load as load_task
from topogrow.experiments.bench.config import SECTIONS, TD_BATCH, BenchConfig
from topogrow.experiments.bench.measure import log
from topogrow.growth import GrowthConfig
from topogrow.nn import ResidualMLP
from topogrow.training.data import TensorBatches
from topogrow.training.epochs import train_epoch

#: ``(row, task, n_train, width, batch)`` of every paper row whose network differs (src/topogrow/experiments/paper).
LOCATION_ROWS = (
    ("heat_inverse_1000", "heat-inverse", 1000, 64, 64),
    ("heat_inverse_1500", "heat-inverse", 1500, 64, 64),
    ("heat_map_1000", "heat-map", 1000, 64, 64),
    ("california", "california", None, 32, 256),
    ("navier_stokes_250", "navier-stokes", 250, 64, 32),
    ("navier_stokes_500", "navier-stokes", 500, 64, 32),
    ("wind_1000", "wind", 1000, 64, 64),
    ("wind_5000", "wind", 5000, 64, 64),
    ("mnist_600", "mnist5k", 600, 32, 32),
    ("mnist_train", "mnist5k", None, 64, 64),
)


@SECTIONS.register(
    "location_cost", help="the default strategy's decision per insertion against an epoch, per paper row"
)
def bench_location_cost(cfg: BenchConfig) -> list[dict[str, Any]]:
    """For every paper row's task and network (depths 1 and 3, after two epochs of training): the FLOPs of
    the default strategy's decision (``small-where``: the topological-derivative pass and the insertion's
    evaluations) per insertion, in epochs of the current network, before (the ``td_samples="auto"`` pass
    of every eigenpair, ``2 S P n m^2 + 20 n m^3`` per location, evaluated on the line-search set) and
    after (the budgeted location-only pass, its own counted FLOPs, evaluated on ``record_samples``), and
    whether the two passes choose the same location (and the share of the old pass's mu kept)."""
    from topogrow.core.location import location_derivative
    from topogrow.core.topological_derivative import EIGH_COST
    from topogrow.growth.compute import _block_shapes, forward_flops
    from topogrow.growth.config import LOCATION_BUDGET
    from topogrow.growth.line_search import record_samples

    device, growth = cfg.torch_device, GrowthConfig()
    sampling = growth.sampling
    rows_run = LOCATION_ROWS[:1] + LOCATION_ROWS[3:4] if cfg.quick else LOCATION_ROWS
    results = []
    for row, task_name, n_train, width, batch in rows_run:
        n = 1000 if cfg.quick and n_train is None else n_train
        task = load_task(task_name, seed=0, data_dir=cfg.data_dir, n_train=n)
        x, y = task.X_train.to(device).flatten(1), task.y_train.to(device)  # the rows' networks are MLPs
        loss = resolve_loss(task.loss)
        samples = int(x.shape[0])
        for depth in (1,) if cfg.quick else (1, 3):
            log(f"location_cost: {row} depth {depth}")
            torch.manual_seed(0)
            model = ResidualMLP(x.shape[1], width, depth, task.out_features).to(device)
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
            for epoch in range(2):
                train_epoch(model, TensorBatches(x, y, batch, shuffle=True, seed=epoch), loss, optimizer)
            forward = forward_flops(model, x[:1])
            epoch_flops = 3 * forward * samples
            line_set = min(growth.line_search_samples, samples)
            # before: the pass StageContext made for small-where (all samples at or below the floor)
            rule = None if samples <= sampling.min_samples else sampling
            start = time.perf_counter()
            old = topological_derivative(
                model, (x, y), task.loss, batch_size=TD_BATCH, sampling=rule, generator=torch.Generator().manual_seed(0)
            )
            old_s = time.perf_counter() - start
            drawn = sampling.positions if rule is not None else None
            shapes = _block_shapes(model, x[:1])
            blocks = sum(
                2.0 * old.n_samples * (min(p, drawn) if drawn else p) * bn * m * m + EIGH_COST * bn * m**3
                for bn, m, p in shapes
            )
            old_td = 3 * forward * old.n_samples + blocks
            old_ls = 2 * forward * line_set
            start = time.perf_counter()
            new = location_derivative(
                model,
                (x, y),
                task.loss,
                budget=LOCATION_BUDGET,
                max_samples=sampling.max_samples,
                positions=sampling.positions,
                batch_size=sampling.batch_size,
                generator=torch.Generator().manual_seed(0),
            )
            new_s = time.perf_counter() - start
            new_ls = 2 * forward * record_samples(line_set)
            chosen, best = new.best_location, old.best_location
            results.append(
                {
                    "row": row,
                    "task": task_name,
                    "n_train": samples,
                    "width": width,
                    "depth": depth,
                    "epoch_flops": epoch_flops,
                    "before": {
                        "samples": int(old.n_samples),
                        "td_flops": old_td,
                        "line_search_flops": old_ls,
                        "epochs": (old_td + old_ls) / epoch_flops,
                        "td_s": old_s,
                    },
                    "after": {
                        "samples": int(new.n_samples),
                        "td_flops": float(new.flops),
                        "line_search_flops": new_ls,
                        "epochs": (float(new.flops) + new_ls) / epoch_flops,
                        "td_s": new_s,
                    },
                    "same_location": chosen == best,
                    "mu_kept": float(old.eigenvalues[chosen] / old.eigenvalues[best]),
                }
            )
    return results
