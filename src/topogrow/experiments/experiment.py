"""Run a growth strategy on a task, or every strategy over several seeds, side by side."""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

from topogrow._validation import check_int
from topogrow.data import load as load_task
from topogrow.data.task import Task
from topogrow.experiments.paired import Paired, paired
from topogrow.experiments.progress import RunProgress
from topogrow.growth import Callback, Grower, GrowthConfig, GrowthHistory
from topogrow.growth.checkpoint import find_checkpoint
from topogrow.growth.strategies import growth_strategies
from topogrow.nn import MODELS
from topogrow.training.epochs import resolve_device


@dataclass(frozen=True)
class ModelConfig:
    """The initial network.

    ``family`` is ``"mlp"`` (ResidualMLP of state width ``width``), ``"cnn"``
    (ResidualCNN with two stages of ``width`` and ``2 * width`` channels) or ``"vit"``
    (ViT with token width ``width``, 4 heads, 7x7 patches on 28x28 images).
    ``initial_depth`` residual layers to start from (per stage for the CNN).
    """

    width: int = 32
    initial_depth: int = 1
    activation: str = "silu-tanh"
    family: str = "mlp"

    def __post_init__(self) -> None:
        MODELS.check(self.family)
        check_int("width", self.width, minimum=1)
        check_int("initial depth", self.initial_depth, minimum=0)


def input_shape(task: Task) -> tuple[int, ...]:
    """Per-sample input shape of a task, e.g. ``(8,)`` or ``(1, 28, 28)``."""
    return tuple(task.X_train.shape[1:])


def build_model(
    task: Task, config: ModelConfig, depth: int | None = None, spec: dict[str, Any] | None = None
) -> torch.nn.Module:
    """The initial network of ``config.family`` for ``task``, freshly initialised.

    ``depth`` overrides the initial depth; ``spec`` (a grown model's ``spec()``)
    rebuilds that exact architecture instead, e.g. for the ``scratch`` baseline.
    """
    if spec is not None:
        return MODELS[config.family](**spec)
    depth = config.initial_depth if depth is None else depth
    model = MODELS[config.family]
    try:
        return model.for_data(input_shape(task), task.out_features, config.width, depth, config.activation)
    except NotImplementedError as error:
        raise ValueError(f"model {config.family!r}: {error} (or pass spec=...)") from None
    except ValueError as error:
        raise ValueError(f"task {task.name}: {error}") from None


@dataclass
class RunResult:
    """One strategy on one seed: the metric, the architecture it ended with, its history."""

    strategy: str
    seed: int
    metric: float
    final_depth: int
    n_parameters: int
    wall_time: float
    total_epochs: int
    spec: dict[str, Any]
    history: GrowthHistory
    flops: float = 0.0  # counted, not timed: training, validation, TD passes, line searches

    def to_dict(self) -> dict[str, Any]:
        """The run as JSON-able values (what ``run.json`` and ``compare.json`` hold)."""
        out = {k: v for k, v in self.__dict__.items() if k != "history"}
        out["history"] = self.history.to_dict()
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunResult:
        """The inverse of :meth:`to_dict` (e.g. from a ``compare.json``)."""
        values = dict(values)
        values["history"] = GrowthHistory.from_dict(values["history"])
        return cls(**values)


def _run_metadata(task: Task, model: ModelConfig, initial_depth: int | None, spec: dict[str, Any] | None) -> dict:
    """What a checkpoint records about the run besides the growth config (to refuse a mismatched resume)."""
    return {
        "task": task.name,
        "n_train": int(len(task.X_train)),
        "model": dataclasses.asdict(model),
        "initial_depth": initial_depth,
        "spec": spec,
    }


def _check_same_run(grower: Grower, growth: GrowthConfig, metadata: dict[str, Any]) -> None:
    """Refuse to continue a checkpoint with other options than the run that wrote it."""
    where = grower.resumed_from
    saved = {k: v for k, v in grower.config.to_dict().items() if k != "device"}
    given = {k: v for k, v in growth.to_dict().items() if k != "device"}
    theirs = {**{f"growth {k}": v for k, v in saved.items()}, **grower.metadata}
    ours = {**{f"growth {k}": v for k, v in given.items()}, **metadata}
    # the task first: a checkpoint of another task differs in much else (n_train, ...) that follows from it
    for key in sorted(set(theirs) | set(ours), key=lambda k: (k != "task", k)):
        if theirs.get(key) != ours.get(key):
            raise ValueError(
                f"{where}: written by a different run ({key} is {theirs.get(key)!r} there, {ours.get(key)!r} here); "
                "resume with the options of the run it continues"
            )


