"""Run a transfer benchmark: pretrain per seed, then adapt a copy with every strategy at every size.

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
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from topogrow._validation import check_int, unknown_name_error
from topogrow.core.losses import resolve_loss
from topogrow.data.task import Task
from topogrow.experiments.experiment import ModelConfig, build_model
from topogrow.experiments.progress import RunProgress
from topogrow.experiments.transfer.benchmarks import BENCHMARKS, TransferData
from topogrow.growth.strategies import transfer_strategies
from topogrow.training.data import TensorBatches
from topogrow.training.epochs import train_epoch
from topogrow.training.optimizers import optimizer_factory, rebuild_optimizer
from topogrow.transfer import adapt

__all__ = ["STRATEGIES", "TransferConfig", "TransferRecord", "TransferResults", "pretrain", "run_transfer"]

#: The strategies a transfer run compares: :func:`~topogrow.transfer.adapt`'s, and ``target-only``.
STRATEGIES: tuple[str, ...] = (*transfer_strategies(), "target-only")


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
    """Pretrain per seed, then adapt with every strategy at every target size (see this module's docstring)."""
    start = time.perf_counter()
    results: TransferResults | None = None
    total = config.seeds * len(config.samples) * len(config.strategies)
    bar = RunProgress(total, f"transfer {config.benchmark}", enabled=progress)
    for seed in range(config.seeds):
        data = BENCHMARKS[config.benchmark].data(seed, config.data_dir)
        task = data.source.flattened() if config.model == "mlp" else data.source
        if results is None:
            results = TransferResults(config, f"target {task.metric_name}")
        bar.start(f"seed {seed}: pretraining")
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
                bar.start(f"seed {seed}, {size} {BENCHMARKS[config.benchmark].sample_label}, {strategy}")
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
                bar.done(f"{results.records[-1].metric:.4g}, depth {adapted.model.depth}")
    bar.close()
    assert results is not None
    results.wall_time = time.perf_counter() - start
    return results
