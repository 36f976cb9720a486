"""Hessian of the Hamiltonian for an inserted dense layer, as its diagonal blocks.

For an inserted layer ``f(x; W, b) = sigma(W x + b)`` at location l, with
``u = [x; 1]`` and ``w_r`` the r-th row of ``[W | b]``, METHOD.md section 2 gives::

    phi^T Q phi = sigma''(0) * sum_s sum_r p_r^s (w_r . u^s)^2

so Q is block diagonal with one ``(n+1) x (n+1)`` block per output neuron r::

    B_r = sigma''(0) * sum_s p_r^s u^s u^s^T

The dense ``n(n+1) x n(n+1)`` matrix is never formed.
"""

from __future__ import annotations

import torch


def augment(states: torch.Tensor) -> torch.Tensor:
    """Append a constant 1 to the last dimension: ``(..., n) -> (..., n + 1)``."""
    ones = torch.ones(*states.shape[:-1], 1, dtype=states.dtype, device=states.device)
    return torch.cat([states, ones], dim=-1)


def dense_hamiltonian_blocks(states: torch.Tensor, adjoints: torch.Tensor, curvature: float) -> torch.Tensor:
    """The blocks ``B_r`` summed over the samples given.

    Args:
        states: ``(..., S, n)`` states x_l (leading dims are e.g. locations).
        adjoints: ``(..., S, n)`` adjoints p_l, already scaled as the caller wants.
        curvature: sigma''(0) of the inserted layer's activation.

    Returns:
        ``(..., n, n + 1, n + 1)``: block ``r`` is ``curvature * sum_s p_r^s u^s u^s^T``.
    """
    if states.shape != adjoints.shape:
        raise ValueError(
            f"states and adjoints must have the same shape, got {tuple(states.shape)} and {tuple(adjoints.shape)}"
        )
    u = augment(states)
    # (..., S, n, n+1) weighted copies would cost S*n*(n+1) memory; einsum contracts over S.
    return curvature * torch.einsum("...sr,...si,...sj->...rij", adjoints, u, u)


def dense_quadratic_form(blocks: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``phi^T Q phi`` for ``phi = [W | b]`` given the blocks ``(n, n+1, n+1)`` of Q."""
    rows = torch.cat([weight, bias[:, None]], dim=1)  # (n, n+1)
    return torch.einsum("ri,rij,rj->", rows, blocks, rows)