def run(
    task: Task,
    growth: GrowthConfig,
    model: ModelConfig,
    initial_depth: int | None = None,
    progress: bool = False,
    spec: dict[str, Any] | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 0,
    resume: str | Path | None = None,
    callbacks: Sequence[Callback] = (),
) -> tuple[RunResult, torch.nn.Module]:
    """Build the initial network (seeded), grow and train it, score it on the test set.

    ``callbacks`` (e.g. loggers) hang on the growth loop besides its own.

    ``initial_depth`` overrides the config's; ``spec`` rebuilds a given architecture.
    With ``checkpoint_dir`` the run writes checkpoints (after every stage, every
    ``checkpoint_every`` epochs and at the end); ``resume`` (a checkpoint, or a
    directory of them) continues a run from its newest checkpoint, which must have
    been written by a run with the same options (else ``ValueError``); when it holds
    no checkpoint yet the run starts from the beginning.
    """
    if model.family == "mlp":
        task = task.flattened()
    metadata = _run_metadata(task, model, initial_depth, spec)
    found = find_checkpoint(resume) if resume is not None else None
    start = time.perf_counter()
    device = resolve_device(growth.device)  # the commands pick CUDA when there is one
    if found is not None:
        grower = Grower.from_checkpoint(found, task.loss, device=device, callbacks=callbacks)
        _check_same_run(grower, growth, metadata)
    else:
        torch.manual_seed(growth.seed)
        network = build_model(task, model, initial_depth, spec).to(device)
        start = time.perf_counter()
        grower = Grower(network, task.loss, growth, callbacks=callbacks)
    grower.metadata = metadata
    history = grower.fit(
        (task.X_train, task.y_train),
        (task.X_val, task.y_val),
        progress=progress,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every,
    )
    wall = history.wall_time if found is not None else time.perf_counter() - start
    grower.model.preprocessing = getattr(task, "preprocessing", None)  # saved with the model, for predict
    result = RunResult(
        strategy=growth.strategy,
        seed=growth.seed,
        metric=task.score(grower.model),
        final_depth=grower.model.depth,
        n_parameters=grower.model.n_parameters(),
        wall_time=wall,
        total_epochs=history.total_epochs,
        spec=grower.model.spec(),
        history=history,
        flops=history.flops.get("total", 0.0),
    )
    return result, grower.model


