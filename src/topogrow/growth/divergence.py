"""Divergence: a phase whose losses leave the range training reached, stopped and reported.

A phase (a growth stage or the final phase) diverges when a training or validation loss is not
finite, or is more than :data:`DIVERGENCE_FACTOR` times the lowest validation loss of the phase
so far (the network it started from included: an insertion that made the loss worse is judged by
rollback, not here). The growth loop then stops the run, puts back the best network of the phase (the
early-stopping choice, or the network the phase started from) and says so in one line.
"""

from __future__ import annotations

import math

import torch

from topogrow.growth.callbacks import EarlyStopping

__all__ = ["DIVERGENCE_FACTOR", "DivergenceGuard"]

#: How far above the lowest validation loss of the phase a loss must be to count as divergence.
#: Over the 971 runs of results/ (every paper row, transfer benchmark and demo, all arms and seeds)
#: no epoch's training or validation loss exceeded 2.4 times the lowest validation loss of the run
#: before it (and the lowest of a phase is never below the lowest of the run).
DIVERGENCE_FACTOR = 100.0


class DivergenceGuard:
    """The lowest validation loss of the phase so far, and the network the phase started from (kept
    only when no early stopping keeps a better one)."""

    def __init__(self) -> None:
        self.lowest = math.inf
        self.start_state: dict[str, torch.Tensor] | None = None

    def start_phase(self, model: torch.nn.Module, loss: float | None, keep: bool) -> None:
        """A phase starts from ``model``, whose validation loss is ``loss``; keep a copy of it if asked."""
        self.lowest = loss if loss is not None and math.isfinite(loss) else math.inf
        self.start_state = {k: v.detach().clone() for k, v in model.state_dict().items()} if keep else None

    def check(self, train_loss: float, val_loss: float) -> str | None:
        """Why this epoch diverged (``None`` if it did not); a good epoch lowers the reference."""
        for name, value in (("training", train_loss), ("validation", val_loss)):
            if not math.isfinite(value):
                return f"the {name} loss became {value}"
        for name, value in (("training", train_loss), ("validation", val_loss)):
            if value > DIVERGENCE_FACTOR * self.lowest:
                return (
                    f"the {name} loss {value:.4g} is more than {DIVERGENCE_FACTOR:g} times the lowest "
                    f"validation loss of the phase ({self.lowest:.4g})"
                )
        self.lowest = min(self.lowest, val_loss)
        return None

    def restore_best(self, model: torch.nn.Module, stopping: EarlyStopping | None, epochs: int) -> str:
        """Put back the phase's best network: early stopping's choice (its best epoch, or the network
        the phase started from), else the network the phase started from; say which. ``epochs``:
        the epochs recorded so far."""
        if stopping is not None and stopping.best_state is not None:
            model.load_state_dict(stopping.best_state)
            improved = stopping.best_index > epochs - stopping.epochs
            stopping.epochs = 0  # nothing more to restore at the end of the fit
            which = f"its best epoch ({stopping.best_index})" if improved else "the network it started from"
            return f"the phase's best network, {which}, was kept"
        if self.start_state is not None:
            model.load_state_dict(self.start_state)
            return "the network the phase started from was kept"
        return "no earlier network was kept"
