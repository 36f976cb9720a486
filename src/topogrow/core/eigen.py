"""Leading eigenpairs of many small symmetric blocks at once."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from topogrow._validation import check_int


@dataclass(frozen=True)
class LeadingEigenpairs:
    """The largest eigenvalue of each block and its unit eigenvector.

    ``values`` has shape ``(..., n)`` (one per block), ``vectors`` ``(..., n, m)``;
    ``products`` counts the block products an iterative solver took (0 for ``eigh``).
    """

    values: torch.Tensor
    vectors: torch.Tensor
    products: int = 0


def leading_block_eigenpairs(blocks: torch.Tensor) -> LeadingEigenpairs:
    """Leading eigenpair of every symmetric block in ``blocks`` of shape ``(..., m, m)``.

    Uses one batched ``torch.linalg.eigh`` (O(m^3) per block). The blocks are
    symmetrised first so round-off in their accumulation cannot matter.
    """
    if blocks.ndim < 2 or blocks.shape[-1] != blocks.shape[-2]:
        raise ValueError(f"expected square blocks (..., m, m), got shape {tuple(blocks.shape)}")
    if not torch.isfinite(blocks).all():
        raise FloatingPointError("the Hessian blocks contain NaN or inf: the adjoints are not finite")
    symmetric = 0.5 * (blocks + blocks.transpose(-1, -2))
    values, vectors = _eigh(symmetric)
    return LeadingEigenpairs(values=values[..., -1], vectors=vectors[..., :, -1])


def leading_block_eigenvalues(blocks: torch.Tensor) -> torch.Tensor:
    """``(..., n)``: the largest eigenvalue of every symmetric block of ``blocks`` ``(..., n, m, m)``
    (eigenvalues alone, from the lower triangles: about half the cost of :func:`leading_block_eigenpairs`)."""
    try:
        if blocks.device.type == "cpu" and blocks.ndim > 2 and blocks.shape[:-2].numel() > 1:
            with _one_thread():
                values = torch.linalg.eigvalsh(blocks)[..., -1]
        else:
            values = torch.linalg.eigvalsh(blocks)[..., -1]
    except torch.linalg.LinAlgError:
        values = torch.full(blocks.shape[:-2], math.nan, dtype=blocks.dtype, device=blocks.device)
    if not torch.isfinite(values).all():
        raise FloatingPointError("the Hessian blocks contain NaN or inf: the adjoints are not finite")
    return values


def top_block_eigenpair(blocks: torch.Tensor) -> tuple[torch.Tensor, int, torch.Tensor]:
    """``(values (n,), c, v (m,))`` for symmetric ``blocks`` ``(n, m, m)``: every block's largest
    eigenvalue, the block c with the largest one and its unit eigenvector."""
    values = leading_block_eigenvalues(blocks)
    channel = int(values.argmax())
    block = 0.5 * (blocks[channel] + blocks[channel].T)
    with _one_thread() if block.device.type == "cpu" else nullcontext():  # a small matrix: threads only wait
        _, vectors = torch.linalg.eigh(block)
    return values, channel, vectors[:, -1]


@contextmanager
def _one_thread():
    threads = torch.get_num_threads()
    if threads > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if threads > 1:
            torch.set_num_threads(threads)


def _eigh(matrices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.linalg.eigh``; a batch of matrices on the CPU runs on one thread.

    Torch splits a CPU batch over its threads and LAPACK threads each matrix again: the two
    levels oversubscribe the cores, so one thread is much faster for a batch.
    """
    if matrices.device.type == "cpu" and matrices.ndim > 2 and matrices.shape[:-2].numel() > 1:
        with _one_thread():
            return torch.linalg.eigh(matrices)
    return torch.linalg.eigh(matrices)


def select_leading(values: torch.Tensor, k: int | None = 1, rel_threshold: float | None = None) -> torch.Tensor:
    """Indices into ``values`` ``(n,)``, largest first: the top ``k``, or (``k=None``) every
    value that is positive and at least ``rel_threshold`` times the largest (at least one)."""
    order = torch.argsort(values, descending=True)
    if k is None:
        if rel_threshold is None:
            raise ValueError("give either k or rel_threshold")
        top = values[order[0]]
        keep = (values[order] > 0) & (values[order] >= rel_threshold * top)
        return order[: max(int(keep.sum()), 1)]
    check_int("k", k, minimum=1, maximum=values.shape[0])
    return order[:k]


# ------------------------------------------------------------------ iterative path
# For wide layers the blocks cost O(S n m^2) to form and O(n m^3) to diagonalise.
# Each block is a weighted Gram matrix of the same patches,
#     B_r = c * sum_i rows[i, r] u_i u_i^T,
# so all n products B_r v_r cost two matrix products, O(S n m), without forming a
# block. A Lanczos iteration on all blocks at once then finds their leading
# eigenpairs in a few tens of such products.

CHECK_EVERY_STEP = 16  # the Lanczos convergence test runs at every step up to this one,
CHECK_PERIOD = 4  # then every this many steps