@dataclass
class Comparison:
    """Every strategy over every seed on one task (``lrs``: the learning rates every arm chose from;
    ``overrides``: config changes of some strategies)."""

    task: str
    metric_name: str
    growth: GrowthConfig
    model: ModelConfig
    results: list[RunResult] = field(default_factory=list)
    lrs: tuple[float, ...] = ()
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)

    def by_strategy(self) -> dict[str, list[RunResult]]:
        """The runs of each strategy, in the order they were run."""
        groups: dict[str, list[RunResult]] = {}
        for result in self.results:
            groups.setdefault(result.strategy, []).append(result)
        return groups

    def rows(self) -> list[dict[str, Any]]:
        """Per strategy: metric mean and std, mean final depth, parameters, wall time."""
        rows = []
        for strategy, results in self.by_strategy().items():
            metrics = [r.metric for r in results]
            rows.append(
                {
                    "strategy": strategy,
                    "metric_mean": statistics.fmean(metrics),
                    "metric_std": statistics.stdev(metrics) if len(metrics) > 1 else 0.0,
                    "final_depth": statistics.fmean(r.final_depth for r in results),
                    "n_parameters": statistics.fmean(r.n_parameters for r in results),
                    "wall_time": statistics.fmean(r.wall_time for r in results),
                    "epochs": statistics.fmean(r.total_epochs for r in results),
                    "flops": statistics.fmean(r.flops for r in results),
                    "seeds": len(results),
                }
            )
        return rows

    @property
    def higher_better(self) -> bool:
        """Whether a larger metric is better (accuracy) or a smaller one (errors)."""
        return "accuracy" in self.metric_name

    def metrics(self, strategy: str) -> dict[int, float]:
        """The metric of ``strategy`` by seed."""
        return {r.seed: r.metric for r in self.results if r.strategy == strategy}

    def _pair(self, first: str, second: str) -> Paired | None:
        """``first`` against ``second`` over their common seeds (positive = ``first`` better)."""
        ours, theirs = self.metrics(first), self.metrics(second)
        seeds = sorted(set(ours) & set(theirs))
        if first == second or not seeds:
            return None
        return paired([ours[s] for s in seeds], [theirs[s] for s in seeds], self.higher_better)

    def paired_with(self, reference: str) -> dict[str, Paired]:
        """Every other strategy against ``reference``, seed by seed (positive = the strategy better)."""
        pairs = {strategy: self._pair(strategy, reference) for strategy in self.by_strategy()}
        return {strategy: pair for strategy, pair in pairs.items() if pair is not None}

    def paired(self, reference: str) -> dict[str, Paired]:
        """``reference`` against every other strategy, seed by seed (positive = reference better)."""
        pairs = {strategy: self._pair(reference, strategy) for strategy in self.by_strategy()}
        return {strategy: pair for strategy, pair in pairs.items() if pair is not None}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Comparison:
        """The inverse of :meth:`to_dict` (a ``compare.json``)."""
        return cls(
            task=values["task"],
            metric_name=values["metric"],
            growth=GrowthConfig.from_saved(values["growth"]),
            model=ModelConfig(**values["model"]),
            results=[RunResult.from_dict(run) for run in values["runs"]],
            lrs=tuple(values.get("lrs", ())),
            overrides=dict(values.get("overrides") or {}),
        )

    def to_dict(self) -> dict[str, Any]:
        """The comparison as JSON-able values: the settings, every run and the summary per strategy."""
        return {
            "task": self.task,
            "metric": self.metric_name,
            "growth": self.growth.to_dict(),
            "model": self.model.__dict__,
            "lrs": list(self.lrs),
            "overrides": self.overrides,
            "summary": self.rows(),
            "runs": [r.to_dict() for r in self.results],
        }


#: Not a growth strategy but the search a user would otherwise run (see :func:`depth_search`).
DEPTH_SEARCH = "depth-search"


def depth_search(
    task: Task, growth: GrowthConfig, model: ModelConfig, lrs: tuple[float, ...] = ()
) -> tuple[RunResult, list[RunResult]]:
    """The search a user runs instead of growing, and the **reference** growth is measured against:
    train the network from scratch at every depth from the initial one to ``max_depth`` (strategy
    ``no-growth``, under the config's training rule: to convergence), at each learning rate of
    ``lrs`` (default: the config's), and keep the run with the lowest validation loss.

    Returns that run as ``depth-search`` with the **total** cost of the search (epochs, wall time
    and FLOPs summed over its runs; the chosen network's own are in its history), and every run."""
    runs = []
    depth = model.initial_depth
    while True:
        torch.manual_seed(growth.seed)
        if runs and build_model(task, model, depth).depth > growth.max_depth:
            break
        runs.append(best_lr(task, growth.replace(strategy="no-growth"), model, lrs, initial_depth=depth)[0])
        depth += 1
    chosen = min(runs, key=best_val_loss)
    total = dataclasses.replace(
        chosen,
        strategy=DEPTH_SEARCH,
        wall_time=sum(r.wall_time for r in runs),
        total_epochs=sum(r.total_epochs for r in runs),
        flops=sum(r.flops for r in runs),
    )
    return total, runs


def best_val_loss(result: RunResult) -> float:
    """The lowest validation loss of a run (the epoch a converged run restores)."""
    return min(e.val_loss for e in result.history.epochs)


