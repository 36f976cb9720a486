"""Kinds of inserted layer whose Hamiltonian Hessian has a closed form.

Each kind computes ``f(x; W, b) = sigma(W . patch(x) + b)`` at some positions, for
example once per sample (dense), once per pixel (convolution) or once per token.
With ``u`` the patch augmented by a constant 1 and ``p_c`` the adjoint of output
channel c at that position, METHOD.md gives one block per output channel::

    B_c = sigma''(0) * sum over samples and positions of p_c u u^T

A kind turns a state into its patches ``(B, P, m)`` and an adjoint into per-position
rows ``(B, P, n)``; :func:`topogrow.core.hamiltonian.hamiltonian_blocks` does the rest. A kind
may also give the patches at some positions only (``patches_at``), for a pass that samples them.
A layer's parameters are ``rows``: ``(n, m)`` = ``[W reshaped to (n, m - 1) | b]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch.nn import functional as F


def augment(patches: torch.Tensor) -> torch.Tensor:
    """Append a constant 1 to the last dimension: ``(..., m - 1) -> (..., m)``."""
    ones = torch.ones(*patches.shape[:-1], 1, dtype=patches.dtype, device=patches.device)
    return torch.cat([patches, ones], dim=-1)


class LayerKind(Protocol):
    """How a kind of inserted layer sees its input state and its output adjoint."""

    def patches(self, state: torch.Tensor) -> torch.Tensor:
        """The augmented patches ``u`` the layer reads, ``(B, P, m)``: P positions, patch length + 1."""
        ...

    def adjoint_rows(self, adjoint: torch.Tensor) -> torch.Tensor:
        """The adjoint at the same positions, ``(B, P, n)``: one entry per output neuron or channel."""
        ...


@dataclass(frozen=True)
class Dense:
    """``x -> x + sigma(W x + b)`` on states ``(B, n)``: one position per sample."""

    def patches(self, state: torch.Tensor) -> torch.Tensor:
        """``(B, 1, n + 1)``: each state with a 1 appended."""
        return augment(state)[:, None, :]

    def adjoint_rows(self, adjoint: torch.Tensor) -> torch.Tensor:
        """``(B, 1, n)``: the adjoint of each sample."""
        return adjoint[:, None, :]


@dataclass(frozen=True)
class Conv2d:
    """``x -> x + sigma(K * x + b)`` on ``(B, C, H, W)``, C -> C channels, "same" padding.

    The patch at a pixel is the unfolded ``C k k`` neighbourhood; rows are
    ``[K reshaped to (C, C k k) | b]``.
    """

    kernel_size: int = 3

    def patches(self, state: torch.Tensor) -> torch.Tensor:
        """``(B, H W, C k k + 1)``: the unfolded neighbourhood of every pixel, with a 1 appended."""
        k = self.kernel_size
        unfolded = F.unfold(state, kernel_size=k, padding=k // 2)  # (B, C k k, H W)
        return augment(unfolded.transpose(1, 2))

    def adjoint_rows(self, adjoint: torch.Tensor) -> torch.Tensor:
        """``(B, H W, C)``: the adjoint at every pixel."""
        return adjoint.flatten(2).transpose(1, 2)  # (B, H W, C)

    def patches_at(self, state: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """``patches(state)`` at the positions ``index`` ``(B, K)`` (flat pixel indices) only:
        ``(B, K, m)``, without unfolding the other pixels."""
        k, pad = self.kernel_size, self.kernel_size // 2
        b, c, _, width = state.shape
        padded = F.pad(state, (pad, pad, pad, pad))
        offsets = torch.arange(k, device=state.device)
        rows = (index // width)[:, :, None, None] + offsets[:, None]  # (B, K, k, 1)
        cols = (index % width)[:, :, None, None] + offsets[None, :]  # (B, K, 1, k)
        samples = torch.arange(b, device=state.device)[:, None, None, None]
        windows = padded[samples, :, rows, cols]  # (B, K, k, k, C): the indexed dimensions come first
        return augment(windows.permute(0, 1, 4, 2, 3).reshape(b, index.shape[1], c * k * k))


@dataclass(frozen=True)
class Token:
    """``x -> x + sigma(W LN(x) + b)`` on tokens ``(B, T, d)``; LN has no affine parameters."""

    eps: float = 1e-5

    def patches(self, state: torch.Tensor) -> torch.Tensor:
        """``(B, T, d + 1)``: every token normalised (LayerNorm without affine parameters), with a 1 appended."""
        return augment(F.layer_norm(state, state.shape[-1:], eps=self.eps))

    def adjoint_rows(self, adjoint: torch.Tensor) -> torch.Tensor:
        """``(B, T, d)``: the adjoint of every token."""
        return adjoint
