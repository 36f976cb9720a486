"""Validated configuration of a growth run."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from topogrow._validation import unknown_name_error
from topogrow.growth.line_search import DEFAULT_EPSILONS
from topogrow.growth.strategies import STRATEGIES
from topogrow.nn.blocks import BLOCKS

SCHEDULES = ("fixed", "plateau")


def _real(name: str, value: Any) -> None:
    """Raise unless ``value`` is a finite real number (an int or a float, not a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")


@dataclass(frozen=True)
class GrowthConfig:
    """Everything that decides a growth run; checked on construction.

    Attributes:
        strategy: where/how to grow, a name in :data:`~topogrow.growth.strategies.STRATEGIES`.
        max_depth: stop growing at this many residual layers.
        schedule: ``"fixed"`` (``epochs_per_stage`` epochs per stage) or ``"plateau"``
            (until the validation loss stops improving by ``min_delta`` for ``patience``
            epochs, at most ``epochs_per_stage``).
        epochs_per_stage: epochs between insertions (the cap with ``schedule="plateau"``).
        patience: epochs without improvement that end a ``"plateau"`` stage.
        min_delta: the relative validation improvement that counts as one.
        final_epochs: epochs of training after growth stops.
        tolerance: stop growing when every leading eigenvalue mu_l <= tolerance.
        growth_patience: stop growing after this many stages without a relative
            validation improvement of ``min_delta``.
        neurons: active neurons of a new layer (top-k blocks); ``None`` takes every
            block with eigenvalue >= ``rel_threshold`` times the largest.
        rel_threshold: relative eigenvalue threshold for choosing neurons (see ``neurons``).
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        batch_size: training mini-batch size.
        td_batch_size: mini-batch size of the streamed topological-derivative pass.
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
        for name, known in (("strategy", STRATEGIES), ("schedule", SCHEDULES), ("block", BLOCKS)):
            value = getattr(self, name)
            if name == "block" and value is None:
                continue
            if not isinstance(value, str):
                raise TypeError(f"{name} must be a name (a string), got {type(value).__name__} {value!r}")
            if value not in known:
                raise unknown_name_error(name, value, known)
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
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**62:
            raise ValueError(f"seed must be an integer in 0..2**62 - 1, got {self.seed!r}")
        if self.neurons is not None and (
            isinstance(self.neurons, bool) or not isinstance(self.neurons, int) or self.neurons < 1
        ):
            raise ValueError(f"neurons must be None or an integer >= 1, got {self.neurons!r}")
        for name in ("lr", "min_delta", "rel_threshold", "weight_decay", "tolerance"):
            _real(name, getattr(self, name))
        for name in ("lr", "min_delta", "rel_threshold"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not self.min_delta < 1:
            raise ValueError(f"min_delta is a relative improvement and must be < 1, got {self.min_delta!r}")
        if not self.rel_threshold <= 1:
            raise ValueError(
                f"rel_threshold is relative to the largest eigenvalue and must be <= 1, got {self.rel_threshold!r}"
            )
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if isinstance(self.epsilons, (str, bytes)) or not isinstance(self.epsilons, (list, tuple)) or not self.epsilons:
            raise ValueError(f"epsilons must be a non-empty list of positive numbers, got {self.epsilons!r}")
        for index, epsilon in enumerate(self.epsilons):
            _real(f"epsilons[{index}]", epsilon)
            if not epsilon > 0:
                raise ValueError(f"epsilons must be a non-empty list of positive numbers, got {self.epsilons!r}")
        object.__setattr__(self, "epsilons", tuple(float(e) for e in self.epsilons))
        if self.device is not None:
            if isinstance(self.device, torch.device):
                object.__setattr__(self, "device", str(self.device))
            if not isinstance(self.device, str):
                raise TypeError(f"device must be None or a name such as 'cpu' or 'cuda:0', got {self.device!r}")
            try:
                torch.device(self.device)
            except RuntimeError:
                raise ValueError(f"unknown device {self.device!r}; expected e.g. 'cpu', 'cuda' or 'cuda:1'") from None

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
        if not isinstance(values, dict):
            raise TypeError(f"a growth config must be a JSON object / dict, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        for key in values:
            if key not in known:
                raise unknown_name_error("config key", key, known)
        return cls(**values)

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
