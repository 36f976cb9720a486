"""The Hessian of the Hamiltonian of an inserted block as a linear operator, and its leading eigenpairs.

:class:`HamiltonianHessian` applies ``Q_l = hess_theta sum_s p_s^T g(x_s; theta)`` at ``theta = 0``
to vectors with :mod:`torch.func` over the block alone, never forming it;
:func:`leading_operator_eigenpairs` finds its largest eigenvalues from such products (SciPy's
Lanczos or LOBPCG, or a dense ``eigh`` for small blocks). :mod:`topogrow.core.matrix_free` builds
the topological derivative at every location on them.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from scipy.sparse.linalg import ArpackError, LinearOperator, eigsh, lobpcg
from torch import nn
from torch.func import functional_call, grad, jvp, vmap

from topogrow._validation import check_int, unknown_name_error

__all__ = ["HamiltonianHessian", "leading_operator_eigenpairs"]

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
