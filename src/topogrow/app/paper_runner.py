"""``topogrow paper``: run every row of the paper's results table and write ``results/paper.md``.

Each row is a JSON file in :mod:`topogrow.app.paper` naming the task, the number of
training samples S, the network, the growth schedule, the training budget and the
strategies, plus the figure the paper reports. ``--quick`` applies the file's
``quick`` overrides (a smaller budget). Every number in the report comes from the
runs just made.
"""

from __future__ import annotations

import json
import platform
import subprocess
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from topogrow._io import write_json_atomic, write_text_atomic
from topogrow.app.experiment import DEPTH_SEARCH, Comparison, ModelConfig, compare
from topogrow.app.paired import paired, paired_cell
from topogrow.app.report import comparison_table, plot_comparison
from topogrow.growth import GrowthConfig
from topogrow.growth.strategies import growth_strategies

ROW_KEYS = {"row", "paper", "task", "n_train", "model", "growth", "strategies", "seeds", "quick", "note"}


@dataclass
class Row:
    """One row of the paper's table and how to reproduce it."""

    name: str
    row: str
    paper: dict[str, Any]
    task: str
    n_train: int | None
    model: ModelConfig
    growth: GrowthConfig
    strategies: tuple[str, ...]
    seeds: int
    note: str = ""
    quick: dict[str, Any] = field(default_factory=dict)


def _row_from_dict(name: str, values: dict[str, Any], quick: bool) -> Row:
    unknown = set(values) - ROW_KEYS
    if unknown:
        raise ValueError(f"paper config {name}: unknown keys {sorted(unknown)}; expected {sorted(ROW_KEYS)}")
    values = dict(values)
    if quick:
        for key, override in values.get("quick", {}).items():
            if isinstance(override, dict):
                values[key] = {**values.get(key, {}), **override}
            else:
                values[key] = override
    return Row(
        name=name,
        row=values["row"],
        paper=values["paper"],
        task=values["task"],
        n_train=values.get("n_train"),
        model=ModelConfig(**values.get("model", {})),
        growth=GrowthConfig.from_dict(values.get("growth", {})),
        strategies=tuple(values.get("strategies", (*growth_strategies(), DEPTH_SEARCH))),
        seeds=int(values.get("seeds", 5)),
        note=values.get("note", ""),
        quick=values.get("quick", {}),
    )


def load_rows(quick: bool = False, only: list[str] | None = None) -> list[Row]:
    """Every row configuration shipped with the package (sorted by file name)."""
    files = sorted(f for f in resources.files("topogrow.app.paper").iterdir() if f.name.endswith(".json"))
    rows = []
    for file in files:
        name = file.name.removesuffix(".json")
        if only and name not in only:
            continue
        try:
            values = json.loads(file.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"paper config {file.name}: not valid JSON ({error})") from None
        rows.append(_row_from_dict(name, values, quick))
    if only:
        missing = set(only) - {r.name for r in rows}
        if missing:
            names = [f.name.removesuffix(".json") for f in files]
            raise ValueError(f"unknown paper rows {sorted(missing)}; expected some of {names}")
    return rows


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _cell(summary: dict[str, dict[str, Any]], strategy: str | None) -> str:
    if strategy is None or strategy not in summary:
        return "—"
    return f"{summary[strategy]['metric_mean']:.4f} ± {summary[strategy]['metric_std']:.4f}"


def _paired_from_runs(runs: list[dict[str, Any]], reference: str, other: str, higher_better: bool):
    ours = {r["seed"]: r["metric"] for r in runs if r["strategy"] == reference}
    theirs = {r["seed"]: r["metric"] for r in runs if r["strategy"] == other}
    seeds = sorted(set(ours) & set(theirs))
    if not seeds:
        return None
    return paired([ours[s] for s in seeds], [theirs[s] for s in seeds], higher_better)


def _record(result) -> str:
    return "—" if result is None else f"{paired_cell(result)} ({result.verdict})"


