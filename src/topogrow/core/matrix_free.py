"""Matrix-free topological derivative for any inserted block (METHOD.md section 2).

Insert ``x_l -> x_l + g(x_l; theta)`` with a block ``g`` whose output is zero at
``theta = 0``. The loss changes by::

    J(theta) - J(0) = -G_l . theta - (1/2) theta^T Q_l theta + O(|theta|^3)

    G_l = grad_theta  sum_s p_s^T g(x_s; theta) |_{theta=0}
    Q_l = hess_theta  sum_s p_s^T g(x_s; theta) |_{theta=0}   (= -hess_theta J at 0)

with ``x_s`` the states and ``p_s = -dJ/dx_s`` the adjoints at location l. If
``G_l != 0`` the topological derivative is first order: ``-|G_l|`` in the direction
``G_l / |G_l|``. Otherwise it is second order and the best direction is the
leading eigenvector of ``Q_l``.

``Q_l`` is never formed: :class:`~topogrow.core.hessian_operator.HamiltonianHessian` applies it to a vector with
:mod:`torch.func` (``grad`` of ``grad . v``, or ``jvp`` of ``grad``) over the block
alone, through ``functional_call`` with a dict of only the block's parameters,
and SciPy's Lanczos (``eigsh``) or LOBPCG finds the leading eigenpairs from such
products. The closed forms of :mod:`topogrow.core.hamiltonian` are the fast path
for ``sigma(W u + b)`` layers; this is the general path, and their independent check.

The block's parameters are flattened in the order of ``block.parameters()``
(the layout of :func:`torch.nn.utils.parameters_to_vector`), so an eigenvector
loads into a block with :func:`torch.nn.utils.vector_to_parameters`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from topogrow._validation import check_int
from topogrow.core.adjoint import StatefulModel, adjoint_batches, check_stateful
from topogrow.core.batches import Data
from topogrow.core.eigen import select_leading
from topogrow.core.hessian_operator import HamiltonianHessian, leading_operator_eigenpairs
from topogrow.core.losses import Loss, resolve_loss

__all__ = ["FirstOrder", "MatrixFreeTopologicalDerivative", "matrix_free_topological_derivative"]


@dataclass(frozen=True)
class FirstOrder:
    """A first-order topological derivative at one location: ``-norm`` along ``direction``.

    Inserting ``epsilon * direction`` changes the loss by ``-epsilon * norm + O(epsilon^2)``.
    The ``epsilon^2`` term is not ``-(1/2) d^T Q d`` here: when ``d g / d theta != 0`` it
    also involves the curvature of the rest of the network (``hess_x J``), which this
    operator does not see, so no second-order term is reported.
    """

    norm: float
    direction: torch.Tensor


@dataclass(frozen=True)
class MatrixFreeTopologicalDerivative:
    """Leading eigenpairs of ``Q_l`` (and first-order terms) at every location.

    Satisfies :class:`~topogrow.core.result.TopologicalDerivativeResult`, like
    :class:`~topogrow.core.topological_derivative.TopologicalDerivative`, with a block's flat
    parameter vector where the closed form has rows ``[W | b]``.

    Attributes:
        block_eigenvalues: ``block_eigenvalues[l]`` is ``(k_l,)``, the top eigenvalues of
            ``Q_l`` in descending order (empty at locations not examined).
        block_eigenvectors: ``block_eigenvectors[l]`` is ``(k_l, n_l)``, the unit eigenvectors.
        first_order: ``first_order[l]`` is a :class:`FirstOrder` where the gradient of the
            Hamiltonian at zero is not zero (relative to ``first_order_tol``), else ``None``.
        gradient_norms: ``(L,)``, ``|G_l|`` (NaN at locations not examined).
        loss: the loss J of the network as it is, over the data used.
        n_samples: S.
        locations: the locations examined.
        operators: ``operators[l]`` (a :class:`HamiltonianHessian`) if kept, else ``None``.
    """

    block_eigenvalues: tuple[torch.Tensor, ...]
    block_eigenvectors: tuple[torch.Tensor, ...]
    first_order: tuple[FirstOrder | None, ...]
    gradient_norms: torch.Tensor
    loss: float
    n_samples: int
    locations: tuple[int, ...]
    operators: tuple[HamiltonianHessian | None, ...] | None = None

    @property
    def n_locations(self) -> int:
        """L, the number of insertion locations (examined or not)."""
        return len(self.block_eigenvalues)

    @property
    def eigenvalues(self) -> torch.Tensor:
        """``(L,)``: the leading eigenvalue mu_l of Q_l (``-inf`` where not examined)."""
        return torch.stack(
            [v.max() if v.numel() else torch.tensor(-math.inf, dtype=torch.float64) for v in self.block_eigenvalues]
        )

    @property
    def first_order_locations(self) -> tuple[int, ...]:
        """Locations whose topological derivative is first order."""
        return tuple(l for l, f in enumerate(self.first_order) if f is not None)

    @property
    def best_location(self) -> int:
        """Where to insert: the largest ``|G_l|`` if any location is first order
        (a first-order decrease beats any second-order one for small epsilon), else
        the largest mu_l."""
        first = self.first_order_locations
        if first:
            return max(first, key=lambda l: self.first_order[l].norm)
        return int(torch.argmax(self.eigenvalues))

    def improvable(self, tolerance: float = 0.0) -> bool:
        """Whether some insertion lowers the loss: a first-order location or mu_l > tolerance."""
        return bool(self.first_order_locations) or float(self.eigenvalues.max()) > tolerance

    def _check_location(self, location: int) -> None:
        if isinstance(location, bool) or not isinstance(location, int) or not 0 <= location < self.n_locations:
            raise ValueError(f"location must be an integer in 0..{self.n_locations - 1}, got {location!r}")
        if location not in self.locations:
            raise ValueError(f"location {location} was not examined (examined: {list(self.locations)})")

    def neurons(self, location: int, k: int | None = 1, rel_threshold: float | None = None) -> torch.Tensor:
        """Indices of the eigenpairs to use, largest eigenvalue first.

        Either the top ``k``, or (``k=None``) every one whose eigenvalue is positive and
        at least ``rel_threshold`` times the largest (at least one).
        """
        self._check_location(location)
        return select_leading(self.block_eigenvalues[location], k, rel_threshold)

    def direction(self, location: int, k: int | None = 1, rel_threshold: float | None = None) -> torch.Tensor:
        """The unit-epsilon parameter vector: the normalised gradient at a first-order
        location, else the sum of the chosen orthonormal eigenvectors."""
        self._check_location(location)
        first = self.first_order[location]
        if first is not None:
            return first.direction.clone()
        chosen = self.neurons(location, k, rel_threshold)
        return self.block_eigenvectors[location][chosen].sum(dim=0)

    def rows(
        self, location: int, epsilon: float, k: int | None = 1, rel_threshold: float | None = None
    ) -> torch.Tensor:
        """``(n_l,)`` flat parameters of the new block: ``epsilon * direction(...)``.

        At a second-order location ``phi^T Q phi = epsilon^2 * sum of the chosen mu``.
        """
        return epsilon * self.direction(location, k, rel_threshold)

    def slope(self, location: int) -> float:
        """``|G_l|`` at a first-order location, else 0: the first-order rate of decrease."""
        self._check_location(location)
        first = self.first_order[location]
        return 0.0 if first is None else first.norm

    def curvature(self, location: int, k: int | None = 1, rel_threshold: float | None = None) -> float:
        """``phi^T Q_l phi = sum of the chosen mu`` for ``phi = direction(location, k, rel_threshold)``;
        0 at a first-order location (whose model is first order only, see :class:`FirstOrder`)."""
        self._check_location(location)
        if self.first_order[location] is not None:
            return 0.0
        chosen = self.neurons(location, k, rel_threshold)
        return float(self.block_eigenvalues[location][chosen].sum())

    def predicted_change(
        self, location: int, epsilon: float, k: int | None = 1, rel_threshold: float | None = None
    ) -> float:
        """Model of ``J(eps) - J(0)``: ``-(eps^2/2) sum mu`` at a second-order location, ``-eps |G|``
        at a first-order one."""
        return -epsilon * self.slope(location) - 0.5 * epsilon**2 * self.curvature(location, k, rel_threshold)

    def _operator(self, location: int) -> HamiltonianHessian:
        self._check_location(location)
        if self.operators is None or self.operators[location] is None:
            raise ValueError(
                "quadratic_form needs the operators: call matrix_free_topological_derivative(..., keep_operators=True)"
            )
        return self.operators[location]

    def quadratic_form(self, location: int, direction: torch.Tensor) -> float:
        """``phi^T Q_l phi`` for a flat parameter vector ``phi`` (one Hessian-vector product).

        At a first-order location this is only the Hamiltonian's part of the loss's
        second-order term (see :class:`FirstOrder`).
        """
        return self._operator(location).quadratic_form(direction)

    def linear_form(self, location: int, direction: torch.Tensor) -> float:
        """``G_l . phi``: the first-order decrease rate along ``phi`` (0 at second-order locations)."""
        self._check_location(location)
        first = self.first_order[location]
        if first is None:
            return 0.0
        phi = torch.as_tensor(direction).reshape(-1).to(first.direction)
        return float(first.norm * (first.direction @ phi))


BlockFactory = Callable[[], nn.Module] | Callable[[int], nn.Module]


def _call_factory(factory: BlockFactory, location: int) -> nn.Module:
    """``factory()`` if it takes no required argument, else ``factory(location)``."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # builtins without a signature
        takes_location = False
    else:
        try:
            signature.bind()
            takes_location = False
        except TypeError:
            takes_location = True
    block = factory(location) if takes_location else factory()
    if not isinstance(block, nn.Module):
        raise TypeError(f"expected the block factory to return an nn.Module, got {type(block).__name__}")
    return block


