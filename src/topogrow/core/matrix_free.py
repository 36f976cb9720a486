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

``Q_l`` is never formed: :class:`HamiltonianHessian` applies it to a vector with
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

import copy
import inspect
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse.linalg import ArpackError, LinearOperator, eigsh, lobpcg
from torch import nn
from torch.func import functional_call, grad, jvp, vmap

from topogrow._validation import check_int, unknown_name_error
from topogrow.core.adjoint import StatefulModel, adjoint_batches, check_stateful
from topogrow.core.batches import Data
from topogrow.core.eigen import select_leading
from topogrow.core.losses import Loss, resolve_loss

__all__ = [
    "FirstOrder",
    "HamiltonianHessian",
    "MatrixFreeTopologicalDerivative",
    "leading_operator_eigenpairs",
    "matrix_free_topological_derivative",
]

SOLVERS = ("eigsh", "lobpcg", "dense")
MODES = ("reverse", "forward")
DENSE_FALLBACK = 2048  # largest operator formed densely when Lanczos breaks down


def _as_list(tensors: torch.Tensor | Sequence[torch.Tensor], name: str) -> list[torch.Tensor]:
    if isinstance(tensors, torch.Tensor):
        return [tensors]
    tensors = list(tensors)
    if not tensors or not all(isinstance(t, torch.Tensor) for t in tensors):
        raise TypeError(f"{name}: expected a tensor or a non-empty list of tensors, got {type(tensors).__name__}")
    return tensors


