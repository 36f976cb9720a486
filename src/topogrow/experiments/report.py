"""Tables, JSON files and plots of growth runs."""

from __future__ import annotations

import io
from pathlib import Path

from topogrow._io import write_atomic, write_json_atomic
from topogrow.experiments.experiment import DEPTH_SEARCH, Comparison, RunResult
from topogrow.experiments.paired import paired_cell
from topogrow.experiments.quality import ratio_cell, summary
from topogrow.growth import GrowthConfig

__all__ = ["comparison_table", "plot_comparison", "plot_quality", "plot_runs", "save_figure", "write_json_atomic"]


def comparison_table(comparison: Comparison, reference: str | None = None) -> str:
    """A Markdown table per strategy: the test metric (mean ± std; paired against the
    ``depth-search`` reference, positive = the strategy better), final depth, epochs, counted FLOPs,
    wall time, and compute to quality (:mod:`~topogrow.experiments.quality`: FLOPs and wall time to first
    reach the reference network's best validation loss over what it needed, medians over the seeds
    that reached it; total FLOPs over the whole search's and over the reference network's own
    training); then ``reference`` (default: the library's default strategy) paired against every
    other strategy."""
    metric = comparison.metric_name
    lines = [
        f"| strategy | {metric} (mean ± std) | vs reference | final depth | epochs | GFLOPs | wall time (s) "
        "| FLOPs to quality | wall to quality | reached | total / search | total / reference |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = comparison.rows()
    higher_better = "accuracy" in metric
    best = (max if higher_better else min)(r["metric_mean"] for r in rows)
    quality = summary(comparison)
    against_reference = comparison.paired_with(DEPTH_SEARCH)
    for r in rows:
        mark = " **best**" if r["metric_mean"] == best else ""
        q = quality.get(r["strategy"])
        vs = against_reference.get(r["strategy"])
        vs_cell = "reference" if r["strategy"] == DEPTH_SEARCH else ("—" if vs is None else paired_cell(vs))
        q_cells = "— | — | — | — | —"
        if q is not None:
            q_cells = (
                f"{ratio_cell(q['flops_to_quality'])} | {ratio_cell(q['wall_to_quality'])} | "
                f"{q['reached']}/{q['seeds']} | "
                f"{ratio_cell(q['total_vs_search'])} | {ratio_cell(q['total_vs_reference'])}"
            )
        lines.append(
            f"| {r['strategy']} | {r['metric_mean']:.4f} ± {r['metric_std']:.4f}{mark} | {vs_cell} | "
            f"{r['final_depth']:.1f} | {r['epochs']:.0f} | {r['flops'] / 1e9:.3g} | {r['wall_time']:.1f} | {q_cells} |"
        )
    seeds = rows[0]["seeds"] if rows else 0
    lines.append(
        f"\n{comparison.task}: {seeds} seeds; each seed has its own split and initial network. The reference is "
        f"`{DEPTH_SEARCH}`'s network: the depth with the best validation loss, trained from scratch to convergence "
        "under the same rule (its row's cost is the whole search's)."
    )
    reference = reference or GrowthConfig().strategy
    against = comparison.paired(reference) if seeds > 1 else {}
    if against:
        lines += [
            f"\nPaired against `{reference}` (per seed: the same split and initial network; positive = "
            f"`{reference}` better; mean difference [95 % t-interval], seeds won):\n",
            f"| strategy | {reference}'s advantage | verdict |",
            "|---|---|---|",
        ]
        lines += [f"| {name} | {paired_cell(result)} | {result.verdict} |" for name, result in against.items()]
    return "\n".join(lines)


def plot_quality(comparison: Comparison, path: str | Path) -> Path:
    """Validation loss (the best so far) against cumulative FLOPs, per strategy: the median over
    seeds and its range, on a common log-spaced FLOP grid; the reference network's curve dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(figsize=(7, 4.5))
    curves: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for result in comparison.results:
        epochs = [e for e in result.history.epochs if e.flops is not None]
        if epochs:
            flops = np.array([e.flops for e in epochs])
            best = np.minimum.accumulate(np.array([e.val_loss for e in epochs]))
            curves.setdefault(result.strategy, []).append((flops, best))
    if curves:
        low = min(c[0][0] for runs in curves.values() for c in runs)
        high = max(c[0][-1] for runs in curves.values() for c in runs)
        grid = np.geomspace(low, high, 200)
        for index, (strategy, runs) in enumerate(curves.items()):
            values = np.array([np.interp(grid, f, v, left=np.nan, right=v[-1]) for f, v in runs])
            started = np.isfinite(values).any(axis=0)  # FLOPs before every run's first epoch: no point
            values = values[:, started]
            style = dict(color="black", linestyle="--") if strategy == DEPTH_SEARCH else dict(color=f"C{index % 10}")
            label = "reference (best depth)" if strategy == DEPTH_SEARCH else strategy
            axes.plot(grid[started], np.nanmedian(values, axis=0), label=label, **style)
            if len(runs) > 1:
                low_band, high_band = np.nanmin(values, axis=0), np.nanmax(values, axis=0)
                axes.fill_between(grid[started], low_band, high_band, alpha=0.15, color=style["color"])
        axes.set_xscale("log")
        axes.set_yscale("log")
    axes.set_xlabel("cumulative FLOPs")
    axes.set_ylabel("best validation loss so far")
    axes.set_title(f"{comparison.task}: quality against compute (median and range over seeds)")
    axes.legend(fontsize=8)
    path = save_figure(fig, Path(path))
    plt.close(fig)
    return path


def save_figure(fig, path: Path) -> Path:
    """Save a matplotlib figure as PNG (120 dpi, tight box), atomically (never half-written)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    return write_atomic(path, buffer.getvalue())


def plot_runs(results: list[RunResult], path: str | Path, title: str = "") -> Path:
    """Left: validation loss per epoch with insertion markers; right: mu_l per location
    at each insertion of the first run that computed the topological derivative."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (curves, spectrum) = plt.subplots(1, 2, figsize=(12, 4.5))
    for index, result in enumerate(results):
        color = f"C{index % 10}"
        epochs = [e.epoch for e in result.history.epochs]
        curves.plot(epochs, [e.val_loss for e in result.history.epochs], color=color, label=result.strategy)
        marks = result.history.insertions
        curves.scatter([s.epoch for s in marks], [s.val_loss for s in marks], color=color, marker="v", s=30)
    if any(result.history.epochs for result in results):  # a run that diverged at once has no curve
        curves.set_yscale("log")
    curves.set_xlabel("epoch")
    curves.set_ylabel("validation loss")
    curves.set_title("validation loss (▼ = insertion)")
    curves.legend(fontsize=8)

    with_td = next((r for r in results if any(s.eigenvalues for s in r.history.stages)), None)
    if with_td is not None:
        stages = [s for s in with_td.history.stages if s.eigenvalues]
        cmap = plt.get_cmap("viridis")
        for i, s in enumerate(stages):
            color = cmap(i / max(len(stages) - 1, 1))
            spectrum.plot(
                range(len(s.eigenvalues)),
                s.eigenvalues,
                marker="o",
                color=color,
                label=f"epoch {s.epoch}, depth {s.depth}",
            )
            if s.location is not None:
                spectrum.scatter([s.location], [s.eigenvalues[s.location]], s=120, facecolors="none", edgecolors="red")
        spectrum.xaxis.get_major_locator().set_params(integer=True)
        spectrum.set_xlabel("location l (state after which the layer goes)")
        spectrum.set_ylabel("leading eigenvalue μ_l")
        spectrum.set_title(f"topological derivative ({with_td.strategy}; ○ = chosen)")
        spectrum.legend(fontsize=7)
    else:
        spectrum.axis("off")
    if title:
        fig.suptitle(title)
    path = save_figure(fig, Path(path))
    plt.close(fig)
    return path


def plot_comparison(comparison: Comparison, path: str | Path) -> Path:
    """The runs of the first seed of a comparison (see :func:`plot_runs`)."""
    first_seed = min(r.seed for r in comparison.results)
    results = [r for r in comparison.results if r.seed == first_seed]
    return plot_runs(results, path, title=f"{comparison.task}, seed {first_seed}")