def matrix_free_topological_derivative(
    model: StatefulModel,
    data: Data,
    loss: str | Loss = "mse",
    block_factory: BlockFactory | None = None,
    *,
    k: int = 4,
    locations: Sequence[int] | None = None,
    batch_size: int = 1024,
    solver: str = "eigsh",
    first_order_tol: float = 1e-8,
    keep_operators: bool = False,
    dtype: torch.dtype = torch.float64,
    mode: str = "reverse",
    seed: int = 0,
    tol: float = 0.0,
) -> MatrixFreeTopologicalDerivative:
    """Topological derivative of inserting ``x + g(x)`` at each location, matrix-free.

    One forward and one backward pass per mini-batch give the states and adjoints
    (adjoints of the full-data mean loss J). The states and adjoints of the
    examined locations are cached, in ``dtype``: memory ``2 x S x state size`` per
    location (pass ``locations`` to examine fewer). Then, per location, the
    gradient ``G_l`` and the top ``k`` eigenpairs of ``Q_l`` come from
    Hessian-vector products (:class:`HamiltonianHessian`), in float64.

    Args:
        model: a growable model (see :class:`~topogrow.core.adjoint.StatefulModel`).
        data: a DataLoader of ``(x, y)`` batches, or an ``(X, y)`` pair of tensors.
        loss: ``"mse"``, ``"cross_entropy"`` or a callable returning the batch mean.
        block_factory: returns a fresh block module ``g`` (output shaped like its input,
            zero at zero parameters; its parameters are evaluated at zero). Called as
            ``block_factory(location)`` if it requires an argument, else ``block_factory()``;
            it runs under :func:`torch.random.fork_rng`, so the global RNG is untouched.
        k: eigenpairs per location.
        locations: the locations to examine (default: all).
        batch_size: mini-batch size when ``data`` is a pair (also the chunk of each product).
        solver: ``"eigsh"``, ``"lobpcg"`` or ``"dense"`` (see :func:`leading_operator_eigenpairs`).
        first_order_tol: ``G_l`` counts as non-zero when ``|G_l| > first_order_tol * scale``,
            ``scale = sum_s |p_s| sqrt(|x_s|^2 + 1)``.
        keep_operators: keep the operators (and their cached states) for :meth:`quadratic_form`.
        dtype: dtype of the cached states and of every product.
        mode: how products are taken, ``"reverse"`` or ``"forward"`` (see :class:`HamiltonianHessian`).
        seed: seeds the eigen-solver's starting vectors.
        tol: relative accuracy of the eigenvalues (0: machine precision; the growth loop
            uses 1e-3, as an initialisation needs no more, and saves most products).
    """
    check_stateful(model)
    if block_factory is None or not callable(block_factory):
        raise TypeError(f"expected a callable block_factory returning an nn.Module, got {block_factory!r}")
    check_int("k", k, minimum=1)
    if not first_order_tol >= 0:
        raise ValueError(f"first_order_tol must be >= 0, got {first_order_tol!r}")
    loss_fn = resolve_loss(loss)
    cache: dict[int, tuple[list[torch.Tensor], list[torch.Tensor]]] | None = None
    n_locations, total, loss_sum = 0, 0, 0.0
    for batch in adjoint_batches(model, data, loss_fn, batch_size):
        if cache is None:
            n_locations = len(batch.states)
            examined = _check_locations(locations, n_locations)
            cache = {l: ([], []) for l in examined}
        for l, (xs, ps) in cache.items():
            xs.append(batch.states[l].to(dtype))
            ps.append(batch.adjoints[l].to(dtype))
        total += batch.size
        loss_sum += batch.loss * batch.size
    assert cache is not None  # iter_batches raises on empty data

    values: list[torch.Tensor] = [torch.zeros(0, dtype=torch.float64)] * n_locations
    vectors: list[torch.Tensor] = [torch.zeros(0, 0, dtype=torch.float64)] * n_locations
    first: list[FirstOrder | None] = [None] * n_locations
    norms = torch.full((n_locations,), math.nan, dtype=torch.float64)
    operators: list[HamiltonianHessian | None] = [None] * n_locations
    for l, (xs, ps) in cache.items():
        with torch.random.fork_rng(devices=[]):
            block = _call_factory(block_factory, l)
        operator = HamiltonianHessian(block, xs, [p / total for p in ps], dtype=dtype, mode=mode)
        cache[l] = ([], [])  # the operator holds the only copy now
        gradient = operator.gradient().double().cpu()
        norm = float(gradient.norm())
        norms[l] = norm
        if norm > first_order_tol * operator.scale() and norm > 0:
            first[l] = FirstOrder(norm=norm, direction=gradient / norm)
        values[l], vectors[l] = leading_operator_eigenpairs(operator, k, solver=solver, seed=seed + l, tol=tol)
        if keep_operators:
            operators[l] = operator
    return MatrixFreeTopologicalDerivative(
        block_eigenvalues=tuple(values),
        block_eigenvectors=tuple(vectors),
        first_order=tuple(first),
        gradient_norms=norms,
        loss=loss_sum / total,
        n_samples=total,
        locations=tuple(cache),
        operators=tuple(operators) if keep_operators else None,
    )


def _check_locations(locations: Sequence[int] | None, n_locations: int) -> list[int]:
    if locations is None:
        return list(range(n_locations))
    chosen = list(locations)
    for l in chosen:
        if isinstance(l, bool) or not isinstance(l, int) or not 0 <= l < n_locations:
            raise ValueError(f"locations must be integers in 0..{n_locations - 1}, got {l!r}")
    if not chosen or len(set(chosen)) != len(chosen):
        raise ValueError(f"locations must be a non-empty list without repeats, got {chosen!r}")
    return sorted(chosen)
