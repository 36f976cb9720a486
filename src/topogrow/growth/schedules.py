"""When to grow: a stage ends after a fixed number of epochs, on a validation plateau, or
after a given number of epochs per stage.

A schedule answers :meth:`Schedule.stage_done` from the validation losses of the stage's
epochs so far; the named ones are in :data:`SCHEDULES` and built from a ``GrowthConfig``
(``GrowthConfig(schedule="plateau")``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from topogrow.growth.registries import SCHEDULES, register_schedule

__all__ = ["SCHEDULES", "FixedEpochs", "Plateau", "Schedule", "StageEpochs", "make_schedule", "register_schedule"]


class Schedule:
    """Base class: decides when a training stage ends."""

    def stage_done(self, val_losses: Sequence[float], stage: int = 0) -> bool:
        """Whether stage ``stage`` ends after epochs with these validation losses."""
        raise NotImplementedError

    @classmethod
    def from_config(cls, config) -> Schedule:
        """The schedule a ``GrowthConfig`` describes."""
        raise NotImplementedError


@register_schedule("fixed", help="a fixed number of epochs per stage (epochs_per_stage)")
@dataclass(frozen=True)
class FixedEpochs(Schedule):
    """End a stage after ``epochs`` epochs."""

    epochs: int

    def stage_done(self, val_losses: Sequence[float], stage: int = 0) -> bool:
        return len(val_losses) >= self.epochs

    @classmethod
    def from_config(cls, config) -> FixedEpochs:
        return cls(config.epochs_per_stage)


@register_schedule("plateau", help="until the validation loss stops improving (patience, min_delta)")
@dataclass(frozen=True)
class Plateau(Schedule):
    """End a stage when the validation loss has not improved by a relative ``min_delta``
    for ``patience`` epochs, or after ``max_epochs`` epochs."""

    patience: int
    min_delta: float
    max_epochs: int

    def stage_done(self, val_losses: Sequence[float], stage: int = 0) -> bool:
        if len(val_losses) >= self.max_epochs:
            return True
        if len(val_losses) <= self.patience:
            return False
        best_before = min(val_losses[: -self.patience])
        recent = min(val_losses[-self.patience :])
        return recent > best_before * (1 - self.min_delta)

    @classmethod
    def from_config(cls, config) -> Plateau:
        return cls(config.patience, config.min_delta, config.epochs_per_stage)


@dataclass(frozen=True)
class StageEpochs(Schedule):
    """Stage ``s`` lasts ``epochs[s]`` epochs (0: the insertion comes before any training);
    stages beyond the list last as long as the last entry."""

    epochs: tuple[int, ...]

    def stage_done(self, val_losses: Sequence[float], stage: int = 0) -> bool:
        return len(val_losses) >= self.epochs[min(stage, len(self.epochs) - 1)]


def make_schedule(config) -> Schedule:
    """The registered schedule ``config.schedule``, built from ``config``."""
    return SCHEDULES[config.schedule].from_config(config)
