"""What a growth run records: a curve per epoch and a record per stage."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class EpochRecord:
    """Losses after one epoch of training, and the anytime curve: the run's cumulative ``flops``
    (as :class:`~topogrow.growth.compute.ComputeCounter` counts them) and ``wall_time`` (seconds)
    at the epoch's end, the learning rate ``lr`` of the first parameter group it trained with, and
    the ``metrics`` given to the grower (``{"val_<name>": value}``; ``None`` without any)."""

    epoch: int
    stage: int
    depth: int
    train_loss: float
    val_loss: float
    flops: float | None = None
    wall_time: float | None = None
    lr: float | None = None
    metrics: dict[str, float] | None = None


@dataclass
class StageRecord:
    """The end of a training stage and the insertion (if any) that followed it.

    ``eigenvalues`` are the leading mu_l at every location (when the strategy
    computed them); ``predicted_change`` is ``-(eps^2/2) phi^T Q phi`` and
    ``actual_change`` the measured change of the training loss (line-search subset).
    ``note`` says why an insertion was skipped (a numerical fault) or rolled back, when one was;
    ``td_samples`` is the number of samples the topological derivative read and ``td_error`` its
    estimated relative standard error of the chosen location's mu (a sampled pass only).
    ``metrics`` are those of the stage's last epoch. ``accepted`` is ``False`` for an insertion
    rolled back after its stage (see :class:`~topogrow.growth.callbacks.Rollback`), ``True`` for
    one kept after it, ``None`` when not judged.
    """

    stage: int
    epoch: int
    train_loss: float
    val_loss: float
    depth: int
    n_parameters: int
    wall_time: float
    eigenvalues: list[float] | None = None
    location: int | None = None
    epsilon: float | None = None
    predicted_change: float | None = None
    actual_change: float | None = None
    note: str | None = None
    accepted: bool | None = None
    td_samples: int | None = None
    td_error: float | None = None
    metrics: dict[str, float] | None = None


def _records(cls: type, rows: Any, where: str) -> list:
    """Dataclass records from a list of dicts, with one-line errors naming the bad entry."""
    if not isinstance(rows, list):
        raise ValueError(f"{where}: expected a list, got {type(rows).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    records = []
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"{where}[{index}]: expected an object, got {type(row).__name__}")
        unknown, missing = set(row) - known, {f.name for f in dataclasses.fields(cls) if f.name not in row}
        missing -= {f.name for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
        if unknown or missing:
            problem = f"unknown keys {sorted(unknown)}" if unknown else f"missing keys {sorted(missing)}"
            raise ValueError(f"{where}[{index}]: {problem}")
        records.append(cls(**row))
    return records


@dataclass
class GrowthHistory:
    """Per-epoch curve, per-stage records, why growth stopped, the FLOPs by part, the
    budget's plan and spend (``budget``: empty without a budget), and ``diverged``: the one-line
    report of a run that stopped because training diverged (``None`` otherwise)."""

    strategy: str
    epochs: list[EpochRecord] = field(default_factory=list)
    stages: list[StageRecord] = field(default_factory=list)
    stop_reason: str = ""
    wall_time: float = 0.0
    flops: dict[str, float] = field(default_factory=dict)
    budget: dict[str, Any] = field(default_factory=dict)
    diverged: str | None = None

    @property
    def insertions(self) -> list[StageRecord]:
        """The insertions the network kept (not rolled back)."""
        return [s for s in self.stages if s.location is not None and s.accepted is not False]

    @property
    def rejected(self) -> list[StageRecord]:
        """The insertions rolled back because validation did not improve."""
        return [s for s in self.stages if s.location is not None and s.accepted is False]

    @property
    def total_epochs(self) -> int:
        """The number of epochs trained in all (stages and final phase)."""
        return len(self.epochs)

    def to_dict(self) -> dict[str, Any]:
        """The history as plain dicts and lists (JSON-able; :meth:`from_dict` reads it back)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> GrowthHistory:
        """The inverse of :meth:`to_dict` (e.g. from a checkpoint's JSON), checked."""
        if not isinstance(values, dict) or not isinstance(values.get("strategy"), str):
            raise ValueError("history: expected an object with a 'strategy' name")
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"history: unknown keys {sorted(unknown)}")
        return cls(
            strategy=values["strategy"],
            epochs=_records(EpochRecord, values.get("epochs", []), "history.epochs"),
            stages=_records(StageRecord, values.get("stages", []), "history.stages"),
            stop_reason=str(values.get("stop_reason", "")),
            wall_time=float(values.get("wall_time", 0.0)),
            flops={str(k): float(v) for k, v in (values.get("flops") or {}).items()},
            budget=dict(values.get("budget") or {}),
            diverged=None if values.get("diverged") is None else str(values["diverged"]),
        )

    def summary(self) -> str:
        """A readable table of the stages."""
        lines = [
            f"{'stage':>5} {'epoch':>5} {'depth':>5} {'train':>9} {'val':>9} {'where':>5} "
            f"{'eps':>8} {'predicted':>10} {'actual':>10}"
        ]
        for s in self.stages:
            where = "-" if s.location is None else str(s.location) + ("x" if s.accepted is False else "")
            eps = "-" if s.epsilon is None else f"{s.epsilon:.3g}"
            pred = "-" if s.predicted_change is None else f"{s.predicted_change:.3e}"
            act = "-" if s.actual_change is None else f"{s.actual_change:.3e}"
            lines.append(
                f"{s.stage:>5} {s.epoch:>5} {s.depth:>5} {s.train_loss:>9.4f} {s.val_loss:>9.4f} "
                f"{where:>5} {eps:>8} {pred:>10} {act:>10}"
            )
            if s.note:
                lines.append(f"{'':>5} note: {s.note}")
        lines.append(f"stopped: {self.stop_reason}")
        if self.diverged:
            lines.append(f"diverged: {self.diverged}")
        return "\n".join(lines)
