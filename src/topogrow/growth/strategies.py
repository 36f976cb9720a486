"""Where and how to insert a layer: named strategies in one registry.

Every strategy returns a :class:`Proposal`: a location and a *direction* ``phi``
(the new layer's ``[W | b]`` at epsilon = 1); the grower then picks epsilon by a
line search. Strategies that use the topological derivative receive it; the
others receive ``None``.

- ``td``: the paper. Location with the largest mu_l, eigenvector initialisation.
- ``td-where``: TD location, random initialisation (ablation: only *where* from TD).
- ``td-how``: random location, TD eigenvector there (ablation: only *how* from TD).
- ``random``: random location, random initialisation.

"Random initialisation" is PyTorch's default for a new ``nn.Linear``
(uniform in +-1/sqrt(n)), inserted as drawn, without a line search: that is what
a user who grows by hand gets. (A line search over a random direction is no
fix: half the time phi^T Q phi < 0, every epsilon raises the loss, and the
search returns epsilon = 0, a zero layer that can never train.)
- ``zero``: zero layer right before the head (the function-preserving insertion
  of Net2DeeperNet / AutoGrow). With sigma'(0) = 0 a zero layer has zero gradient,
  so it stays zero: the baseline shows what first-order growth misses.
- ``scratch``: never grows; used to train a fixed architecture from scratch.

With a registered *block* (``GrowthConfig.block``, see :mod:`topogrow.nn.blocks`)
the direction is the block's flat parameter vector instead of rows, the
topological derivative is the matrix-free one, and "random initialisation" is the
block's own default initialisation, flattened.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from topogrow._validation import unknown_name_error
from topogrow.core import MatrixFreeTopologicalDerivative, TopologicalDerivative
from topogrow.nn.blocks import make_block


@dataclass(frozen=True)
class Proposal:
    """A layer to insert: ``location`` and its parameters ``direction`` at epsilon = 1.

    For closed-form layer kinds the direction is the rows ``[W | b]`` ``(n, m)``; for a
    block, its flat parameter vector. The inserted layer's ``load_direction`` accepts it.

    ``curvature`` is ``phi^T Q phi`` when known and ``slope`` the first-order rate
    ``G . phi`` (zero unless a block's expansion is first order), so that the
    predicted loss change of the insertion at epsilon is
    ``-epsilon * slope - (epsilon^2 / 2) * curvature``. With ``line_search=False`` the
    layer is inserted as given (epsilon = 1).
    """

    location: int
    direction: torch.Tensor
    curvature: float | None = None
    line_search: bool = True
    slope: float = 0.0

    def predicted_change(self, epsilon: float) -> float | None:
        """The model of the loss change at ``epsilon`` (``None`` if the curvature is unknown)."""
        if self.curvature is None:
            return None
        return -epsilon * self.slope - 0.5 * epsilon**2 * self.curvature


@dataclass(frozen=True)
class Strategy:
    """Base class: a named rule for where and how to grow."""

    name: str = "base"
    uses_td: bool = False
    grows: bool = True
    neurons: int | None = None
    rel_threshold: float = 0.1
    keep_blocks: bool = field(default=False, repr=False)
    block: str | None = None

    def propose(
        self, model, td: TopologicalDerivative | MatrixFreeTopologicalDerivative | None, generator: torch.Generator
    ) -> Proposal:
        raise NotImplementedError

    # Shared pieces -------------------------------------------------------------
    def _td_proposal(self, td, location: int) -> Proposal:
        """The TD direction at ``location``, with its predicted-change terms."""
        rows = td.rows(location, 1.0, self.neurons, self.rel_threshold)
        if isinstance(td, MatrixFreeTopologicalDerivative):
            return Proposal(
                location,
                rows,
                td.curvature(location, self.neurons, self.rel_threshold),
                slope=td.slope(location),
            )
        chosen = td.neurons(location, self.neurons, self.rel_threshold)
        return Proposal(location, rows, float(td.block_eigenvalues[location][chosen].sum()))

    def _random_init(self, model, location: int, generator: torch.Generator) -> torch.Tensor:
        """PyTorch's default ``nn.Linear``/``nn.Conv2d`` initialisation: uniform in
        +-1/sqrt(fan_in), for weights and biases alike; for a block, its own default
        initialisation (drawn from ``generator``), flattened."""
        if self.block is not None:
            block = make_block(self.block, model, location, generator=generator)
            return torch.nn.utils.parameters_to_vector(block.parameters()).detach().double()
        n, m = model.insertion_shape(location)
        return (2 * torch.rand(n, m, generator=generator, dtype=torch.float64) - 1) * (m - 1) ** -0.5

    def _zero_direction(self, model, location: int) -> torch.Tensor:
        if self.block is not None:
            block = make_block(self.block, model, location, generator=torch.Generator())  # global RNG untouched
            return torch.zeros(sum(p.numel() for p in block.parameters()), dtype=torch.float64)
        return torch.zeros(model.insertion_shape(location))

    @staticmethod
    def _random_location(model, generator: torch.Generator) -> int:
        return int(torch.randint(len(model.locations), (1,), generator=generator))


@dataclass(frozen=True)
class TD(Strategy):
    name: str = "td"
    uses_td: bool = True

    def propose(self, model, td, generator):
        return self._td_proposal(td, td.best_location)


@dataclass(frozen=True)
class TDWhere(Strategy):
    name: str = "td-where"
    uses_td: bool = True
    keep_blocks: bool = field(default=True, repr=False)

    def propose(self, model, td, generator):
        location = td.best_location
        rows = self._random_init(model, location, generator)
        if isinstance(td, MatrixFreeTopologicalDerivative) and td.slope(location) > 0:
            # first order there: the model is the linear term alone (see FirstOrder)
            return Proposal(location, rows, 0.0, line_search=False, slope=td.linear_form(location, rows))
        return Proposal(location, rows, td.quadratic_form(location, rows), line_search=False)


@dataclass(frozen=True)
class TDHow(Strategy):
    name: str = "td-how"
    uses_td: bool = True

    def propose(self, model, td, generator):
        return self._td_proposal(td, self._random_location(model, generator))


@dataclass(frozen=True)
class Random(Strategy):
    name: str = "random"

    def propose(self, model, td, generator):
        location = self._random_location(model, generator)
        return Proposal(location, self._random_init(model, location, generator), line_search=False)


@dataclass(frozen=True)
class Zero(Strategy):
    name: str = "zero"

    def propose(self, model, td, generator):
        location = model.locations[-1]
        return Proposal(location, self._zero_direction(model, location), 0.0, line_search=False)


@dataclass(frozen=True)
class Scratch(Strategy):
    name: str = "scratch"
    grows: bool = False


STRATEGIES: dict[str, type[Strategy]] = {
    "td": TD,
    "td-where": TDWhere,
    "td-how": TDHow,
    "random": Random,
    "zero": Zero,
    "scratch": Scratch,
}


def make_strategy(
    name: str, neurons: int | None = None, rel_threshold: float = 0.1, block: str | None = None
) -> Strategy:
    """The strategy registered under ``name`` (see :data:`STRATEGIES`), growing by the
    closed-form layer (``block=None``) or by a registered block."""
    if name not in STRATEGIES:
        raise unknown_name_error("strategy", name, STRATEGIES)
    return STRATEGIES[name](neurons=neurons, rel_threshold=rel_threshold, block=block)