class HamiltonianHessian:
    """``Q = hess_theta sum_s p_s^T g(x_s; theta)`` at ``theta = 0`` as a linear operator.

    Memory: the operator keeps the states and adjoints it is given (``2 S x state
    size`` numbers in ``dtype``) and a zero-parameter copy of the block; each
    product streams over those chunks, so its extra memory is that of one
    second-order pass of the block on one chunk.

    Args:
        block: the block ``g`` (an ``nn.Module`` called as ``g(x)``, output shaped
            like ``x``). It is copied, moved to ``dtype`` and the device of the
            states, and evaluated at zero parameters; the original is untouched.
        states, adjoints: ``x_s`` and ``p_s``, each a tensor ``(B, ...)`` or a list
            of such chunks (e.g. mini-batches), scaled so that the sums over all
            chunks are the full-data sums (``p = -dJ/dx`` with J the mean loss).
        dtype: the dtype of every product (default float64).
        mode: ``"reverse"`` (reverse-over-reverse: ``grad`` of ``grad . v``; the faster on
            the CPU) or ``"forward"`` (``jvp`` of ``grad``,
            forward-over-reverse: the memory-lean form). Both give the same products.
        check_zero: check ``g(x; 0) = 0`` on the first chunk (else ``ValueError``).

    Attributes:
        names, shapes: the block's parameters in flattening order.
        n: the number of parameters (the operator is ``n x n``).
    """

    def __init__(
        self,
        block: nn.Module,
        states: torch.Tensor | Sequence[torch.Tensor],
        adjoints: torch.Tensor | Sequence[torch.Tensor],
        *,
        dtype: torch.dtype = torch.float64,
        mode: str = "reverse",
        check_zero: bool = True,
    ) -> None:
        if mode not in MODES:
            raise unknown_name_error("product mode", mode, MODES)
        self.mode = mode
        self._vmap_ok = True
        if not isinstance(block, nn.Module):
            raise TypeError(f"expected the block to be an nn.Module, got {type(block).__name__}")
        states, adjoints = _as_list(states, "states"), _as_list(adjoints, "adjoints")
        if len(states) != len(adjoints):
            raise ValueError(f"expected as many state chunks as adjoint chunks, got {len(states)} and {len(adjoints)}")
        for i, (x, p) in enumerate(zip(states, adjoints, strict=True)):
            if x.shape != p.shape:
                raise ValueError(
                    f"chunk {i}: states and adjoints must have the same shape, "
                    f"got {tuple(x.shape)} and {tuple(p.shape)}"
                )
        device = states[0].device
        self.dtype = dtype
        self.states = [x.detach().to(device=device, dtype=dtype) for x in states]
        self.adjoints = [p.detach().to(device=device, dtype=dtype) for p in adjoints]
        self.block = _zero_copy(block).to(device=device, dtype=dtype)
        named = list(self.block.named_parameters())
        if not named:
            raise ValueError(f"the block {type(block).__name__} has no parameters: there is nothing to insert")
        self.names = tuple(name for name, _ in named)
        self.shapes = tuple(tuple(p.shape) for _, p in named)
        self.numels = tuple(p.numel() for _, p in named)
        self.n = sum(self.numels)
        self.device = device
        self._grad = grad(self._hamiltonian)
        if check_zero:
            self._check_zero_output()

    # ----------------------------------------------------------------- pieces
    def _unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        pieces = torch.split(theta, self.numels)
        return {name: piece.view(shape) for name, piece, shape in zip(self.names, pieces, self.shapes, strict=True)}

    def _hamiltonian(self, theta: torch.Tensor, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """``sum_s p_s^T g(x_s; theta)`` on one chunk (pure: nothing is stored)."""
        out = functional_call(self.block, self._unflatten(theta), (x,))
        return (p * out).sum()

    def _zero(self) -> torch.Tensor:
        return torch.zeros(self.n, dtype=self.dtype, device=self.device)

    def _check_zero_output(self) -> None:
        x = self.states[0]
        with torch.no_grad():
            out = functional_call(self.block, self._unflatten(self._zero()), (x,))
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"expected the block to map states of shape {tuple(x.shape)} to the same shape "
                f"(it is inserted as x + g(x)), got {shape}"
            )
        size = float(out.abs().max())
        if size > 1e-12 * max(1.0, float(x.abs().max())):
            raise ValueError(
                f"expected the block's output to be zero at zero parameters (so that inserting it leaves the "
                f"network unchanged), got max |g(x; 0)| = {size:.3g}"
            )

    def _vector(self, v: torch.Tensor | np.ndarray) -> torch.Tensor:
        v = torch.as_tensor(v).to(device=self.device, dtype=self.dtype).reshape(-1)
        if v.numel() != self.n:
            raise ValueError(f"expected a vector of {self.n} parameters, got {v.numel()} numbers")
        return v

    # ------------------------------------------------------------- products
    def gradient(self) -> torch.Tensor:
        """``G = grad_theta sum_s p_s^T g(x_s; theta)`` at 0, ``(n,)`` (``= -grad_theta J``)."""
        theta = self._zero()
        return sum((self._grad(theta, x, p) for x, p in zip(self.states, self.adjoints, strict=True)), self._zero())

    def _product(self, theta: torch.Tensor, x: torch.Tensor, p: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``Q_chunk v`` on one chunk, pure (so it can be ``vmap``-ed over ``v``)."""
        if self.mode == "forward":
            return jvp(lambda t: self._grad(t, x, p), (theta,), (v,))[1]
        return grad(lambda t: torch.dot(self._grad(t, x, p), v))(theta)

    def matvec(self, v: torch.Tensor | np.ndarray) -> torch.Tensor:
        """``Q v``, streamed over the chunks."""
        v, theta = self._vector(v), self._zero()
        out = self._zero()
        for x, p in zip(self.states, self.adjoints, strict=True):
            out += self._product(theta, x, p, v)
        return out

    def matmat(self, vectors: torch.Tensor | np.ndarray, chunk: int = 32) -> torch.Tensor:
        """``Q V`` for the columns of ``V`` ``(n, k)``: ``vmap`` over up to ``chunk`` columns
        at a time (a loop of :meth:`matvec` if the block cannot be ``vmap``-ed)."""
        vectors = torch.as_tensor(vectors).to(device=self.device, dtype=self.dtype)
        if vectors.ndim != 2 or vectors.shape[0] != self.n:
            raise ValueError(f"expected a matrix of shape ({self.n}, k), got {tuple(vectors.shape)}")
        if vectors.shape[1] == 0:
            return torch.zeros(self.n, 0, dtype=self.dtype, device=self.device)
        if self._vmap_ok:
            try:
                return torch.cat([self._matmat_vmap(block.T) for block in vectors.split(chunk, dim=1)], dim=1)
            except Exception:  # a block with data-dependent control flow, .item(), in-place ops, ...
                self._vmap_ok = False
        return torch.stack([self.matvec(vectors[:, j]) for j in range(vectors.shape[1])], dim=1)

    def _matmat_vmap(self, rows: torch.Tensor) -> torch.Tensor:
        theta = self._zero()
        out = torch.zeros_like(rows)
        for x, p in zip(self.states, self.adjoints, strict=True):
            out += vmap(lambda v, x=x, p=p: self._product(theta, x, p, v))(rows)
        return out.T

    def quadratic_form(self, v: torch.Tensor | np.ndarray) -> float:
        """``v^T Q v``."""
        v = self._vector(v)
        return float(v @ self.matvec(v))

    def dense(self) -> torch.Tensor:
        """The ``n x n`` matrix Q from ``n`` products (for small blocks and tests only)."""
        return self.matmat(torch.eye(self.n, dtype=self.dtype, device=self.device))

    def to_scipy(self) -> LinearOperator:
        """A float64 SciPy ``LinearOperator`` (for ``eigsh`` / ``lobpcg``)."""

        def matvec(v: np.ndarray) -> np.ndarray:
            return self.matvec(torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64))).cpu().double().numpy()

        def matmat(v: np.ndarray) -> np.ndarray:
            v = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64))
            return self.matmat(v).cpu().double().numpy()

        return LinearOperator((self.n, self.n), matvec=matvec, matmat=matmat, dtype=np.float64)

    def scale(self) -> float:
        """``sum_s |p_s| sqrt(|x_s|^2 + 1)``: the size of a first-order term, for tolerances."""
        total = 0.0
        for x, p in zip(self.states, self.adjoints, strict=True):
            xs, ps = x.reshape(x.shape[0], -1), p.reshape(p.shape[0], -1)
            total += float((ps.norm(dim=1) * (xs.pow(2).sum(dim=1) + 1).sqrt()).sum())
        return total


def _zero_copy(block: nn.Module) -> nn.Module:
    """A copy of ``block`` with every parameter zero (buffers kept)."""
    clone = copy.deepcopy(block)
    with torch.no_grad():
        for parameter in clone.parameters():
            parameter.zero_()
    clone.eval()
    return clone


def leading_operator_eigenpairs(
    operator: HamiltonianHessian, k: int = 1, *, solver: str = "eigsh", seed: int = 0, tol: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest eigenvalues of a symmetric operator and their unit eigenvectors.

    Args:
        operator: a :class:`HamiltonianHessian` (anything with ``n``, ``to_scipy()``, ``dense()``).
        k: how many (capped at ``n``).
        solver: ``"eigsh"`` (Lanczos, ``which="LA"``), ``"lobpcg"`` (SciPy's block
            method, robust when the top eigenvalue is repeated) or ``"dense"``. Either
            iterative solver falls back to a dense ``eigh`` of ``n`` products when
            ``n <= 2 k + 2`` (Lanczos needs ``k < n``); if Lanczos breaks down (an
            invariant Krylov space, e.g. ``Q = 0``), ``dense`` for ``n <= 2048``, else ``lobpcg``.
        seed: seeds the starting vector(s), so results are reproducible.
        tol: solver tolerance (0: machine precision for ``eigsh``).

    Returns:
        ``(values (k,), vectors (k, n))`` in float64, values in descending order.
    """
    if solver not in SOLVERS:
        raise unknown_name_error("eigen-solver", solver, SOLVERS)
    check_int("k", k, minimum=1)
    n = operator.n
    k = min(k, n)
    if solver == "eigsh" and n > 2 * k + 2:
        try:
            values, vectors = eigsh(
                operator.to_scipy(), k=k, which="LA", v0=np.random.default_rng(seed).standard_normal(n), tol=tol
            )
        except ArpackError:
            # Lanczos breaks down when the Krylov space becomes invariant early (Q of low
            # rank, e.g. Q = 0 for a block linear in its parameters): use a block method.
            solver = "dense" if n <= DENSE_FALLBACK else "lobpcg"
        else:
            return _sorted_pairs(values, vectors, k)
    if solver == "dense" or n <= 2 * k + 2:
        matrix = operator.dense().double().cpu()
        if not torch.isfinite(matrix).all():
            raise FloatingPointError("the Hessian of the Hamiltonian contains NaN or inf: the adjoints are not finite")
        values, vectors = torch.linalg.eigh(0.5 * (matrix + matrix.T))
        return values.flip(0)[:k].clone(), vectors.flip(1)[:, :k].T.contiguous()
    rng = np.random.default_rng(seed)
    linear = operator.to_scipy()
    start = rng.standard_normal((n, min(2 * k, max(k, n // 5))))
    with warnings.catch_warnings():  # "not reaching the requested tolerance": checked below
        warnings.simplefilter("ignore", UserWarning)
        values, vectors = lobpcg(linear, start, largest=True, tol=tol or 1e-9, maxiter=max(200, 20 * n))
    # lobpcg returns a block of the requested width; keep the top k
    order = np.argsort(values)[::-1][:k]
    values, vectors = values[order], vectors[:, order]
    residual = np.linalg.norm(linear.matmat(vectors) - vectors * values, axis=0).max()
    if residual > 1e-6 * max(np.abs(values).max(), 1e-300):
        warnings.warn(
            f"lobpcg did not converge: residual {residual:.3g} for eigenvalues up to {np.abs(values).max():.3g}; "
            "try solver='eigsh' or 'dense'",
            RuntimeWarning,
            stacklevel=2,
        )
    return _sorted_pairs(values, vectors, k)


def _sorted_pairs(values: np.ndarray, vectors: np.ndarray, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    if not np.all(np.isfinite(values)):
        raise FloatingPointError("the eigen-solver returned NaN or inf: the adjoints are not finite")
    order = np.argsort(values)[::-1][:k]
    values = torch.from_numpy(np.ascontiguousarray(values[order]))
    vectors = torch.from_numpy(np.ascontiguousarray(vectors[:, order].T))
    vectors = vectors / vectors.norm(dim=1, keepdim=True)
    return values, vectors


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
