"""Section ``growth_overhead``: whole ``td`` growth runs against ``random`` growth and against
training their final architecture from scratch for the same epochs (wall time and counted FLOPs)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from topogrow.data import load as load_task
from topogrow.experiments.bench.config import SECTIONS, BenchConfig
from topogrow.experiments.bench.measure import log
from topogrow.experiments.experiment import ModelConfig, compare, run
from topogrow.growth import GrowthConfig

#: The growth runs of the goals: the README demo, the bench's own and a CNN (FLOPs).
GROWTH_CASES = {
    "demo": (
        "california",
        ModelConfig(width=32, initial_depth=1),
        dict(max_depth=4, epochs_per_stage=8, final_epochs=10),
    ),
    "bench": (
        "california",
        ModelConfig(width=64, initial_depth=1),
        dict(max_depth=4, epochs_per_stage=3, final_epochs=3),
    ),
    "cnn": (
        "mnist5k",
        ModelConfig(width=8, initial_depth=1, family="cnn"),  # depth 2: one layer per stage
        dict(max_depth=4, epochs_per_stage=2, final_epochs=2),
    ),
}


def _growth_case(cfg: BenchConfig, name: str, seeds: int) -> dict[str, Any]:
    """td, random and scratch (td's final architecture, td's epochs) on ``seeds`` seeds: wall-time
    and FLOP ratios of the sums over seeds. Every run trains a fixed number of epochs at a constant
    rate (the cost of growing at equal epochs; compute to quality is ``topogrow compare``'s)."""
    task, model, budget = GROWTH_CASES[name]
    quick = dict(max_depth=3, epochs_per_stage=1, final_epochs=1) if cfg.quick else {}
    fixed = dict(lr_schedule="constant", early_stopping_patience=None)  # epochs as given, the best kept
    growth = GrowthConfig(strategy="td", batch_size=256, seed=0, device=cfg.device, **{**budget, **quick, **fixed})
    log(f"growth: {name} ({task}), td, random and scratch, {seeds} seed(s)")
    n_train = 300 if cfg.quick else None
    comparison = compare(task, ("td", "random"), seeds, growth, model, cfg.data_dir, n_train, progress=False)
    runs: dict[str, list] = {}
    for result in comparison.results:
        runs.setdefault(result.strategy, []).append(result)
    for grown in runs["td"]:  # td's architecture from scratch, for td's epochs
        data = load_task(task, seed=grown.seed, data_dir=cfg.data_dir, n_train=n_train)
        scratch = growth.replace(strategy="scratch", seed=grown.seed, final_epochs=grown.total_epochs)
        runs.setdefault("scratch", []).append(run(data, scratch, model, spec=grown.spec)[0])

    def total(strategy: str, key: str) -> float:
        return float(sum(getattr(r, key) for r in runs[strategy]))

    td = runs["td"]
    return {
        "task": task,
        "model": asdict(model),
        "config": {k: growth.to_dict()[k] for k in ("max_depth", "epochs_per_stage", "final_epochs", "batch_size")},
        "seeds": seeds,
        "wall_s": {strategy: total(strategy, "wall_time") for strategy in runs},
        "flops": {strategy: total(strategy, "flops") for strategy in runs},
        "td_over_scratch": total("td", "wall_time") / total("scratch", "wall_time"),
        "td_over_random": total("td", "wall_time") / total("random", "wall_time"),
        "random_over_scratch": total("random", "wall_time") / total("scratch", "wall_time"),
        "flops_td_over_scratch": total("td", "flops") / total("scratch", "flops"),
        "epochs": {strategy: total(strategy, "total_epochs") for strategy in runs},
        "td_flops_parts": [r.history.flops for r in td],
        "td_samples": [[s.td_samples for s in r.history.stages if s.td_samples] for r in td],
    }


@SECTIONS.register("growth_overhead", help="growth runs against training the final network from scratch")
def bench_growth(cfg: BenchConfig) -> dict[str, Any]:
    """The demo, bench and CNN growth configurations: td / scratch and td / random (wall time, FLOPs)."""
    seeds = 1 if cfg.quick else 3
    return {name: _growth_case(cfg, name, 1 if name == "cnn" else seeds) for name in GROWTH_CASES}
