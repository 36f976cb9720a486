"""Learning-rate schedules of a growth run, by name (:data:`LR_SCHEDULES`): ``"constant"``,
``"cosine"`` and ``"plateau"``, each a torch ``LRScheduler`` stepped once per epoch.

An insertion adds the new layer's parameters to the live optimiser and scheduler
(:func:`~topogrow.training.live_optimizer.add_parameters`), so no schedule restarts; a
``"cosine"`` schedule decays once over the planned run (:func:`planned_epochs`, or the budget).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau

from topogrow.growth.registries import LR_SCHEDULES, register_lr_schedule

__all__ = ["LR_SCHEDULES", "CosineDecay", "make_lr_scheduler", "planned_epochs", "step_lr_scheduler"]


@dataclass
class CosineDecay:
    """The factor of the base learning rate after ``epoch`` epochs: linear warm-up over
    ``warmup`` epochs, then half a cosine from 1 to 0 at ``horizon`` epochs (0 after it)."""

    horizon: int
    warmup: int = 0

    def __call__(self, epoch: int) -> float:
        if epoch < self.warmup:
            return (epoch + 1) / (self.warmup + 1)
        span = max(self.horizon - self.warmup, 1)
        progress = min((epoch - self.warmup) / span, 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * progress))


def planned_epochs(config, initial_depth: int) -> int:
    """The epochs a run plans without a budget: a stage per depth from ``initial_depth`` to
    ``max_depth`` (the last ends growth) and the final epochs (both caps)."""
    stages = max(config.max_depth - initial_depth + 1, 1)
    return stages * config.epochs_per_stage + config.final_epochs


@register_lr_schedule("constant", help="the learning rate stays as set")
def _constant(optimizer: torch.optim.Optimizer, config, horizon: int) -> None:
    return None


@register_lr_schedule(
    "cosine", help="one cosine decay over the planned run (budget or epoch caps), warmup_epochs first"
)
def _cosine(optimizer: torch.optim.Optimizer, config, horizon: int) -> LambdaLR:
    return LambdaLR(optimizer, CosineDecay(horizon, config.warmup_epochs))


@register_lr_schedule("plateau", help="times lr_factor after lr_patience epochs without improvement")
def _plateau(optimizer: torch.optim.Optimizer, config, horizon: int) -> ReduceLROnPlateau:
    return ReduceLROnPlateau(
        optimizer,
        mode=config.mode,
        factor=config.lr_factor,
        patience=config.lr_patience,
        threshold=config.min_delta,
        threshold_mode="rel",
    )


def make_lr_scheduler(optimizer: torch.optim.Optimizer, config, horizon: int) -> Any:
    """The scheduler ``config.lr_schedule`` names (or builds, a callable) over ``optimizer``;
    ``None`` for a constant rate. ``horizon``: the epochs a cosine decays over."""
    if callable(config.lr_schedule):
        scheduler = config.lr_schedule(optimizer)
        if scheduler is not None and not callable(getattr(scheduler, "step", None)):
            raise TypeError(
                f"lr_schedule must return a torch learning-rate scheduler (with step()), got {type(scheduler).__name__}"
            )
        return scheduler
    return LR_SCHEDULES[config.lr_schedule](optimizer, config, max(int(horizon), 1))


def step_lr_scheduler(scheduler: Any, val_loss: float) -> None:
    """One epoch's step: ``ReduceLROnPlateau`` with the monitored value (the validation loss by
    default), any other without."""
    if scheduler is None:
        return
    if isinstance(scheduler, ReduceLROnPlateau):
        scheduler.step(val_loss)
    else:
        scheduler.step()