def best_lr(
    task: Task, growth: GrowthConfig, model: ModelConfig, lrs: tuple[float, ...] = (), **options: Any
) -> tuple[RunResult, torch.nn.Module]:
    """:func:`run` at each learning rate of ``lrs`` (default: only ``growth.lr``); the run with the
    lowest validation loss. Every arm of a comparison chooses so, from the same set."""
    best = None
    for lr in lrs or (growth.lr,):
        outcome = run(task, growth.replace(lr=lr), model, **options)
        if best is None or best_val_loss(outcome[0]) < best_val_loss(best[0]):
            best = outcome
    return best


def compare(
    task_name: str,
    strategies: tuple[str, ...] | None = None,
    seeds: int = 3,
    growth: GrowthConfig | None = None,
    model: ModelConfig | None = None,
    data_dir: str | None = None,
    n_train: int | None = None,
    progress: bool = True,
    task_factory: Callable[..., Task] | None = None,
    lrs: tuple[float, ...] = (),
    overrides: dict[str, dict[str, Any]] | None = None,
) -> Comparison:
    """Run each strategy on ``seeds`` seeds (each seed: its own split and initial network), every
    arm under the same training rule (the config's: to convergence); by default every registered
    growth strategy (:func:`~topogrow.growth.strategies.growth_strategies`) and the
    ``depth-search`` reference (:func:`depth_search`), which runs first.

    ``scratch`` trains the final architecture of that seed's ``td`` run from scratch, so ``td``
    must be among the strategies; ``small-init`` trains the reference depth with its extra layers
    small (so ``depth-search`` must be among them); ``no-growth`` trains the initial network.
    Every arm takes the best of ``lrs`` on validation (:func:`best_lr`). ``overrides`` change the
    config of some strategies (e.g. ``{"td": {"line_search": "grid", "td_samples": "all"}}``: the
    paper's pass for the paper's rule). ``task_factory`` (e.g. a
    table's, see :mod:`topogrow.data.tabular`) is called as ``task_factory(seed=, data_dir=, n_train=)``
    for each seed instead of the task registered as ``task_name``.
    """
    growth = growth or GrowthConfig()
    model = model or ModelConfig()
    strategies = (*growth_strategies(), DEPTH_SEARCH) if strategies is None else tuple(strategies)
    overrides = dict(overrides or {})
    for name in strategies:
        if name != DEPTH_SEARCH:
            GrowthConfig(strategy=name)  # validates the name, with a "did you mean"
    for name, changes in overrides.items():
        if name not in strategies:
            raise ValueError(f"overrides for {name!r}, which is not among the strategies {list(strategies)}")
        growth.replace(**changes)  # validates the keys and values
    if "scratch" in strategies and "td" not in strategies:
        raise ValueError("strategy 'scratch' trains the final architecture of the 'td' run: add 'td'")
    if "small-init" in strategies and DEPTH_SEARCH not in strategies:
        raise ValueError(f"strategy 'small-init' trains the depth the reference search finds: add '{DEPTH_SEARCH}'")
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    order = sorted(strategies, key=lambda s: (s != DEPTH_SEARCH, s in ("scratch", "small-init"), s != "td"))
    comparison = Comparison(task_name, "", growth, model, lrs=tuple(lrs), overrides=overrides)
    bar = RunProgress(seeds * len(order), f"compare {task_name}", enabled=progress)
    for seed in range(growth.seed, growth.seed + seeds):
        task = (task_factory or partial(load_task, task_name))(seed=seed, data_dir=data_dir, n_train=n_train)
        comparison.metric_name = task.metric_name
        done: dict[str, RunResult] = {}
        for name in order:
            bar.start(f"seed {seed}, {name}")
            config = growth.replace(**overrides.get(name, {}), seed=seed)
            config = config if name == DEPTH_SEARCH else config.replace(strategy=name)
            if name == DEPTH_SEARCH:
                result, _ = depth_search(task, config, model, lrs)
            else:
                spec = done["td"].spec if name == "scratch" else None
                if name == "small-init":
                    config = config.replace(max_depth=done[DEPTH_SEARCH].final_depth)
                result, _ = best_lr(task, config, model, lrs, spec=spec)
            done[name] = result
            comparison.results.append(result)
            bar.done(f"{task.metric_name} {result.metric:.4f}, depth {result.final_depth}, {result.wall_time:.1f} s")
    bar.close()
    return comparison