BlockMatvec = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``matvec(vectors (a, m), index (a,)) -> (a, m)``: row i is ``B_{index[i]} vectors[i]``."""

PatchChunks = Sequence[tuple[torch.Tensor, torch.Tensor]] | Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]]


def weighted_gram_matvec(
    chunks: PatchChunks, curvature: float = 1.0, dtype: torch.dtype = torch.float64
) -> BlockMatvec:
    """The products ``B_r v = curvature * sum_i rows[i, r] (u_i . v) u_i`` for all blocks at once.

    Args:
        chunks: pairs ``(patches (N_i, m), rows (N_i, n))`` whose sums over i make the
            blocks (e.g. one pair per mini-batch), or a callable returning a fresh
            iterator of such pairs (to form patches on the fly, e.g. unfolded
            convolutions, instead of keeping them).
        curvature: the factor c (sigma''(0), divided by S for a mean).
        dtype: dtype of the products (the pairs are converted chunk by chunk).

    Each product costs ``4 N n m`` flops (two matrix products per chunk) for all
    blocks, against ``2 N n m^2`` to form the blocks once.
    """

    def pairs() -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        return chunks() if callable(chunks) else chunks

    gathered: dict[str, Any] = {"index": None, "weights": []}  # the columns of the last subset asked for

    def columns(i: int, rows: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """``rows[:, index]``; the gather is kept while the same subset comes back (it only
        shrinks when blocks converge), as gathering columns costs as much as a product."""
        weights = rows.reshape(-1, rows.shape[-1])
        n = weights.shape[1]
        if index.numel() == n and bool((index == torch.arange(n, device=index.device)).all()):
            return weights
        last = gathered["index"]
        if i == 0 and (last is None or last.shape != index.shape or not bool((last == index).all())):
            gathered["index"], gathered["weights"] = index.clone(), []
        if i < len(gathered["weights"]):
            return gathered["weights"][i]
        weights = weights.index_select(1, index.to(weights.device))
        if callable(chunks):  # chunks formed on the fly: keeping their columns would keep them all
            return weights
        gathered["weights"].append(weights)
        return weights

    def matvec(vectors: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(vectors)
        for i, (patches, rows) in enumerate(pairs()):
            u = patches.reshape(-1, patches.shape[-1]).to(dtype)
            projections = u @ vectors.T  # (N, a): u_i . v_r
            projections *= columns(i, rows, index).to(dtype)
            out += projections.T @ u
        return curvature * out

    return matvec


def _lanczos_cycle(
    matvec: BlockMatvec, start: torch.Tensor, index: torch.Tensor, steps: int, tol: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """At most ``steps`` Lanczos steps (full reorthogonalisation) on each block in ``index``.

    Returns ``(values, vectors, residuals, converged, products)`` per block: the top Ritz
    pair, the residual estimate ``|B x - theta x|``, whether it is below ``tol`` times the
    block's spectral scale (or the Krylov space became invariant), and how many products
    were taken. Finished blocks leave the iteration once an eighth of those still
    iterating have finished (dropping them copies the whole basis).
    """
    a, m = start.shape
    steps = min(steps, m)
    dtype, device = start.dtype, start.device
    tiny = torch.finfo(dtype).tiny
    basis = torch.empty(a, steps + 1, m, dtype=dtype, device=device)
    basis[:, 0] = start / start.norm(dim=1, keepdim=True).clamp_min(tiny)
    alpha = torch.zeros(a, steps, dtype=dtype, device=device)
    beta = torch.zeros(a, steps, dtype=dtype, device=device)
    values = torch.zeros(a, dtype=dtype, device=device)
    vectors = torch.zeros(a, m, dtype=dtype, device=device)
    residuals = torch.zeros(a, dtype=dtype, device=device)
    converged = torch.zeros(a, dtype=torch.bool, device=device)
    live = torch.arange(a, device=device)  # rows of the outputs still in the iteration
    recorded = torch.zeros(a, dtype=torch.bool, device=device)  # of the live rows: finished already
    products = 0
    for j in range(steps):
        q = basis[:, j]
        w = matvec(q, index[live])
        products += 1
        alpha[:, j] = (w * q).sum(dim=1)
        w = w - alpha[:, j, None] * q
        if j > 0:
            w = w - beta[:, j - 1, None] * basis[:, j - 1]
        before = w.norm(dim=1)
        for sweep in range(2):  # full reorthogonalisation; a second sweep only where the first cancelled much
            coefficients = torch.einsum("ajm,am->aj", basis[:, : j + 1], w)
            w = w - torch.einsum("aj,ajm->am", coefficients, basis[:, : j + 1])
            norm = w.norm(dim=1)
            if sweep == 1 or not bool((norm < 0.5 * before).any()):
                break
        beta[:, j] = norm
        basis[:, j + 1] = w / norm.clamp_min(tiny)[:, None]
        if not (j < CHECK_EVERY_STEP or (j + 1) % CHECK_PERIOD == 0 or j + 1 in (steps, m)):
            continue  # the Ritz pairs cost O(a j^3): past a few steps, look every few steps only
        tridiagonal = (
            torch.diag_embed(alpha[:, : j + 1])
            + torch.diag_embed(beta[:, :j], offset=1)
            + torch.diag_embed(beta[:, :j], offset=-1)
        )
        ritz, coordinates = _eigh(tridiagonal)
        top = coordinates[:, :, -1]
        scale = ritz.abs().amax(dim=1)
        residual = norm * top[:, -1].abs()
        done_now = (residual <= tol * scale) | (j + 1 == m)
        finished = (done_now | (j + 1 == steps)) & ~recorded
        if finished.any():
            rows = live[finished]
            vector = torch.einsum("aj,ajm->am", top[finished], basis[finished, : j + 1])
            vectors[rows] = vector / vector.norm(dim=1, keepdim=True).clamp_min(tiny)
            values[rows] = ritz[finished, -1]
            residuals[rows] = residual[finished]
            converged[rows] = done_now[finished]
            recorded |= finished
        if bool(recorded.all()):
            break
        if int(recorded.sum()) * 8 >= live.numel():
            keep = ~recorded
            kept = torch.empty(int(keep.sum()), steps + 1, m, dtype=dtype, device=device)
            kept[:, : j + 2] = basis[keep, : j + 2]  # the filled part only
            basis, alpha, beta, live, recorded = kept, alpha[keep], beta[keep], live[keep], recorded[keep]
    return values, vectors, residuals, converged, products


def lanczos_block_eigenpairs(matvec: BlockMatvec, start: torch.Tensor, steps: int) -> LeadingEigenpairs:
    """The top Ritz pair of every block after ``steps`` Lanczos steps from ``start`` ``(n, m)``
    (fewer where a block's Krylov space becomes invariant; at most m): lower bounds of the leading
    eigenvalues, exact after m steps. No convergence test stops it early and none is reported: a
    fixed number of products, for an estimate of known cost."""
    check_int("steps", steps, minimum=1)
    n = start.shape[0]
    index = torch.arange(n, device=start.device)
    values, vectors, _, _, products = _lanczos_cycle(matvec, start, index, steps, tol=0.0)
    return LeadingEigenpairs(values=values, vectors=vectors, products=products)


def iterative_block_eigenpairs(
    matvec: BlockMatvec,
    n_blocks: int,
    size: int,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
    tol: float = 1e-8,
    basis_size: int = 64,
    max_products: int = 2000,
    seed: int = 0,
    start: torch.Tensor | None = None,
) -> LeadingEigenpairs:
    """Leading eigenpair of ``n_blocks`` symmetric ``size x size`` blocks, from products alone.

    A Lanczos iteration with full reorthogonalisation runs on every block at once:
    each step is one call ``matvec(V, index)`` for all blocks still iterating, so the
    cost is ``steps x`` one product (e.g. ``4 S n m`` flops for
    :func:`weighted_gram_matvec`), not ``S n m^2 + n m^3``. A block stops when its
    residual ``|B x - theta x|`` is at most ``tol`` times its largest Ritz value in
    magnitude (the eigenvalue error is then about ``tol^2`` of that scale, and at most
    ``tol``), when its Krylov space becomes invariant, or after ``size`` steps (exact).
    Blocks not converged after ``basis_size`` steps restart from their Ritz vector.

    Memory: the Lanczos basis, ``n_blocks x basis_size x size`` numbers. ``start``
    ``(n_blocks, size)``: the starting vectors (e.g. the eigenvectors of nearby blocks), else random
    ones drawn from ``seed``.

    Returns:
        :class:`LeadingEigenpairs` with ``products``, the number of ``matvec`` calls.
    """
    check_int("n_blocks", n_blocks, minimum=1)
    check_int("size", size, minimum=1)
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol!r}")
    check_int("basis_size", basis_size, minimum=2)
    if start is None:
        start = torch.randn(n_blocks, size, generator=torch.Generator().manual_seed(seed), dtype=dtype).to(device)
    else:
        start = start.to(device=device, dtype=dtype).clone()
    values = torch.zeros(n_blocks, dtype=dtype, device=device)
    vectors = torch.zeros(n_blocks, size, dtype=dtype, device=device)
    residuals = torch.full((n_blocks,), math.inf, dtype=dtype, device=device)
    active = torch.arange(n_blocks, device=device)
    products = 0
    while active.numel() and products < max_products:
        steps = min(basis_size, max_products - products)
        v, x, r, done, taken = _lanczos_cycle(matvec, start[active], active, steps, tol)
        products += taken
        values[active], vectors[active], residuals[active], start[active] = v, x, r, x
        active = active[~done]
    if not torch.isfinite(values).all():
        raise FloatingPointError("the block products contain NaN or inf: the adjoints are not finite")
    if active.numel():
        worst = float((residuals[active] / values[active].abs().clamp_min(torch.finfo(dtype).tiny)).max())
        warnings.warn(
            f"the iterative eigen-solver stopped after {products} products with {active.numel()} of {n_blocks} "
            f"blocks not converged (relative residual up to {worst:.3g}); raise max_products or use the blocks",
            RuntimeWarning,
            stacklevel=2,
        )
    return LeadingEigenpairs(values=values, vectors=vectors, products=products)
