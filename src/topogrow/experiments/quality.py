"""Compute to quality: what each strategy spent to first reach the reference network's best
validation loss, against what the reference network itself needed to reach it.

The reference is the ``depth-search`` run of the same seed: the depth, trained from scratch to
convergence, with the lowest validation loss. From every run's anytime curve (cumulative FLOPs
and wall time per epoch, :class:`~topogrow.growth.history.EpochRecord`) the first epoch whose
validation loss is at most the reference's best gives the run's cost to that quality.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from topogrow.experiments.experiment import DEPTH_SEARCH, Comparison, RunResult, best_val_loss

__all__ = ["Reached", "compute_to_quality", "ratio_cell", "reached", "summary"]


@dataclass(frozen=True)
class Reached:
    """One run against its seed's reference: the ratios of FLOPs and wall time to reach the
    reference's best validation loss (``None`` when it never did), and of its total FLOPs to the
    whole depth search's and to the reference network's own training."""

    seed: int
    flops: float | None
    wall_time: float | None
    total_vs_search: float
    total_vs_reference: float


def reached(result: RunResult, target: float) -> tuple[float, float] | None:
    """``(cumulative FLOPs, wall time)`` at the first epoch whose validation loss is <= ``target``."""
    for epoch in result.history.epochs:
        if epoch.val_loss <= target and epoch.flops is not None:
            return epoch.flops, epoch.wall_time or 0.0
    return None


def compute_to_quality(comparison: Comparison) -> dict[str, list[Reached]]:
    """Per strategy (the reference included), one :class:`Reached` per seed that has a reference."""
    references = {r.seed: r for r in comparison.results if r.strategy == DEPTH_SEARCH}
    out: dict[str, list[Reached]] = {}
    for result in comparison.results:
        reference = references.get(result.seed)
        if reference is None:
            continue
        target = best_val_loss(reference)
        own = reached(reference, target)
        mine = reached(result, target) if result.strategy != DEPTH_SEARCH else own
        own_flops = reference.history.flops.get("total", 0.0)
        ratio = None if mine is None or not own or not own[0] else mine[0] / own[0]
        wall = None if mine is None or not own or not own[1] else mine[1] / own[1]
        total = result.history.flops.get("total", 0.0) if result.strategy != DEPTH_SEARCH else own_flops
        out.setdefault(result.strategy, []).append(
            Reached(
                seed=result.seed,
                flops=ratio,
                wall_time=wall,
                total_vs_search=total / reference.flops if reference.flops else float("nan"),
                total_vs_reference=total / own_flops if own_flops else float("nan"),
            )
        )
    return out


def summary(comparison: Comparison) -> dict[str, dict[str, Any]]:
    """Per strategy: the medians over seeds of the ratios (those to quality over the seeds that
    reached it) and how many seeds reached the reference's best validation loss."""
    rows = {}
    for strategy, runs in compute_to_quality(comparison).items():
        reached_runs = [r for r in runs if r.flops is not None]
        rows[strategy] = {
            "reached": len(reached_runs),
            "seeds": len(runs),
            "flops_to_quality": statistics.median(r.flops for r in reached_runs) if reached_runs else None,
            "wall_to_quality": statistics.median(r.wall_time for r in reached_runs if r.wall_time is not None)
            if any(r.wall_time is not None for r in reached_runs)
            else None,
            "total_vs_search": statistics.median(r.total_vs_search for r in runs),
            "total_vs_reference": statistics.median(r.total_vs_reference for r in runs),
            "per_seed": [r.__dict__ for r in runs],
        }
    return rows


def ratio_cell(value: float | None) -> str:
    """A ratio for a table (``—`` when there is none)."""
    return "—" if value is None or value != value else f"{value:.2f}"
