"""Hessian of the Hamiltonian for an inserted layer, as its diagonal blocks.

For an inserted layer ``f = sigma(W u + b)`` applied at positions (one per sample
for a dense layer, one per pixel for a convolution, one per token), with ``u`` the
augmented patch and ``w_c`` the c-th row of ``[W | b]``, METHOD.md section 2 gives::

    phi^T Q phi = sigma''(0) * sum_{s, pos} sum_c p_c (w_c . u)^2

so Q is block diagonal with one ``m x m`` block per output channel c::

    B_c = sigma''(0) * sum_{s, pos} p_c u u^T

The dense ``n m x n m`` matrix is never formed.
"""

from __future__ import annotations

import torch

from topogrow.core.layer_kinds import Dense, augment

__all__ = ["augment", "dense_hamiltonian_blocks", "dense_quadratic_form", "hamiltonian_blocks", "quadratic_form"]


def hamiltonian_blocks(patches: torch.Tensor, adjoint_rows: torch.Tensor, curvature: float) -> torch.Tensor:
    """The blocks ``B_c`` summed over samples and positions.

    Args:
        patches: ``(B, P, m)`` augmented patches u (see :mod:`topogrow.core.layer_kinds`).
        adjoint_rows: ``(B, P, n)`` adjoints at the same positions, scaled as the caller wants.
        curvature: sigma''(0) of the inserted layer's activation.

    Returns:
        ``(n, m, m)``: block c is ``curvature * sum_{b, pos} p_c u u^T``.
    """
    if patches.shape[:2] != adjoint_rows.shape[:2]:
        raise ValueError(
            f"patches {tuple(patches.shape)} and adjoint rows {tuple(adjoint_rows.shape)} must agree "
            "in their first two dimensions (samples, positions)"
        )
    b, p, m = patches.shape
    u = patches.reshape(b * p, m)
    rows = adjoint_rows.reshape(b * p, -1)
    n = rows.shape[1]
    # Weighted patches (n, chunk, m) times (chunk, m): a batched matmul per chunk of
    # positions, so the intermediate stays below ~2^25 numbers whatever S and P are.
    chunk = max(1, (1 << 25) // max(n * m, 1))
    blocks = torch.zeros(n, m, m, dtype=u.dtype, device=u.device)
    for start in range(0, u.shape[0], chunk):
        uc, rc = u[start : start + chunk], rows[start : start + chunk]
        blocks += torch.matmul((rc.T[:, :, None] * uc[None]).transpose(1, 2), uc)
    return curvature * blocks


def dense_hamiltonian_blocks(states: torch.Tensor, adjoints: torch.Tensor, curvature: float) -> torch.Tensor:
    """Blocks for a dense layer from states and adjoints ``(S, n)``: ``(n, n + 1, n + 1)``."""
    if states.shape != adjoints.shape:
        raise ValueError(
            f"states and adjoints must have the same shape, got {tuple(states.shape)} and {tuple(adjoints.shape)}"
        )
    kind = Dense()
    return hamiltonian_blocks(kind.patches(states), kind.adjoint_rows(adjoints), curvature)


def quadratic_form(blocks: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``phi^T Q phi`` for the rows ``(n, m)`` of ``phi``, given the blocks ``(n, m, m)`` of Q."""
    return torch.einsum("ci,cij,cj->", rows, blocks, rows)


def dense_quadratic_form(blocks: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``phi^T Q phi`` for ``phi = [W | b]`` given the blocks ``(n, n+1, n+1)`` of Q."""
    return quadratic_form(blocks, torch.cat([weight.reshape(weight.shape[0], -1), bias[:, None]], dim=1))
