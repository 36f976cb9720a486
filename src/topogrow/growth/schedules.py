"""When to grow: a stage ends after a fixed number of epochs or on a validation plateau."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class FixedEpochs:
    """End a stage after ``epochs`` epochs."""

    epochs: int

    def stage_done(self, val_losses: Sequence[float]) -> bool:
        return len(val_losses) >= self.epochs


@dataclass(frozen=True)
class Plateau:
    """End a stage when the validation loss has not improved by a relative ``min_delta``
    for ``patience`` epochs, or after ``max_epochs`` epochs."""

    patience: int
    min_delta: float
    max_epochs: int

    def stage_done(self, val_losses: Sequence[float]) -> bool:
        if len(val_losses) >= self.max_epochs:
            return True
        if len(val_losses) <= self.patience:
            return False
        best_before = min(val_losses[: -self.patience])
        recent = min(val_losses[-self.patience :])
        return recent > best_before * (1 - self.min_delta)
