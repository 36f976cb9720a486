"""A transfer run's report: the Markdown table with paired statistics, the plot, and the files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from topogrow._io import write_json_atomic, write_text_atomic
from topogrow.experiments.paired import paired, paired_cell
from topogrow.experiments.report import save_figure
from topogrow.experiments.transfer.benchmarks import BENCHMARKS
from topogrow.experiments.transfer.runner import TransferResults
from topogrow.growth.config import GrowthConfig

__all__ = ["plot_transfer", "transfer_table", "write_transfer"]


def transfer_table(results: TransferResults) -> str:
    """Markdown: per strategy, trainable parameters, the target metric (mean ± std) per size, wall time."""
    config = results.config
    label = BENCHMARKS[config.benchmark].sample_label
    summary = results.summary()
    by = {(r["strategy"], r["samples"]): r for r in summary}
    pick = max if results.higher_better else min
    best = {size: pick(r["metric_mean"] for r in summary if r["samples"] == size) for size in config.samples}
    header = " | ".join(f"{label} = {size}" for size in config.samples)
    lines = [
        f"| strategy | trainable parameters | {header} | wall time per run (s) |",
        "|---|---|" + "---|" * len(config.samples) + "---|",
    ]
    for strategy in config.strategies:
        rows = [by[(strategy, size)] for size in config.samples]
        cells = [
            f"{r['metric_mean']:.4f} ± {r['metric_std']:.4f}" + (" **best**" if r["metric_mean"] == best[size] else "")
            for r, size in zip(rows, config.samples, strict=True)
        ]
        trainable = sorted({int(round(r["n_trainable"])) for r in rows})
        lines.append(
            f"| {strategy} | {', '.join(map(str, trainable))} | {' | '.join(cells)} | "
            f"{np.mean([r['wall_time'] for r in rows]):.2f} |"
        )
    source = np.array([p["source_metric"] for p in results.pretrained])
    before = np.array([p["target_metric"] for p in results.pretrained])
    lines.append(
        f"\n{results.metric_name}, mean ± std over {config.seeds} seeds. Pretrained {config.model} "
        f"(width {config.width}, depth {config.depth}): source {results.metric_name.removeprefix('target ')} "
        f"{source.mean():.4f} ± {source.std(ddof=1) if len(source) > 1 else 0:.4f}; on the target without "
        f"adaptation {before.mean():.4f} ± {before.std(ddof=1) if len(before) > 1 else 0:.4f}. "
        f"{config.n_layers} inserted layers; "
        + (
            f"every run trained to convergence (batch {config.batch_size}, lr {config.lr} halved on plateaus)"
            if config.steps is None
            else f"about {config.steps} Adam steps (batch {config.batch_size}, lr {config.lr}) per run"
        )
        + (
            f", {config.val_fraction:.0%} of the target samples held out for early stopping"
            if config.val_fraction
            else ""
        )
        + f"; total {results.wall_time:.0f} s."
    )
    lines += _paired_lines(results, label)
    return "\n".join(lines)


def _paired_lines(results: TransferResults, label: str, reference: str | None = None) -> list[str]:
    """``reference`` paired with every other strategy per target size (the same pretrained network and
    draw per seed): mean difference [95 % t-interval], seeds won; positive = ``reference`` better."""
    config = results.config
    reference = reference or GrowthConfig().strategy
    if reference not in config.strategies or config.seeds < 2:
        return []
    metric = {(r.strategy, r.samples, r.seed): r.metric for r in results.records}
    seeds = sorted({r.seed for r in results.records})
    header = " | ".join(f"{label} = {size}" for size in config.samples)
    lines = [
        f"\nPaired against `{reference}` (positive = `{reference}` better; mean difference [95 % t-interval], "
        "seeds won):\n",
        f"| strategy | {header} |",
        "|---|" + "---|" * len(config.samples),
    ]
    for strategy in config.strategies:
        if strategy == reference:
            continue
        cells = []
        for size in config.samples:
            ours = [metric[(reference, size, seed)] for seed in seeds]
            theirs = [metric[(strategy, size, seed)] for seed in seeds]
            cells.append(paired_cell(paired(ours, theirs, results.higher_better)))
        lines.append(f"| {strategy} | {' | '.join(cells)} |")
    return lines


def plot_transfer(results: TransferResults, path: str | Path) -> Path:
    """The target metric against the number of target samples, one line per strategy (± std)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config = results.config
    fig, axes = plt.subplots(figsize=(7, 4.5))
    summary = results.summary()
    for index, strategy in enumerate(config.strategies):
        rows = [r for r in summary if r["strategy"] == strategy]
        axes.errorbar(
            [r["samples"] for r in rows],
            [r["metric_mean"] for r in rows],
            yerr=[r["metric_std"] for r in rows],
            marker="o",
            capsize=3,
            color=f"C{index % 10}",
            label=strategy,
            linewidth=2.5 if strategy == "td" else 1.2,
        )
    before = np.mean([p["target_metric"] for p in results.pretrained])
    axes.axhline(before, color="gray", linestyle="--", label="pretrained, not adapted")
    axes.set_xscale("log")
    axes.set_xticks(list(config.samples), [str(s) for s in config.samples])
    axes.set_xlabel(BENCHMARKS[config.benchmark].sample_label)
    axes.set_ylabel(results.metric_name)
    if not results.higher_better:
        axes.set_yscale("log")
    axes.set_title(f"transfer: {config.benchmark} ({config.seeds} seeds)")
    axes.legend(fontsize=8)
    path = save_figure(fig, Path(path))
    plt.close(fig)
    return path


def write_transfer(results: TransferResults, out: str | Path) -> tuple[Path, Path, Path]:
    """``out/transfer.json``, ``out/transfer.md`` (the table) and ``out/transfer.png``."""
    out = Path(out)
    json_path = write_json_atomic(out / "transfer.json", results.to_dict())
    md_path = write_text_atomic(
        out / "transfer.md", f"# Transfer learning: {results.config.benchmark}\n\n{transfer_table(results)}\n"
    )
    return json_path, md_path, plot_transfer(results, out / "transfer.png")
