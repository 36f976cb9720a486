"""What every topological derivative result offers, whatever computed it.

:class:`~topogrow.core.topological_derivative.TopologicalDerivative` (closed forms, one block
per output neuron) and :class:`~topogrow.core.matrix_free.MatrixFreeTopologicalDerivative`
(any block, Hessian-vector products) both satisfy :class:`TopologicalDerivativeResult`, so
code that decides where and how to insert a layer needs no ``isinstance`` on them.

Inserting the layer ``epsilon * phi`` at location l changes the loss by::

    J(epsilon) - J(0) = -epsilon * G_l . phi - (epsilon^2 / 2) phi^T Q_l phi + O(epsilon^3)

The closed form is always second order (``G_l = 0``: slope and linear form are 0); a
matrix-free location whose block has a non-zero gradient at zero is first order.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class TopologicalDerivativeResult(Protocol):
    """The topological derivative at every insertion location ``l = 0..L-1``.

    A *direction* is the inserted layer's parameters at ``epsilon = 1``: rows ``[W | b]``
    ``(n, m)`` for the closed form, a flat parameter vector ``(n,)`` for matrix-free blocks.
    ``k`` and ``rel_threshold`` choose the eigenpairs (neurons) used, as in :meth:`neurons`.

    Attributes:
        loss: the loss J of the network as it is, over the data used.
        n_samples: S, the number of samples summed over.
    """

    loss: float
    n_samples: int

    @property
    def eigenvalues(self) -> torch.Tensor:
        """``(L,)``: the leading eigenvalue mu_l of Q_l at each location."""
        ...

    @property
    def best_location(self) -> int:
        """Where to insert."""
        ...

    @property
    def n_locations(self) -> int:
        """L, the number of insertion locations."""
        ...

    def neurons(self, location: int, k: int | None = 1, rel_threshold: float | None = None) -> torch.Tensor:
        """Indices of the eigenpairs to use at ``location``, largest eigenvalue first: the top ``k``,
        or (``k=None``) those positive and at least ``rel_threshold`` times the largest."""
        ...

    def direction(self, location: int, k: int | None = 1, rel_threshold: float | None = None) -> torch.Tensor:
        """The inserted layer's parameters at ``epsilon = 1`` (equal to ``rows(location, 1.0, k, rel_threshold)``)."""
        ...

    def rows(
        self, location: int, epsilon: float, k: int | None = 1, rel_threshold: float | None = None
    ) -> torch.Tensor:
        """The inserted layer's parameters at ``epsilon``."""
        ...

    def slope(self, location: int) -> float:
        """``|G_l|``, the first-order rate of decrease along :meth:`direction` (0 at a second-order location)."""
        ...

    def curvature(self, location: int, k: int | None = 1, rel_threshold: float | None = None) -> float:
        """``phi^T Q_l phi`` for ``phi = direction(location, k, rel_threshold)``: the sum of the chosen
        eigenvalues (0 at a first-order location)."""
        ...

    def predicted_change(
        self, location: int, epsilon: float, k: int | None = 1, rel_threshold: float | None = None
    ) -> float:
        """Model of ``J(epsilon) - J(0)`` for ``rows(location, epsilon, k, rel_threshold)``:
        ``-epsilon * slope - (epsilon^2 / 2) * curvature``."""
        ...

    def quadratic_form(self, location: int, direction: torch.Tensor, /) -> float:
        """``phi^T Q_l phi`` for any direction ``phi`` (needs the kept blocks or operators)."""
        ...

    def linear_form(self, location: int, direction: torch.Tensor, /) -> float:
        """``G_l . phi`` for any direction ``phi`` (0 at a second-order location)."""
        ...

    def improvable(self, tolerance: float = 0.0) -> bool:
        """Whether some insertion lowers the loss: a first-order location, or some mu_l > ``tolerance``."""
        ...
