"""``topogrow paper``: run every row of the paper's results table and write ``results/paper.md``.

Each row is a JSON file in :mod:`topogrow.experiments.paper` naming the task, the number of
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
from topogrow.experiments.experiment import DEPTH_SEARCH, Comparison, ModelConfig, compare
from topogrow.experiments.paired import paired_cell
from topogrow.experiments.quality import ratio_cell
from topogrow.experiments.quality import summary as quality_summary
from topogrow.experiments.report import comparison_table, plot_comparison, plot_quality
from topogrow.growth import GrowthConfig
from topogrow.growth.strategies import growth_strategies

ROW_KEYS = {"row", "paper", "task", "n_train", "model", "growth", "strategies", "seeds", "quick", "note", "overrides"}


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
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)


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
        overrides=values.get("overrides", {}),
    )


def load_rows(quick: bool = False, only: list[str] | None = None) -> list[Row]:
    """Every row configuration shipped with the package (sorted by file name)."""
    files = sorted(f for f in resources.files("topogrow.experiments.paper").iterdir() if f.name.endswith(".json"))
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


def _record(result) -> str:
    return "—" if result is None else f"{paired_cell(result)} ({result.verdict})"


def paper_summary(out: Path, quick: bool, only: list[str] | None = None, reference: str | None = None) -> str:
    """A Markdown table, one line per row whose ``out/<row>/compare.json`` exists: the paper's
    figure; the default strategy (``reference``); its paired record (positive = it is better: mean
    difference [95 % t-interval], seeds won) against the reference network (``depth-search``: the
    best depth trained to convergence), against ``no-growth`` and against ``small-init``; and its
    compute to quality (:mod:`~topogrow.experiments.quality`: FLOPs and wall time to first reach the
    reference network's best validation loss over what it needed, medians, seeds that reached it;
    its total FLOPs over the whole search's and over the reference network's training)."""
    reference = reference or GrowthConfig().strategy
    lines = [
        f"| row | paper | {reference} | vs reference | vs no-growth | vs small-init | FLOPs to quality "
        "| wall to quality | reached | total / search | total / reference |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in load_rows(quick, only):
        path = out / row.name / "compare.json"
        if not path.is_file():
            continue
        comparison = Comparison.from_dict(json.loads(path.read_text()))
        summary = {r["strategy"]: r for r in comparison.rows()}
        if reference not in summary:
            continue
        against = comparison.paired(reference)
        q = quality_summary(comparison).get(reference)
        cells = "— | — | — | — | —"
        if q is not None:
            cells = (
                f"{ratio_cell(q['flops_to_quality'])} | {ratio_cell(q['wall_to_quality'])} | "
                f"{q['reached']}/{q['seeds']} | "
                f"{ratio_cell(q['total_vs_search'])} | {ratio_cell(q['total_vs_reference'])}"
            )
        lines.append(
            f"| {row.row} | {row.paper['value']} ({row.paper['metric']}) | {_cell(summary, reference)} | "
            f"{_record(against.get(DEPTH_SEARCH))} | {_record(against.get('no-growth'))} | "
            f"{_record(against.get('small-init'))} | {cells} |"
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
        f"{row.growth.max_depth}, {row.growth.epochs_per_stage} epochs per stage, then trained to convergence "
        f"({row.growth.lr_schedule} learning rate, stop after {row.growth.stop_patience} epochs without improvement, "
        f"at most {row.growth.final_epochs} epochs; every arm the same rule)"
        + "".join(f"; `{name}` with {changes}" for name, changes in row.overrides.items())
        + f"; {row.seeds} seeds; {seconds:.0f} s.\n"
        + (f"\n{row.note}\n" if row.note else "")
        + f"\n{comparison_table(comparison, reference)}\n\n![{row.name}]({row.name}/compare.png)"
        + f"\n![{row.name}: quality against compute]({row.name}/quality.png)\n"
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
            row.task,
            row.strategies,
            row.seeds,
            row.growth,
            row.model,
            data_dir,
            row.n_train,
            progress=progress,
            overrides=row.overrides,
        )
        payload = {**comparison.to_dict(), "seconds": time.perf_counter() - start}
        write_json_atomic(out / row.name / "compare.json", {**payload, "quality": quality_summary(comparison)})
        plot_comparison(comparison, out / row.name / "compare.png")
        plot_quality(comparison, out / row.name / "quality.png")
    return render_paper(out, quick, only, command)
