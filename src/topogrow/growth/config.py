"""Validated configuration of a growth run."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from topogrow._validation import check_bool, check_int, check_optional_int, check_real, unknown_name_error
from topogrow.core.sampling import Sampling
from topogrow.growth.line_search import DEFAULT_EPSILONS, LINE_SEARCHES
from topogrow.growth.registries import LR_SCHEDULES, SCHEDULES, STRATEGIES
from topogrow.nn.blocks import BLOCKS
from topogrow.training.optimizers import OPTIMIZERS

#: The floor and the cap of a ``td_samples="auto"`` pass. Past the cap a tie between locations is
#: left to chance. Passes of fixed size against the full pass (8 seeds x 3 draws on California,
#: 6 x 3 on Friedman #1 with 20,000 samples, which is not in the suite): at 2,048 samples the same
#: location in 21 of 24 (MLP 64x4; 23 of 24 at 32x2) and 16 of 18, keeping on average 97 % (99 %)
#: and 99.7 % of the full pass's mu (77 %, 81 % and 97 % at worst); at 4,096, for twice the
#: cost, 21 of 24 (24 of 24) and 16 of 18, keeping 99 % (100 %) and 99.7 % (86 %, 100 %, 97 %). The full pass's own
#: standard error of the best mu is 13-26 % on California.
AUTO_SAMPLES = (1024, 2048)

#: The FLOPs a location-only topological-derivative pass may spend by default (``td_budget``), in
#: epochs of the current network: it leaves a quarter of an epoch to the insertion's evaluations,
#: so that the decision costs at most one epoch (``topogrow bench --sections location_cost``).
LOCATION_BUDGET = 0.75

#: How a strategy that needs only the location estimates mu_l (``td_location``): ``"lanczos"``
#: (budgeted, :func:`~topogrow.core.location.location_derivative`) or ``"exact"`` (the pass ``td`` uses).
LOCATION_METHODS = ("lanczos", "exact")


#: The mixed-precision dtypes of ``autocast``.
AUTOCAST = ("bfloat16", "float16")


def parse_budget(budget: float | str | None) -> float | str | None:
    """A budget as FLOPs (a positive float) or ``"<N> epochs"`` (normalised); one-line errors."""
    if isinstance(budget, str):
        text = budget.strip().lower()
        unit = "epochs" if text.endswith(("epoch", "epochs")) else "flops"
        number = text.removesuffix("s").removesuffix("epoch").strip() if unit == "epochs" else text
        try:
            value = float(number)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"budget {budget!r}: expected a number of FLOPs (e.g. 1e12) or '<N> epochs' with N > 0")
        return f"{value:g} epochs" if unit == "epochs" else value
    if budget is None:
        return None
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not (math.isfinite(budget) and budget > 0):
        raise ValueError(f"budget must be a positive number of FLOPs or '<N> epochs', got {budget!r}")
    return float(budget)


@dataclass(frozen=True)
class GrowthConfig:
    """Everything that decides a growth run; checked on construction.

    Attributes:
        strategy: where/how to grow, a name in :data:`~topogrow.growth.strategies.STRATEGIES`
            (default ``"small-where"``: the best paired record over the paper rows and the transfer
            benchmarks; ``"td"`` is the paper's rule, kept as published).
        max_depth: stop growing at this many residual layers.
        schedule: when a stage ends, a name in :data:`~topogrow.growth.schedules.SCHEDULES`:
            ``"fixed"`` (``epochs_per_stage`` epochs per stage) or ``"plateau"`` (until the
            validation loss stops improving by ``min_delta`` for ``patience`` epochs, at most
            ``epochs_per_stage``).
        epochs_per_stage: epochs between insertions (the cap, with the plateau schedule); short
            stages pay: the final phase trains the grown network to convergence.
        patience: plateau patience in epochs.
        min_delta: relative improvement of the validation loss that counts (plateau schedule
            and ``growth_patience``).
        final_epochs: the most epochs of training after growth stops (a cap: the final phase
            ends when the network has converged, see ``early_stopping_patience``).
        early_stopping: train to the best epoch, not the last: in every stage and in the final
            phase keep the parameters of the epoch with the lowest validation loss, restore them
            at its end, and end it after ``early_stopping_patience`` epochs without a relative
            improvement of ``min_delta``.
        early_stopping_patience: epochs without improvement that end a stage or the final phase;
            ``"auto"`` (default) allows ``(lr_reductions + 1) * (lr_patience + 1)`` of them, as
            many as the plateau schedule needs to halve the learning rate ``lr_reductions`` times
            with nothing gained, whatever the schedule; ``None``: never end early, only restore
            the best epoch.
        rollback: keep an insertion only if the stage after it improves the validation loss on the
            network before it by ``min_delta``; else put that network back (weights and optimiser).
        on_reject: after a rolled-back insertion, ``"stop"`` growing or ``"retry"`` once with the
            next proposal (that location excluded).
        tolerance: stop growing when every leading eigenvalue mu_l <= tolerance (``None``: never
            stop on the eigenvalues).
        growth_patience: stop growing after this many stages without a relative validation
            improvement of ``min_delta``.
        neurons: active neurons of a new layer (top-k blocks); ``None`` takes every block with
            eigenvalue >= ``rel_threshold`` times the largest.
        rel_threshold: relative eigenvalue threshold for choosing neurons (0: every positive block).
        lr: learning rate of the optimiser.
        lr_schedule: how the learning rate moves, a name in
            :data:`~topogrow.growth.lr_schedules.LR_SCHEDULES` (``"plateau"``: times ``lr_factor``
            after ``lr_patience`` epochs without improvement; ``"cosine"``: one cosine decay over
            the planned run, the budget or the epoch caps, after ``warmup_epochs`` of linear
            warm-up; ``"constant"``), or a callable ``optimizer -> LRScheduler`` (stepped once per
            epoch; ``ReduceLROnPlateau`` with the validation loss). Insertions and rollbacks keep
            every group's current rate and the scheduler's state: new layers join at the current rate.
        lr_patience: epochs without a relative improvement of ``min_delta`` before the plateau
            schedule lowers the learning rate.
        lr_factor: what the plateau schedule multiplies the learning rate by.
        lr_reductions: learning-rate reductions with nothing gained after which a phase has
            converged (through ``early_stopping_patience="auto"``).
        warmup_epochs: epochs of linear warm-up of the cosine schedule.
        budget: the compute the run may spend, in FLOPs (as counted in ``history.flops``), or a
            string ``"<N> epochs"`` (N epochs of the initial network on the training and validation
            data); growth stops early enough to leave half of it to train the final network, the
            final phase ends before an epoch would exceed it, and a cosine schedule decays over
            it. ``None``: no budget.
        weight_decay: weight decay of the optimiser.
        optimizer: the optimiser, a name in :data:`~topogrow.training.OPTIMIZERS`
            (``"adam"``, ``"adamw"``, ``"sgd"``) built with ``lr`` and ``weight_decay``, or a
            callable ``params -> torch.optim.Optimizer``; built once, new layers join it as a
            parameter group at the current learning rate (the old parameters keep their state).
        batch_size: mini-batch size for training.
        eval_batch_size: mini-batch size for validation losses (``None``: ``max(batch_size, 1024)``).
        td_batch_size: mini-batch size of the topological-derivative pass (over every sample).
        td_samples: samples the topological-derivative pass reads: ``"auto"`` streams them in a
            random order and stops when the location and direction are settled to ``td_rel_error``
            (:class:`~topogrow.core.sampling.Sampling`: at least 1,024 samples and at most 2,048;
            16 positions per image for convolutions), an integer does the same with that cap,
            ``"all"`` reads every sample and position (the paper's pass). Distributed runs and
            ``block`` runs read all.
        td_rel_error: the relative error of the decision at which an ``"auto"`` pass stops.
        td_location: how strategies that need only the location (``small-where``, ``td-where``)
            estimate mu_l: ``"lanczos"`` (two block products per location from a sample subset
            within ``td_budget``, :func:`~topogrow.core.location.location_derivative`) or
            ``"exact"`` (the pass above, with eigenvectors).
        td_budget: the FLOPs the ``"lanczos"`` location pass may spend, in epochs of the current
            network (``None``: no limit but ``td_samples``'s cap).
        eigen_tol: relative accuracy of the matrix-free eigenvalues (``block`` runs).
        line_search_samples: training samples the line search evaluates (a fixed subset).
        line_search: how epsilon is chosen: ``"model"`` brackets it from the quadratic model and a
            few losses on a probe subset, then confirms it on the line-search set (a few forward
            passes); ``"grid"`` evaluates every ``epsilons`` candidate, both signs, on the
            line-search set (34 passes by default; the paper's results were made with it). Neither
            accepts an increase of the loss (see :mod:`topogrow.growth.line_search`).
        epsilons: line-search candidates (both signs are tried), or the range the model search
            walks in.
        grad_clip: clip the gradients' total norm to this before each step (``None``: no clipping).
        accumulate_batches: add up the gradients of this many batches (each loss divided by it)
            before each optimiser step; an epoch's last, shorter group steps too.
        autocast: mixed precision for the training forward passes: ``"bfloat16"`` (CPU or CUDA) or
            ``"float16"`` (CUDA, with a gradient scaler); ``None``: the parameters' dtype.
            Validation and the topological derivative run in the parameters' dtype.
        monitor: what early stopping, rollback, the stop rules and the plateau schedules watch:
            ``"val_loss"``, ``"train_loss"`` or ``"val_<name>"`` of a metric given to the
            :class:`~topogrow.growth.grower.Grower` (e.g. ``"val_accuracy"``).
        mode: ``"min"`` (lower is better) or ``"max"`` for ``monitor``.
        lr_interval: when a callable ``lr_schedule``'s scheduler steps: ``"epoch"`` or ``"step"``
            (after every optimiser step, e.g. ``OneCycleLR``); the named schedules step per epoch.
        seed: seeds initialisation, shuffling and random strategies.
        device: ``"cpu"``, ``"cuda"``, ...; ``None`` keeps the model on its own device.
        block: grow by this registered block (:data:`topogrow.nn.blocks.BLOCKS`, e.g.
            ``"gelu-mlp"``) with the matrix-free topological derivative; ``None`` grows by the
            model's closed-form layer. The model needs ``insert_block``. The top
            ``max(2, neurons)`` eigenpairs are computed per location.
    """

    strategy: str = "small-where"
    max_depth: int = 8
    schedule: str = "fixed"
    epochs_per_stage: int = 5
    patience: int = 3
    min_delta: float = 1e-3
    final_epochs: int = 500
    early_stopping: bool = True
    early_stopping_patience: int | str | None = "auto"
    rollback: bool = True
    on_reject: str = "stop"
    tolerance: float | None = 0.0
    growth_patience: int = 2
    neurons: int | None = None
    rel_threshold: float = 0.1
    lr: float = 1e-3
    lr_schedule: str | Callable[..., Any] = "plateau"
    lr_patience: int = 5
    lr_factor: float = 0.5
    lr_reductions: int = 3
    warmup_epochs: int = 0
    budget: float | str | None = None
    weight_decay: float = 0.0
    optimizer: str | Callable[..., torch.optim.Optimizer] = "adam"
    batch_size: int = 128
    eval_batch_size: int | None = None
    td_batch_size: int = 1024
    td_samples: int | str = "auto"
    td_rel_error: float = 0.1
    td_location: str = "lanczos"
    td_budget: float | None = LOCATION_BUDGET
    eigen_tol: float = 1e-3
    line_search_samples: int = 8192
    line_search: str = "model"
    epsilons: tuple[float, ...] = field(default=DEFAULT_EPSILONS)
    grad_clip: float | None = None
    accumulate_batches: int = 1
    autocast: str | None = None
    monitor: str = "val_loss"
    mode: str = "min"
    lr_interval: str = "epoch"
    seed: int = 0
    device: str | None = None
    block: str | None = None

    def __post_init__(self) -> None:
        STRATEGIES.check(self.strategy)
        SCHEDULES.check(self.schedule)
        if self.block is not None:
            BLOCKS.check(self.block)
        if not callable(self.optimizer):
            OPTIMIZERS.check(self.optimizer)
        for name in (
            "max_depth",
            "epochs_per_stage",
            "patience",
            "batch_size",
            "td_batch_size",
            "line_search_samples",
            "growth_patience",
            "lr_patience",
            "accumulate_batches",
        ):
            check_int(name, getattr(self, name), minimum=1)
        check_int("final_epochs", self.final_epochs, minimum=0)
        check_int("lr_reductions", self.lr_reductions, minimum=0)
        check_int("warmup_epochs", self.warmup_epochs, minimum=0)
        if not callable(self.lr_schedule):
            LR_SCHEDULES.check(self.lr_schedule)
        check_real("lr_factor", self.lr_factor, positive=True)
        if not self.lr_factor < 1:
            raise ValueError(
                f"lr_factor multiplies the learning rate on a plateau and must be < 1, got {self.lr_factor!r}"
            )
        patience = self.early_stopping_patience
        if isinstance(patience, str) and patience.isdigit():  # from the command line
            object.__setattr__(self, "early_stopping_patience", patience := int(patience))
        if patience != "auto":
            check_optional_int("early_stopping_patience", patience, minimum=1)
        object.__setattr__(self, "budget", parse_budget(self.budget))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**62:
            raise ValueError(f"seed must be an integer in 0..2**62 - 1, got {self.seed!r}")
        check_optional_int("neurons", self.neurons, minimum=1)
        check_optional_int("eval_batch_size", self.eval_batch_size, minimum=1)
        check_bool("early_stopping", self.early_stopping)
        check_bool("rollback", self.rollback)
        if self.on_reject not in ("stop", "retry"):
            raise ValueError(f"on_reject must be 'stop' or 'retry', got {self.on_reject!r}")
        if self.td_location not in LOCATION_METHODS:
            raise unknown_name_error("td_location", self.td_location, LOCATION_METHODS)
        if self.td_budget is not None:
            check_real("td_budget", self.td_budget, positive=True)
        if self.line_search not in LINE_SEARCHES:
            raise unknown_name_error("line search", self.line_search, LINE_SEARCHES)
        if isinstance(self.td_samples, str) and self.td_samples.isdigit():  # from the command line
            object.__setattr__(self, "td_samples", int(self.td_samples))
        samples = self.td_samples
        if samples not in ("all", "auto") and (type(samples) is not int or samples < 1):
            raise ValueError(f"td_samples must be 'auto', 'all' or a number of samples >= 1, got {samples!r}")
        for name in ("lr", "min_delta", "eigen_tol", "td_rel_error"):
            check_real(name, getattr(self, name), positive=True)
        check_real("weight_decay", self.weight_decay, nonnegative=True)
        if self.tolerance is not None:
            check_real("tolerance", self.tolerance)
        check_real("rel_threshold", self.rel_threshold, nonnegative=True)
        if not self.min_delta < 1:
            raise ValueError(f"min_delta is a relative improvement and must be < 1, got {self.min_delta!r}")
        if not self.rel_threshold <= 1:
            raise ValueError(
                f"rel_threshold is relative to the largest eigenvalue and must be <= 1, got {self.rel_threshold!r}"
            )
        if isinstance(self.epsilons, (str, bytes)) or not isinstance(self.epsilons, (list, tuple)) or not self.epsilons:
            raise ValueError(f"epsilons must be a non-empty list of positive numbers, got {self.epsilons!r}")
        for index, epsilon in enumerate(self.epsilons):
            check_real(f"epsilons[{index}]", epsilon)
            if not epsilon > 0:
                raise ValueError(f"epsilons must be a non-empty list of positive numbers, got {self.epsilons!r}")
        object.__setattr__(self, "epsilons", tuple(float(e) for e in self.epsilons))
        if self.grad_clip is not None:
            check_real("grad_clip", self.grad_clip, positive=True)
        if self.autocast is not None and self.autocast not in AUTOCAST:
            raise unknown_name_error("autocast", self.autocast, AUTOCAST)
        if self.mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {self.mode!r}")
        if not isinstance(self.monitor, str) or not (
            self.monitor in ("val_loss", "train_loss") or self.monitor.startswith("val_")
        ):
            raise ValueError(f"monitor must be 'val_loss', 'train_loss' or 'val_<metric name>', got {self.monitor!r}")
        if self.lr_interval not in ("epoch", "step"):
            raise ValueError(f"lr_interval must be 'epoch' or 'step', got {self.lr_interval!r}")
        if self.lr_interval == "step" and not callable(self.lr_schedule):
            raise ValueError(
                f"lr_interval='step' steps a scheduler of your own (lr_schedule=callable); the named schedule "
                f"{self.lr_schedule!r} steps per epoch"
            )
        if self.device is not None:
            if isinstance(self.device, torch.device):
                object.__setattr__(self, "device", str(self.device))
            if not isinstance(self.device, str):
                raise TypeError(f"device must be None or a name such as 'cpu' or 'cuda:0', got {self.device!r}")
            try:
                torch.device(self.device)
            except RuntimeError:
                raise ValueError(f"unknown device {self.device!r}; expected e.g. 'cpu', 'cuda' or 'cuda:1'") from None

    @property
    def sampling(self) -> Sampling | None:
        """The rule of the topological-derivative pass (``None``: every sample, ``td_samples="all"``)."""
        if self.td_samples == "all":
            return None
        cap = AUTO_SAMPLES[1] if self.td_samples == "auto" else self.td_samples
        return Sampling(rel_error=self.td_rel_error, min_samples=min(AUTO_SAMPLES[0], cap), max_samples=cap)

    def improves(self, value: float, reference: float, min_delta: float | None = None) -> bool:
        """Whether the monitored ``value`` beats ``reference`` by a relative ``min_delta`` (default:
        the config's) in ``mode``; ``reference`` may be :attr:`worst`."""
        delta = self.min_delta if min_delta is None else min_delta
        if self.mode == "max":
            return value > reference + delta * abs(reference) if math.isfinite(reference) else value > reference
        return value < reference * (1 - delta)

    @property
    def worst(self) -> float:
        """The value every monitored value improves on: ``inf`` (mode ``"min"``) or ``-inf``."""
        return math.inf if self.mode == "min" else -math.inf

    @property
    def stop_patience(self) -> int | None:
        """Epochs without improvement that end a phase (``early_stopping_patience``, resolved)."""
        if self.early_stopping_patience == "auto":
            return (self.lr_reductions + 1) * (self.lr_patience + 1)
        return self.early_stopping_patience

    @property
    def validation_batch_size(self) -> int:
        """The mini-batch size of validation losses (``eval_batch_size`` or ``max(batch_size, 1024)``)."""
        return self.eval_batch_size if self.eval_batch_size is not None else max(self.batch_size, 1024)

    def replace(self, **changes: Any) -> GrowthConfig:
        """A copy with some fields changed (validated again)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise unknown_name_error("config key", sorted(unknown)[0], [f.name for f in dataclasses.fields(self)])
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-able dict (a callable optimiser by its qualified name)."""
        values = dataclasses.asdict(self)
        for name in ("optimizer", "lr_schedule"):
            value = getattr(self, name)
            if callable(value):
                values[name] = f"<callable {getattr(value, '__qualname__', type(value).__name__)}>"
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> GrowthConfig:
        """Build from a dict, rejecting unknown keys with a "did you mean"."""
        if not isinstance(values, dict):
            raise TypeError(f"a growth config must be a JSON object / dict, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        for key in values:
            if key not in known:
                raise unknown_name_error("config key", key, known)
        return cls(**values)

    @classmethod
    def from_saved(cls, values: dict[str, Any]) -> GrowthConfig:
        """:meth:`from_dict` for a config a run saved (checkpoint, ``compare.json``): one saved before
        ``line_search``, ``td_samples`` and ``lr_schedule`` existed ran the grid, read every sample
        and kept the learning rate constant, and so it resumes or reads."""
        old = {"line_search": "grid", "td_samples": "all", "lr_schedule": "constant"}
        return cls.from_dict({**old, **values} if isinstance(values, dict) else values)

    @classmethod
    def from_json(cls, path: str | Path) -> GrowthConfig:
        """Read a config from a JSON file (an object of field names); errors name the file."""
        path = Path(path)
        try:
            values = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such config file") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{path}: not a readable JSON file ({error})") from None
        try:
            return cls.from_dict(values)
        except (TypeError, ValueError) as error:
            raise type(error)(f"{path}: {error}") from None