def paper_summary(out: Path, quick: bool, only: list[str] | None = None, reference: str | None = None) -> str:
    """A Markdown table, one line per row whose ``out/<row>/compare.json`` exists: the paper's
    figure; the default strategy (``reference``) with its rank; its paired record (positive = it is
    better: mean difference [95 % t-interval], seeds won) against the best other strategy, against
    ``depth-search`` and against ``no-growth``; and its cost against ``depth-search`` (wall time, epochs)."""
    reference = reference or GrowthConfig().strategy
    lines = [
        f"| row | paper | {reference} | rank | vs best other | vs depth-search | vs no-growth | "
        "cost / depth-search (time, epochs) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in load_rows(quick, only):
        path = out / row.name / "compare.json"
        if not path.is_file():
            continue
        payload = json.loads(path.read_text())
        summary = {r["strategy"]: r for r in payload["summary"]}
        if reference not in summary:
            continue
        higher_better = "accuracy" in payload["metric"]
        order = sorted(summary, key=lambda k: summary[k]["metric_mean"], reverse=higher_better)
        runs = payload["runs"]
        other = next((k for k in order if k not in (reference, "depth-search", "no-growth")), None)
        cost = "—"
        if "depth-search" in summary:
            search = summary["depth-search"]
            cost = (
                f"{summary[reference]['wall_time'] / search['wall_time']:.2f}, "
                f"{summary[reference]['epochs'] / search['epochs']:.2f}"
            )
        lines.append(
            f"| {row.row} | {row.paper['value']} ({row.paper['metric']}) | {_cell(summary, reference)} | "
            f"{order.index(reference) + 1} of {len(order)} | "
            f"{other}: {_record(_paired_from_runs(runs, reference, other, higher_better) if other else None)} | "
            f"{_record(_paired_from_runs(runs, reference, 'depth-search', higher_better))} | "
            f"{_record(_paired_from_runs(runs, reference, 'no-growth', higher_better))} | {cost} |"
        )
    return "\n".join(lines)


def _section(row: Row, comparison: Comparison, seconds: float, reference: str | None) -> str:
    paper = row.paper
    return (
        f"## {row.row}\n\n"
        f"Paper: {paper['metric']} = {paper['value']}"
        + (f" ({paper['note']})" if paper.get("note") else "")
        + f". Here: task `{row.task}`, S = {row.n_train or 'all'} training samples, "
        f"{row.model.family} of width {row.model.width} grown from depth {row.model.initial_depth} to at most "
        f"{row.growth.max_depth}, {row.growth.epochs_per_stage} epochs per stage, {row.growth.final_epochs} "
        f"final epochs; {row.seeds} seeds; {seconds:.0f} s.\n"
        + (f"\n{row.note}\n" if row.note else "")
        + f"\n{comparison_table(comparison, reference)}\n\n![{row.name}]({row.name}/compare.png)\n"
    )


def render_paper(
    out: Path, quick: bool, only: list[str] | None = None, command: str = "topogrow paper", reference: str | None = None
) -> Path:
    """Write ``out/paper.md`` from the rows' ``out/<row>/compare.json`` (the runs of :func:`run_paper`),
    with ``reference`` (default: the library's default strategy) paired against the others."""
    sections, total = [], 0.0
    for row in load_rows(quick, only):
        path = out / row.name / "compare.json"
        if not path.is_file():
            continue
        payload = json.loads(path.read_text())
        seconds = float(payload.get("seconds", sum(run["wall_time"] for run in payload["runs"])))
        total += seconds
        sections.append(_section(row, Comparison.from_dict(payload), seconds, reference))
    if not sections:
        raise ValueError(f"{out}: no row has a compare.json to report (run topogrow paper first)")
    header = (
        "# The paper's results table, reproduced\n\n"
        f"Command: `{command}`{' (quick budget)' if quick else ''}; commit {_commit()}; "
        f"torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} threads; "
        f"total {total:.0f} s. Every number below comes from these runs.\n\n"
        f"## Summary\n\n{paper_summary(out, quick, only, reference)}\n\n"
    )
    return write_text_atomic(out / "paper.md", header + "\n".join(sections))


def run_paper(
    out: Path,
    quick: bool,
    only: list[str] | None = None,
    data_dir: str | None = None,
    progress: bool = True,
    command: str = "topogrow paper",
) -> Path:
    """Run the rows, write a JSON and a PNG per row, then ``out/paper.md`` (:func:`render_paper`)."""
    for row in load_rows(quick, only):
        start = time.perf_counter()
        comparison: Comparison = compare(
            row.task, row.strategies, row.seeds, row.growth, row.model, data_dir, row.n_train, progress=progress
        )
        payload = {**comparison.to_dict(), "seconds": time.perf_counter() - start}
        write_json_atomic(out / row.name / "compare.json", payload)
        plot_comparison(comparison, out / row.name / "compare.png")
    return render_paper(out, quick, only, command)
