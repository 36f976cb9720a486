"""Residual layers that a network grows by, each the identity at zero parameters.

Every layer exposes its parameters as ``rows`` ``(n, m)`` = ``[W reshaped to
(n, m - 1) | b]``, the layout of the Hamiltonian-Hessian blocks in
:mod:`topogrow.core.layer_kinds`, so an eigenvector is loaded in one call.
"""

from __future__ import annotations

import torch
from torch import nn


class _RowsMixin:
    """``rows()`` / ``load_rows()`` for a layer whose affine map is ``self.affine``."""

    affine: nn.Module

    def rows(self) -> torch.Tensor:
        weight = self.affine.weight
        return torch.cat([weight.reshape(weight.shape[0], -1), self.affine.bias[:, None]], dim=1).detach()

    @torch.no_grad()
    def load_rows(self, rows: torch.Tensor) -> None:
        """Set ``[W | b]`` from ``rows`` ``(n, m)`` (any dtype/device; copied)."""
        weight = self.affine.weight
        expected = (weight.shape[0], weight[0].numel() + 1)
        if tuple(rows.shape) != expected:
            raise ValueError(f"rows must have shape {expected}, got {tuple(rows.shape)}")
        weight.copy_(rows[:, :-1].reshape(weight.shape))
        self.affine.bias.copy_(rows[:, -1])

    def load_direction(self, direction: torch.Tensor) -> None:
        """The growth loop's entry point: for row-kind layers, the same as :meth:`load_rows`."""
        self.load_rows(direction)


class ResidualDense(_RowsMixin, nn.Module):
    """``x -> x + sigma(W x + b)`` on ``(B, n)`` states; the identity when W = 0, b = 0."""

    def __init__(self, width: int, activation: nn.Module) -> None:
        super().__init__()
        self.affine = nn.Linear(width, width)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.activation(self.affine(x))


class ResidualConv(_RowsMixin, nn.Module):
    """``x -> x + sigma(K * x + b)`` on ``(B, C, H, W)`` states, C -> C channels, "same" padding.

    The identity when K = 0, b = 0. Rows are ``[K reshaped to (C, C k k) | b]``: the
    channel-major order of ``F.unfold``, the layout of
    :class:`topogrow.core.layer_kinds.Conv2d` patches.
    """

    def __init__(self, channels: int, kernel_size: int, activation: nn.Module) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd for 'same' padding, got {kernel_size}")
        self.affine = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.activation(self.affine(x))
