"""A compute budget for a growth run (``GrowthConfig(budget=...)``), planned in FLOPs as
:class:`~topogrow.growth.compute.ComputeCounter` counts them.

The plan: growth may spend at most :data:`GROWTH_SHARE` of the budget, and stops inserting
when one more decision and one more stage of the deeper network would pass that line, so that
what remains trains the final network; the final phase ends before an epoch would exceed the
budget; a cosine schedule decays over what remains. The run's total stays within the budget
plus one epoch (the decision costs are estimated from the last one, see :class:`Budget`).
"""

from __future__ import annotations

from typing import Any

from topogrow.growth.callbacks import Callback
from topogrow.growth.compute import ComputeCounter
from topogrow.growth.lr_schedules import CosineDecay

__all__ = ["GROWTH_SHARE", "Budget"]

#: The share of the budget growth may spend; the rest trains the final network to convergence.
GROWTH_SHARE = 0.5


class Budget(Callback):
    """Keeps a run within ``budget`` FLOPs (or ``"<N> epochs"`` of the initial network).

    ``history.budget`` records the plan (``flops``, ``growth_limit``) and the spend (``spent``,
    ``growth_spent``: at the end of growth; ``stopped``: what the budget ended, if anything).
    A decision (topological-derivative pass and line search) is estimated at the most one has
    cost so far in this run, or before the first at a full pass and line search
    (:meth:`~topogrow.growth.compute.ComputeCounter.decision_flops`).
    """

    def __init__(self, budget: float | str, counter: ComputeCounter) -> None:
        self.given, self.counter = budget, counter
        self.flops: float | None = None
        self.decision = 0.0  # the most a decision has cost so far
        self._decisions_before = 0.0

    @staticmethod
    def _spent(grower) -> float:
        return grower.history.flops.get("total", 0.0)

    @staticmethod
    def _decisions(grower) -> float:
        flops = grower.history.flops
        return flops.get("topological_derivative", 0.0) + flops.get("line_search", 0.0)

    def on_fit_start(self, grower):
        if self.flops is None:  # a fresh run (a resumed one keeps its plan)
            if isinstance(self.given, str):
                self.flops = float(self.given.split()[0]) * self.counter.epoch_flops(grower)
            else:
                self.flops = float(self.given)
            grower.history.budget = {
                "given": self.given,
                "flops": self.flops,
                "growth_limit": GROWTH_SHARE * self.flops,
            }

    def horizon(self, grower) -> int:
        """Epochs the budget leaves from now at the current network's cost (at least 1)."""
        epoch = self.counter.epoch_flops(grower)
        left = self.flops - self._spent(grower)
        return max(int(left // epoch) if epoch > 0 else 1, 1)

    def on_epoch_end(self, grower, record):
        limit = self.flops if grower.progress.phase == "final" else GROWTH_SHARE * self.flops
        if self._spent(grower) + self.counter.epoch_flops(grower) > limit:
            grower.end_stage()

    def on_stage_end(self, grower, context):
        decisions = self._decisions(grower)
        self.decision = max(self.decision, decisions - self._decisions_before)
        self._decisions_before = decisions
        epoch = self.counter.epoch_flops(grower)
        depth = max(grower.model.depth, 1)
        decision = self.decision if self.decision > 0 else self.counter.decision_flops(grower)
        stage = grower.config.epochs_per_stage * epoch * (depth + 1) / depth
        limit = GROWTH_SHARE * self.flops
        if self._spent(grower) + decision + stage > limit:
            context.stop(f"budget: another insertion and stage would pass {limit:.3g} FLOPs (half the budget)")

    def on_stage_start(self, grower):
        self._decisions_before = self._decisions(grower)
        if grower.progress.phase != "final" or "growth_spent" in grower.history.budget:
            return
        grower.history.budget["growth_spent"] = self._spent(grower)
        if self._spent(grower) + self.counter.epoch_flops(grower) > self.flops:
            grower.end_stage()
            return
        start = len(grower.history.epochs)
        for decay in getattr(grower.scheduler, "lr_lambdas", []):  # decay over what remains
            if isinstance(decay, CosineDecay):
                decay.horizon = start + self.horizon(grower)

    def on_fit_end(self, grower):
        grower.history.budget["spent"] = self._spent(grower)

    def state_dict(self) -> dict[str, Any]:
        return {"flops": self.flops, "decision": self.decision, "decisions_before": self._decisions_before}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.flops = None if state.get("flops") is None else float(state["flops"])
        self.decision = float(state.get("decision", 0.0))
        self._decisions_before = float(state.get("decisions_before", 0.0))
