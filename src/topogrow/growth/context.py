"""What a strategy sees at the end of a stage (:class:`StageContext`) and what it answers
(:class:`Proposal`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from scipy.sparse.linalg import ArpackError
from torch import nn

import topogrow.core as core
from topogrow._validation import one_line
from topogrow.core.batches import sample_count
from topogrow.core.location import location_derivative
from topogrow.core.losses import Loss, resolve_loss
from topogrow.growth.config import GrowthConfig
from topogrow.growth.history import StageRecord
from topogrow.nn.blocks import make_block

#: Errors of the topological derivative or of a proposal that skip one insertion (not the run).
NUMERICAL_FAULTS: tuple[type[BaseException], ...] = (FloatingPointError, torch.linalg.LinAlgError, ArpackError)

Reduce = Callable[[torch.Tensor], torch.Tensor]


class StageFault(Exception):
    """This stage's insertion cannot be decided (a numerical fault); the loop skips it and trains on."""


class StopGrowth(Exception):
    """No insertion should follow (e.g. every mu_l <= tolerance); the loop moves to the final phase."""


@dataclass(frozen=True)
class Proposal:
    """A layer to insert: ``location`` and its parameters ``direction`` at epsilon = 1.

    For closed-form layer kinds the direction is the rows ``[W | b]`` ``(n, m)``; for a
    block, its flat parameter vector. The inserted layer's ``load_direction`` accepts it.

    ``curvature`` is ``phi^T Q phi`` when known and ``slope`` the first-order rate
    ``G . phi`` (zero unless a block's expansion is first order), so that the predicted
    loss change of the insertion at epsilon is ``-epsilon * slope - (epsilon^2 / 2) * curvature``.

    ``epsilon``: ``None`` picks epsilon by the line search; a number inserts the layer at
    that epsilon (``1.0``: as given).

    ``block`` names the registered block (:data:`topogrow.nn.blocks.BLOCKS`) to insert
    when the strategy picks its own (``sensli``); ``None`` inserts what the run grows by
    (``GrowthConfig.block``, or the closed-form layer).
    """

    location: int
    direction: torch.Tensor
    curvature: float | None = None
    slope: float = 0.0
    epsilon: float | None = None
    block: str | None = None

    @property
    def line_search(self) -> bool:
        """Whether epsilon is chosen by the line search."""
        return self.epsilon is None

    def predicted_change(self, epsilon: float) -> float | None:
        """The model of the loss change at ``epsilon`` (``None`` if the curvature is unknown)."""
        if self.curvature is None:
            return None
        return -epsilon * self.slope - 0.5 * epsilon**2 * self.curvature


