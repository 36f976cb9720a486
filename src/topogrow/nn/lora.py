"""Low-rank adapters (LoRA, Hu et al. 2021), the parameter-efficient fine-tuning baseline of
:func:`topogrow.transfer.adapt`.

Each adapted weight ``W`` (``nn.Linear``: ``(out, in)``; ``nn.Conv2d``: ``(out, in, k, k)``)
becomes ``W + B A`` reshaped to ``W``'s shape, with ``A`` ``(rank, fan_in)`` drawn like a
Linear layer's weight and ``B`` ``(out, rank)`` zero, so the adapted network starts as the
pretrained one. The update is a :func:`torch.nn.utils.parametrize` parametrization: the
pretrained weight stays in ``parametrizations.weight.original`` untouched.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrize

from topogrow._validation import check_int


class LowRankUpdate(nn.Module):
    """The parametrization ``W -> W + (B A).view_as(W)``; ``A`` is ``down``, ``B`` is ``up``."""

    def __init__(self, weight: torch.Tensor, rank: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        check_int("rank", rank, minimum=1)
        out_features, fan_in = weight.shape[0], weight[0].numel()
        bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's default range
        down = torch.rand(rank, fan_in, generator=generator, dtype=weight.dtype) * (2 * bound) - bound
        self.down = nn.Parameter(down.to(weight.device))
        self.up = nn.Parameter(torch.zeros(out_features, rank, dtype=weight.dtype, device=weight.device))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + (self.up @ self.down).view_as(weight)


def adaptable_modules(model: nn.Module) -> list[nn.Linear | nn.Conv2d]:
    """Every ``nn.Linear`` and ``nn.Conv2d`` inside the model's residual layers (``model.layers``)."""
    return [
        module
        for layer in model.layers
        for module in layer.modules()
        if isinstance(module, (nn.Linear, nn.Conv2d)) and not parametrize.is_parametrized(module, "weight")
    ]


def adapter_cost(model: nn.Module) -> int:
    """Trainable parameters per unit of rank: the sum of ``out + fan_in`` over :func:`adaptable_modules`."""
    return sum(m.weight.shape[0] + m.weight[0].numel() for m in adaptable_modules(model))


def rank_for_budget(model: nn.Module, n_parameters: int) -> int:
    """The rank whose adapters on every residual layer have closest to ``n_parameters`` parameters (>= 1)."""
    cost = adapter_cost(model)
    if cost == 0:
        raise ValueError(
            f"{type(model).__name__} has no residual layers to adapt (depth {getattr(model, 'depth', 0)}); "
            "a low-rank adapter needs a pretrained network with at least one residual layer"
        )
    return max(1, round(n_parameters / cost))


def add_low_rank_adapters(model: nn.Module, rank: int, generator: torch.Generator | None = None) -> list[LowRankUpdate]:
    """Attach a :class:`LowRankUpdate` of ``rank`` to every adaptable weight; returns them.

    The adapters' parameters require gradients; nothing else is changed.
    """
    modules = adaptable_modules(model)
    if not modules:
        raise ValueError(f"{type(model).__name__} has no residual layers to adapt")
    adapters = []
    for module in modules:
        adapter = LowRankUpdate(module.weight.detach(), rank, generator)
        parametrize.register_parametrization(module, "weight", adapter)
        adapters.append(adapter)
    return adapters
