"""Where a growth run is, as its checkpoints keep it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Progress"]


@dataclass
class Progress:
    """Where a run is, as a checkpoint keeps it: the phase (``"grow"``, ``"final"``,
    ``"done"``), the stage, the validation losses of the stage's epochs so far, consecutive
    skipped insertions, final epochs done, the wall time spent, and whether a callback ended
    the stage (or the final phase) early."""

    phase: str = "grow"
    stage: int = 0
    curve: list[float] = field(default_factory=list)
    faults: int = 0
    final_done: int = 0
    elapsed: float = 0.0
    stage_over: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Progress:
        values = dict(values)
        values["curve"] = [float(v) for v in values.get("curve", [])]
        return cls(**{k: values[k] for k in cls.__dataclass_fields__ if k in values})
