"""Divergence: a phase whose losses leave the range training reached, stopped and reported.

A phase diverges when a training or validation loss is not finite, or is more than
:data:`DIVERGENCE_FACTOR` times the lowest validation loss of the run so far (its initial network
included). The growth loop then stops the run, puts back the best network of the phase (the
early-stopping choice, or the network the phase started from) and says so in one line.
"""

from __future__ import annotations

import math

import torch

__all__ = ["DIVERGENCE_FACTOR", "DivergenceGuard"]

#: How far above the lowest validation loss so far a loss must be to count as divergence. Over
#: the 971 runs of results/ (every paper row, transfer benchmark and demo, all arms and seeds) no
#: epoch's training or validation loss exceeded 2.4 times the lowest validation loss before it.
DIVERGENCE_FACTOR = 100.0


class DivergenceGuard:
    """The lowest validation loss so far, and the network each phase started from (kept only when
    no early stopping keeps a better one)."""

    def __init__(self) -> None:
        self.lowest = math.inf
        self.start_state: dict[str, torch.Tensor] | None = None

    def start(self, loss: float | None, history_losses: list[float]) -> None:
        """The reference at the start of a fit: the initial (or resumed) network's loss and every
        validation loss recorded so far."""
        finite = [value for value in [loss, *history_losses] if value is not None and math.isfinite(value)]
        self.lowest = min(finite, default=math.inf)

    def start_phase(self, model: torch.nn.Module, keep: bool) -> None:
        """A phase (stage or final phase) starts: keep a copy of the network if asked."""
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
                    f"validation loss so far ({self.lowest:.4g})"
                )
        self.lowest = min(self.lowest, val_loss)
        return None
