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
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from topogrow._validation import unknown_name_error
from topogrow.core import TopologicalDerivative


@dataclass(frozen=True)
class Proposal:
    """A layer to insert: ``location`` and its parameters ``direction`` at epsilon = 1.

    For closed-form layer kinds the direction is the rows ``[W | b]`` ``(n, m)``; the
    inserted layer's ``load_direction`` accepts it.

    ``curvature`` is ``phi^T Q phi`` when known, so that the predicted loss change
    of the insertion at epsilon is ``-(epsilon^2 / 2) * curvature``. With
    ``line_search=False`` the layer is inserted as given (epsilon = 1).
    """

    location: int
    direction: torch.Tensor
    curvature: float | None = None
    line_search: bool = True


@dataclass(frozen=True)
class Strategy:
    """Base class: a named rule for where and how to grow."""

    name: str = "base"
    uses_td: bool = False
    grows: bool = True
    neurons: int | None = None
    rel_threshold: float = 0.1
    keep_blocks: bool = field(default=False, repr=False)

    def propose(self, model, td: TopologicalDerivative | None, generator: torch.Generator) -> Proposal:
        raise NotImplementedError

    # Shared pieces -------------------------------------------------------------
    def _td_direction(self, td: TopologicalDerivative, location: int) -> tuple[torch.Tensor, float]:
        chosen = td.neurons(location, self.neurons, self.rel_threshold)
        rows = td.rows(location, 1.0, self.neurons, self.rel_threshold)
        return rows, float(td.block_eigenvalues[location][chosen].sum())

    @staticmethod
    def _random_init(model, location: int, generator: torch.Generator) -> torch.Tensor:
        """PyTorch's default ``nn.Linear``/``nn.Conv2d`` initialisation: uniform in
        +-1/sqrt(fan_in), for weights and biases alike."""
        n, m = model.insertion_shape(location)
        return (2 * torch.rand(n, m, generator=generator, dtype=torch.float64) - 1) * (m - 1) ** -0.5

    @staticmethod
    def _random_location(model, generator: torch.Generator) -> int:
        return int(torch.randint(len(model.locations), (1,), generator=generator))


@dataclass(frozen=True)
class TD(Strategy):
    name: str = "td"
    uses_td: bool = True

    def propose(self, model, td, generator):
        location = td.best_location
        rows, curvature = self._td_direction(td, location)
        return Proposal(location, rows, curvature)


@dataclass(frozen=True)
class TDWhere(Strategy):
    name: str = "td-where"
    uses_td: bool = True
    keep_blocks: bool = field(default=True, repr=False)

    def propose(self, model, td, generator):
        location = td.best_location
        rows = self._random_init(model, location, generator)
        return Proposal(location, rows, td.quadratic_form(location, rows), line_search=False)


@dataclass(frozen=True)
class TDHow(Strategy):
    name: str = "td-how"
    uses_td: bool = True

    def propose(self, model, td, generator):
        location = self._random_location(model, generator)
        rows, curvature = self._td_direction(td, location)
        return Proposal(location, rows, curvature)


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
        return Proposal(location, torch.zeros(model.insertion_shape(location)), 0.0, line_search=False)


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


def make_strategy(name: str, neurons: int | None = None, rel_threshold: float = 0.1) -> Strategy:
    """The strategy registered under ``name`` (see :data:`STRATEGIES`)."""
    if name not in STRATEGIES:
        raise unknown_name_error("strategy", name, STRATEGIES)
    return STRATEGIES[name](neurons=neurons, rel_threshold=rel_threshold)
