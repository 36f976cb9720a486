"""Section ``line_search``: one insertion's line search against one training epoch."""

from __future__ import annotations

import copy
import statistics
from dataclasses import replace
from typing import Any

import torch

from topogrow.core import topological_derivative
from topogrow.core.losses import resolve_loss
from topogrow.data import load as load_task
from topogrow.experiments.bench.config import SECTIONS, BenchConfig
from topogrow.experiments.bench.measure import bench_mlp, log, timed
from topogrow.growth import GrowthConfig
from topogrow.growth.context import Proposal
from topogrow.growth.insertion import insert_proposal
from topogrow.growth.line_search import PROBE_SAMPLES
from topogrow.training.data import DataSource, TensorBatches, count_samples, first_samples, regroup
from topogrow.training.epochs import evaluate_loss, train_epoch


@SECTIONS.register("line_search", help="the line search of one insertion against one training epoch")
def bench_line_search(cfg: BenchConfig) -> dict[str, Any]:
    """One td insertion's line search, as the growth loop makes it (the line-search set: the first
    ``line_search_samples`` of a shuffled pass in training batches; the model search's probe: its
    first samples), against one training epoch; the model search and the grid, medians of ``runs``."""
    device = cfg.torch_device
    growth = GrowthConfig()
    task = load_task("california", seed=0, data_dir=cfg.data_dir, n_train=1000 if cfg.quick else None)
    x, y = task.X_train.to(device), task.y_train.to(device)
    model, loss = bench_mlp(64, 4, device), resolve_loss(task.loss)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = TensorBatches(x, y, 128, shuffle=True, seed=0)
    train_epoch(model, batches, loss, optimizer)
    td = topological_derivative(model, (x, y), task.loss, sampling=growth.sampling, generator=torch.Generator())
    location = td.best_location
    proposal = Proposal(location, td.direction(location, None, growth.rel_threshold))
    proposal = replace(proposal, curvature=td.curvature(location, None, growth.rel_threshold))
    data = DataSource.from_data((x, y), "train", 256, shuffle=True, seed=1).subset(growth.line_search_samples)
    grid_data = data  # the grid evaluates the training batches; the model search regroups them
    data = regroup(data, growth.validation_batch_size)
    probe, _ = first_samples(data, PROBE_SAMPLES)
    times: dict[str, list[float]] = {"epoch": [], "model": [], "grid": []}
    searches = {}
    for repeat in range(cfg.runs):
        log(f"line_search: repeat {repeat + 1}/{cfg.runs}: epoch, model search, grid")
        times["epoch"] += timed(lambda: train_epoch(model, batches, loss, optimizer), 1, device)[1]
        for search in ("model", "grid"):
            trial = copy.deepcopy(model)

            def insert(trial=trial, search=search):
                batches = data if search == "model" else grid_data
                return insert_proposal(
                    trial,
                    proposal,
                    lambda: evaluate_loss(trial, batches, loss),
                    growth.epsilons,
                    search=search,
                    probe_loss=lambda: evaluate_loss(trial, probe, loss),
                )

            _, seconds, (_, result) = timed(insert, 1, device)
            probe_samples = count_samples(probe) if search == "model" else count_samples(data)
            searches[search] = replace(result, samples=count_samples(data), probe_samples=probe_samples)
            times[search] += seconds
    epoch = statistics.median(times["epoch"])
    model_s, grid_s = statistics.median(times["model"]), statistics.median(times["grid"])
    return {
        "setting": f"California MLP 64x4, td proposal at location {location}, line-search set "
        f"{growth.line_search_samples} samples, probe {PROBE_SAMPLES}",
        "epoch_s": epoch,
        "search_s": model_s,
        "grid_s": grid_s,
        "ratio": model_s / epoch,
        "grid_ratio": grid_s / epoch,
        "times": times,
        "evaluated_samples": {k: int(v.evaluated_samples) for k, v in searches.items()},
        "change": {k: float(v.change) for k, v in searches.items()},
        "epsilon": {k: float(v.epsilon) for k, v in searches.items()},
    }
