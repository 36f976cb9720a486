"""Tables, JSON files and plots of growth runs."""

from __future__ import annotations

import io
from pathlib import Path

from topogrow._io import write_atomic, write_json_atomic
from topogrow.app.experiment import Comparison, RunResult
from topogrow.app.paired import paired_cell
from topogrow.growth import GrowthConfig

__all__ = ["comparison_table", "plot_comparison", "plot_runs", "save_figure", "write_json_atomic"]


def comparison_table(comparison: Comparison, reference: str | None = None) -> str:
    """A Markdown table: metric mean +- std, final depth, parameters, epochs, compute (counted FLOPs,
    and their ratio to ``scratch``'s when it ran), wall time; then
    ``reference`` (default: the library's default strategy) paired against every other strategy."""
    metric = comparison.metric_name
    lines = [
        f"| strategy | {metric} (mean ± std) | final depth | parameters | epochs | GFLOPs (× scratch) "
        "| wall time (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = comparison.rows()
    higher_better = "accuracy" in metric
    best = (max if higher_better else min)(r["metric_mean"] for r in rows)
    scratch = next((r["flops"] for r in rows if r["strategy"] == "scratch"), 0.0)
    for r in rows:
        mark = " **best**" if r["metric_mean"] == best else ""
        flops = f"{r['flops'] / 1e9:.3g}" + (f" ({r['flops'] / scratch:.2f}×)" if scratch else "")
        lines.append(
            f"| {r['strategy']} | {r['metric_mean']:.4f} ± {r['metric_std']:.4f}{mark} | "
            f"{r['final_depth']:.1f} | {r['n_parameters']:.0f} | {r['epochs']:.0f} | {flops} | {r['wall_time']:.1f} |"
        )
    seeds = rows[0]["seeds"] if rows else 0
    lines.append(f"\n{comparison.task}: {seeds} seeds; each seed has its own split and initial network.")
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
