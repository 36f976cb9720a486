"""Validated configuration of a growth run."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from topogrow._validation import unknown_name_error
from topogrow.growth.line_search import DEFAULT_EPSILONS
from topogrow.growth.strategies import STRATEGIES
from topogrow.nn.blocks import BLOCKS

SCHEDULES = ("fixed", "plateau")


@dataclass(frozen=True)
class GrowthConfig:
    """Everything that decides a growth run; checked on construction.

    Attributes:
        strategy: where/how to grow, a name in :data:`~topogrow.growth.strategies.STRATEGIES`.
        max_depth: stop growing at this many residual layers.
        schedule: ``"fixed"`` (``epochs_per_stage`` epochs per stage) or ``"plateau"``
            (until the validation loss stops improving by ``min_delta`` for ``patience``
            epochs, at most ``epochs_per_stage``).
        final_epochs: epochs of training after growth stops.
        tolerance: stop growing when every leading eigenvalue mu_l <= tolerance.
        growth_patience: stop growing after this many stages without a relative
            validation improvement of ``min_delta``.
        neurons: active neurons of a new layer (top-k blocks); ``None`` takes every
            block with eigenvalue >= ``rel_threshold`` times the largest.
        epsilons: line-search candidates (both signs are tried).
        line_search_samples: training samples the line search evaluates (a fixed subset).
        seed: seeds initialisation, shuffling and random strategies.
        device: ``"cpu"``, ``"cuda"``, ...; ``None`` picks CUDA when available.
        block: grow by this registered block (:data:`topogrow.nn.blocks.BLOCKS`, e.g.
            ``"gelu-mlp"``) with the matrix-free topological derivative; ``None`` grows
            by the model's closed-form layer. The model needs ``insert_block``. The
            top ``max(4, neurons)`` eigenpairs are computed per location.
    """

    strategy: str = "td"
    max_depth: int = 8
    schedule: str = "fixed"
    epochs_per_stage: int = 10
    patience: int = 3
    min_delta: float = 1e-3
    final_epochs: int = 10
    tolerance: float = 0.0
    growth_patience: int = 2
    neurons: int | None = None
    rel_threshold: float = 0.1
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 128
    td_batch_size: int = 1024
    line_search_samples: int = 8192
    epsilons: tuple[float, ...] = field(default=DEFAULT_EPSILONS)
    seed: int = 0
    device: str | None = None
    block: str | None = None

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise unknown_name_error("strategy", self.strategy, STRATEGIES)
        if self.schedule not in SCHEDULES:
            raise unknown_name_error("schedule", self.schedule, SCHEDULES)
        if self.block is not None and self.block not in BLOCKS:
            raise unknown_name_error("block", self.block, BLOCKS)
        for name in (
            "max_depth",
            "epochs_per_stage",
            "patience",
            "batch_size",
            "td_batch_size",
            "line_search_samples",
            "growth_patience",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if isinstance(self.final_epochs, bool) or not isinstance(self.final_epochs, int) or self.final_epochs < 0:
            raise ValueError(f"final_epochs must be an integer >= 0, got {self.final_epochs!r}")
        if self.neurons is not None and (
            isinstance(self.neurons, bool) or not isinstance(self.neurons, int) or self.neurons < 1
        ):
            raise ValueError(f"neurons must be None or an integer >= 1, got {self.neurons!r}")
        for name in ("lr", "min_delta", "rel_threshold"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if not self.epsilons or any(not e > 0 for e in self.epsilons):
            raise ValueError(f"epsilons must be a non-empty list of positive numbers, got {self.epsilons!r}")
        object.__setattr__(self, "epsilons", tuple(float(e) for e in self.epsilons))

    def replace(self, **changes: Any) -> GrowthConfig:
        """A copy with some fields changed (validated again)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise unknown_name_error("config key", sorted(unknown)[0], [f.name for f in dataclasses.fields(self)])
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> GrowthConfig:
        """Build from a dict, rejecting unknown keys with a "did you mean"."""
        known = {f.name for f in dataclasses.fields(cls)}
        for key in values:
            if key not in known:
                raise unknown_name_error("config key", key, known)
        return cls(**values)
