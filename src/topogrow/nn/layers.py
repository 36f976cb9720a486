"""The residual layer that a network grows by: ``x -> x + sigma(W x + b)``."""

from __future__ import annotations

import torch
from torch import nn


class ResidualDense(nn.Module):
    """``x -> x + sigma(W x + b)`` on ``(B, n)`` states; the identity when W = 0, b = 0."""

    def __init__(self, width: int, activation: nn.Module) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.activation(self.linear(x))
