"""Section ``td_vs_epoch``: the topological derivative at every location (the full pass, the growth
loop's sampled pass, subsets) against one training epoch of the same model on the same data."""

from __future__ import annotations

import statistics
from typing import Any

import torch

from topogrow.core import states_and_adjoints, topological_derivative
from topogrow.core.losses import resolve_loss
from topogrow.data import load as load_task
from topogrow.experiments.bench.config import SECTIONS, TD_BATCH, BenchConfig
from topogrow.experiments.bench.measure import bench_cnn, bench_mlp, log, timed
from topogrow.growth import GrowthConfig
from topogrow.nn import ResidualMLP
from topogrow.nn.cnn import ResidualCNN
from topogrow.training.data import TensorBatches
from topogrow.training.epochs import train_epoch


@SECTIONS.register("td_vs_epoch", help="the TD at every location against one training epoch")
def bench_td_vs_epoch(cfg: BenchConfig) -> list[dict[str, Any]]:
    """TD time at all locations / one training epoch, same model and data."""
    device = cfg.torch_device
    rows = _td_vs_epoch_case(cfg, "california", "ResidualMLP width 64, depth 4", 128, bench_mlp(64, 4, device), 1000)
    rows += _td_vs_epoch_case(cfg, "mnist5k", "ResidualCNN channels (8,16), depths (1,1)", 64, bench_cnn(device), 64)
    return rows


def _td_vs_epoch_case(
    cfg: BenchConfig, task_name: str, label: str, batch: int, model: torch.nn.Module, quick_n: int
) -> list[dict[str, Any]]:
    device = cfg.torch_device
    task = load_task(task_name, seed=0, data_dir=cfg.data_dir, n_train=quick_n if cfg.quick else None)
    x, y = task.X_train.to(device), task.y_train.to(device)
    loss = resolve_loss(task.loss)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = TensorBatches(x, y, batch, shuffle=True, seed=0)

    def td(data, solver):
        if solver == "sampled":  # the growth loop's default pass (GrowthConfig.td_samples="auto")
            sampling, generator = GrowthConfig().sampling, torch.Generator().manual_seed(0)
            return topological_derivative(
                model, data, task.loss, batch_size=TD_BATCH, sampling=sampling, generator=generator
            )
        return topological_derivative(model, data, task.loss, batch_size=TD_BATCH, solver=solver)

    # the iterative solver unfolds every convolution patch again at each product: far slower here
    solvers = ["auto", "blocks", "iterative"] if isinstance(model, ResidualMLP) else ["auto"]
    subsets = [("all", (x, y)), ("1/4", _subset(x, y, max(1, x.shape[0] // 4)))]
    if isinstance(model, ResidualCNN):  # each image brings H x W patches: few images fill the blocks
        subsets.append(("1/32", _subset(x, y, max(1, x.shape[0] // 32))))
    variants = [(name, data, solver) for name, data in subsets for solver in (solvers if name == "all" else ["auto"])]
    variants.insert(1, ("all", (x, y), "sampled"))
    # Interleaved: each repeat times the epoch, then every TD variant, so that a change in
    # the machine's load (other processes) hits the numerator and the denominator alike.
    epoch_times: list[float] = []
    times: dict[int, list[float]] = {i: [] for i in range(len(variants))}
    results: dict[int, Any] = {}
    for repeat in range(cfg.runs):
        log(f"td_vs_epoch: {task_name} repeat {repeat + 1}/{cfg.runs}: epoch, then {len(variants)} TD variants")
        epoch_times += timed(lambda: train_epoch(model, batches, loss, optimizer), 1, device)[1]
        for i, (_, data, solver) in enumerate(variants):
            _, seconds, results[i] = timed(lambda data=data, solver=solver: td(data, solver), 1, device)
            times[i] += seconds
    epoch = statistics.median(epoch_times)
    full = results[0]
    flops = {"epoch": _epoch_flops(model, x, y, loss, batch), "td_blocks": _td_block_flops(model, x, y, loss)}
    rows = []
    for i, (data_name, data, solver) in enumerate(variants):
        seconds, result = statistics.median(times[i]), results[i]
        rows.append(
            {
                "task": task_name,
                "model": label,
                "epoch_batch_size": batch,
                "n_train": int(x.shape[0]),
                "td_samples": int(data[0].shape[0]),
                "data": data_name,
                "solver": solver,
                "solvers_used": list(result.solvers),
                "samples_read": int(result.n_samples),
                "products": list(result.products),
                "td_s": seconds,
                "td_times": times[i],
                "epoch_s": epoch,
                "epoch_times": epoch_times,
                "ratio": seconds / epoch,
                "locations": result.n_locations,
                "flops": flops,
                **agreement(full, result),
            }
        )
    return rows


def _epoch_flops(model, x, y, loss, batch: int) -> float:
    """Forward + backward flops of one epoch (``torch.utils.flop_counter`` on one batch, scaled)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        loss(model(x[:batch]), y[:batch]).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() * x.shape[0] / min(batch, x.shape[0])


def _td_block_flops(model, x, y, loss) -> float:
    """Flops of forming every block, ``sum_l 2 S P n m^2``: the cost that dominates the blocks solver."""
    _, states, adjoints = states_and_adjoints(model, x[:1], y[:1], loss)
    total = 0.0
    for location, (state, adjoint) in enumerate(zip(states, adjoints, strict=True)):
        kind = model.insertion_kind(location)
        patches, rows = kind.patches(state), kind.adjoint_rows(adjoint)
        total += 2.0 * x.shape[0] * patches.shape[1] * rows.shape[-1] * patches.shape[-1] ** 2
    return total


def agreement(full, sub) -> dict[str, Any]:
    """How a TD on a subsample compares with the TD on all samples, at the full pass's best location:
    the same location, the same top block, the eigenvalue errors, and ``|cos|`` between the two
    passes' eigenvectors of the block the subsample ranks first (its new layer's leading row)."""
    l = full.best_location
    block = int(sub.block_eigenvalues[l].argmax())
    cosine = torch.nn.functional.cosine_similarity(
        full.block_eigenvectors[l][block], sub.block_eigenvectors[l][block], dim=0
    )
    return {
        "same_best_location": sub.best_location == l,
        "same_top_block": block == int(full.block_eigenvalues[l].argmax()),
        "eigenvalue_rel_error": float(((sub.eigenvalues - full.eigenvalues).abs() / full.eigenvalues.abs()).max()),
        "direction_cosine": abs(float(cosine)),
    }


def _subset(x: torch.Tensor, y: torch.Tensor, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    index = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    return x[index], y[index]