@dataclass
class StageContext:
    """The end of a training stage, as a strategy and the callbacks see it.

    Attributes:
        model: the growable model (not a DistributedDataParallel wrapper).
        data: the training data as given to ``fit`` (an ``(X, y)`` pair or a DataLoader).
        loss: the loss callable (batch mean).
        config: the run's :class:`~topogrow.growth.config.GrowthConfig`.
        generator: the run's generator for random locations and initialisations.
        record: this stage's :class:`~topogrow.growth.history.StageRecord` (filled in as the
            decision is made: eigenvalues, location, epsilon, changes).
        reduce: sums a float64 tensor over processes in a distributed run, else ``None``.

    The topological derivative (:meth:`topological_derivative`) is computed on first use, of
    the kind the run grows by: the closed form, or the matrix-free one for ``config.block``.
    Callbacks may :meth:`stop` growth, :meth:`veto` this insertion, or replace
    :attr:`proposal` (which asks the strategy on first use).
    """

    model: nn.Module
    data: Any
    loss: Loss
    config: GrowthConfig = field(default_factory=GrowthConfig)
    generator: torch.Generator = field(default_factory=torch.Generator)
    record: StageRecord | None = None
    reduce: Reduce | None = None
    strategy: Any = None
    stop_reason: str | None = None
    veto_reason: str | None = None
    excluded: set[int] = field(default_factory=set)
    _derivatives: dict[tuple[bool, bool], Any] = field(default_factory=dict, repr=False)
    _proposal: Proposal | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.loss = resolve_loss(self.loss)

    # ------------------------------------------------------------ decisions
    def stop(self, reason: str) -> None:
        """Stop growing (the final phase follows), with ``reason`` as the history's stop reason."""
        self.stop_reason = reason

    def veto(self, reason: str) -> None:
        """No insertion at this stage (growth goes on); ``reason`` goes in the stage's note."""
        self.veto_reason = reason

    def exclude(self, location: int) -> None:
        """Ask the strategy for a layer anywhere but at ``location`` (e.g. after a rolled-back insertion there)."""
        self.excluded.add(location)

    @property
    def locations(self) -> list[int]:
        """The locations a strategy may choose: the model's, but the excluded ones."""
        return [location for location in self.model.locations if location not in self.excluded]

    def best_location(self, derivative) -> int:
        """The topological derivative's best location among :attr:`locations`."""
        best = derivative.best_location
        if best not in self.excluded:
            return best
        if not self.locations:
            raise StopGrowth("every location is excluded")
        eigenvalues = derivative.eigenvalues
        return max(self.locations, key=lambda location: float(eigenvalues[location]))

    @property
    def proposal(self) -> Proposal | None:
        """The strategy's proposal (asked once, on first use), unless a callback set another
        (``None``: the strategy does not grow)."""
        if self._proposal is None:
            try:
                proposal = self.strategy.propose(self)
            except NUMERICAL_FAULTS as error:
                raise StageFault(f"no layer could be proposed ({one_line(error)})") from None
            if proposal is None:
                return None
            if not torch.isfinite(proposal.direction).all():
                raise StageFault(f"the proposed layer at location {proposal.location} is not finite")
            self._proposal = proposal
        return self._proposal

    @proposal.setter
    def proposal(self, proposal: Proposal) -> None:
        self._proposal = proposal

    # -------------------------------------------------- topological derivative
    @property
    def has_derivative(self) -> bool:
        """Whether the topological derivative was computed at this stage."""
        return bool(self._derivatives)

    @property
    def derivative_flops(self) -> float | None:
        """The FLOPs this stage's topological derivatives spent, when they counted them (the
        location-only pass does), else ``None`` (the counter's model of the pass applies)."""
        flops = [getattr(d, "flops", None) for d in self._derivatives.values()]
        if not flops or any(f is None for f in flops):
            return None
        return float(sum(flops))

    def topological_derivative(
        self, keep: bool = False, location_only: bool = False
    ) -> core.TopologicalDerivativeResult:
        """The topological derivative at every location (computed once per stage).

        ``keep`` also keeps the blocks (or matrix-free operators, or the samples read) for
        ``quadratic_form``; it forces the block solver on the closed form. ``location_only``: the
        caller needs only the eigenvalues mu_l (where to insert): the closed form is then estimated
        by :func:`~topogrow.core.location.location_derivative` within :data:`~topogrow.growth.config.LOCATION_BUDGET`
        epochs, its eigenvectors only approximate (a full pass already computed serves as well).
        Raises :class:`StageFault` on a numerical fault or non-finite eigenvalues, and
        :class:`StopGrowth` when no insertion lowers the loss (every mu_l <= ``config.tolerance``,
        no first-order location).
        """
        cached = self._cached(keep, location_only)
        if cached is not None:
            return cached
        try:
            derivative = self._compute(keep, location_only)
        except NUMERICAL_FAULTS as error:
            raise StageFault(f"the topological derivative failed ({one_line(error)})") from None
        eigenvalues = derivative.eigenvalues
        if not torch.isfinite(eigenvalues).all():
            raise StageFault("the topological derivative has non-finite eigenvalues")
        self._derivatives[(keep, location_only and self._estimates(location_only))] = derivative
        if self.record is not None:
            self.record.eigenvalues = eigenvalues.tolist()
            self.record.td_samples = int(derivative.n_samples)
            errors = getattr(derivative, "standard_errors", None)
            if errors is not None:
                best = derivative.best_location
                self.record.td_error = float(errors[best]) / max(abs(float(eigenvalues[best])), 1e-300)
        tolerance = self.config.tolerance
        if tolerance is not None and not derivative.improvable(tolerance):
            raise StopGrowth(f"max mu_l = {float(eigenvalues.max()):.3g} <= tolerance {tolerance:g}")
        return derivative

    def _cached(self, keep: bool, location_only: bool):
        """A derivative already computed that answers: a full one (with the blocks if ``keep``), or
        for ``location_only`` a location-only one too."""
        for (kept, estimated), derivative in self._derivatives.items():
            if (kept or not keep) and (not estimated or location_only):
                return derivative
        return None

    def _estimates(self, location_only: bool) -> bool:
        """Whether a ``location_only`` request gets the budgeted estimate: the closed form, one
        process, and ``td_location == "lanczos"``."""
        cfg = self.config
        return location_only and cfg.td_location == "lanczos" and cfg.block is None and self.reduce is None

    def _compute(self, keep: bool, location_only: bool = False):
        cfg = self.config
        if self._estimates(location_only):
            return self._location_estimate(keep)
        if cfg.block is not None:
            return core.matrix_free_topological_derivative(
                self.model,
                self.data,
                self.loss,
                lambda location: make_block(cfg.block, self.model, location),
                k=max(2, cfg.neurons or 1),
                batch_size=cfg.td_batch_size,
                keep_operators=keep,
                tol=cfg.eigen_tol,
            )
        sampling = cfg.sampling if self.reduce is None else None
        if sampling is not None and (sample_count(self.data) or math.inf) <= sampling.min_samples:
            sampling = None  # it would read every sample anyway
        generator = None
        if sampling is not None:  # its own stream, drawn from the run's: resumable, and "all" draws nothing
            seed = int(torch.randint(2**62, (1,), generator=self.generator))
            generator = torch.Generator().manual_seed(seed)
        return core.topological_derivative(
            self.model,
            self.data,
            self.loss,
            batch_size=cfg.td_batch_size,
            keep_blocks=keep,
            reduce=self.reduce,
            sampling=sampling,
            generator=generator,
        )

    def _location_estimate(self, keep: bool):
        """The budgeted location-only pass: at most ``td_budget`` epochs (default
        :data:`~topogrow.growth.config.LOCATION_BUDGET`), at most the samples ``td_samples`` allows
        (2,048 for ``"auto"``), positions drawn as the sampled pass draws them; its own generator,
        drawn from the run's."""
        cfg = self.config
        sampling = cfg.sampling
        seed = int(torch.randint(2**62, (1,), generator=self.generator))
        return location_derivative(
            self.model,
            self.data,
            self.loss,
            budget=cfg.td_budget,
            max_samples=None if sampling is None else sampling.max_samples,
            positions=None if sampling is None else sampling.positions,
            batch_size=cfg.td_batch_size if sampling is None else sampling.batch_size,
            generator=torch.Generator().manual_seed(seed),
            keep_samples=keep,
        )
