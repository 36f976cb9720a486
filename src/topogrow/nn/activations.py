"""Activations for inserted layers: sigma(0) = 0, sigma'(0) = 0, sigma''(0) != 0.

With these, a layer ``x + sigma(eps W x + eps b)`` is the identity at eps = 0 and
its first-order effect on the loss vanishes, so the topological derivative is the
second-order term of METHOD.md section 2.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from topogrow._registry import Registry

#: Activations for inserted layers by name: classes whose instances are the activation.
ACTIVATIONS: Registry[type[nn.Module]] = Registry("activation")


@ACTIVATIONS.register("silu-tanh")
class SiLUTanh(nn.Module):
    """``sigma(z) = 2 SiLU(z) - tanh(z)``: sigma''(0) = 1, smooth, ReLU-like for large z."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return 2 * nn.functional.silu(z) - torch.tanh(z)


@ACTIVATIONS.register("z-tanh")
class ZTanh(nn.Module):
    """``sigma(z) = z tanh(z)``: sigma''(0) = 2, even, grows like the absolute value of z."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z * torch.tanh(z)


def activation_curvature(activation: Callable[[torch.Tensor], torch.Tensor], tol: float = 1e-8) -> float:
    """Check an activation for insertion and return sigma''(0).

    Raises ``ValueError`` saying why if sigma(0) != 0, sigma'(0) != 0 (the inserted
    layer would not start as the identity / the expansion would be first order),
    or sigma''(0) = 0 (the topological derivative would vanish identically).
    """
    z = torch.zeros((), dtype=torch.float64, requires_grad=True)
    value = activation(z)
    if not isinstance(value, torch.Tensor) or value.shape != z.shape:
        raise ValueError("the activation must map a tensor to a tensor of the same shape")
    (first,) = torch.autograd.grad(value, z, create_graph=True)
    name = getattr(activation, "__name__", type(activation).__name__)
    if abs(value.item()) > tol:
        raise ValueError(
            f"activation {name} has sigma(0) = {value.item():.3g}; an inserted layer needs "
            "sigma(0) = 0 so that zero parameters leave the network unchanged"
        )
    if abs(first.item()) > tol:
        raise ValueError(
            f"activation {name} has sigma'(0) = {first.item():.3g}; an inserted layer needs "
            "sigma'(0) = 0 (e.g. 2*SiLU(z) - tanh(z)) for the second-order topological derivative"
        )
    if not first.requires_grad:
        raise ValueError(f"activation {name} has sigma''(0) = 0: the topological derivative would vanish")
    (second,) = torch.autograd.grad(first, z)
    if abs(second.item()) <= tol:
        raise ValueError(
            f"activation {name} has sigma''(0) = {second.item():.3g}; it must be non-zero or the "
            "topological derivative vanishes"
        )
    return second.item()


def resolve_activation(activation: str | nn.Module | None) -> nn.Module:
    """An activation module from a name in :data:`ACTIVATIONS`, a module, or ``None`` (default)."""
    if activation is None:
        return SiLUTanh()
    if isinstance(activation, str):
        return ACTIVATIONS[activation]()
    if isinstance(activation, nn.Module):
        return activation
    if callable(activation):
        return _Lambda(activation)
    raise TypeError(f"activation must be a name, an nn.Module or a callable, got {type(activation).__name__}")


class _Lambda(nn.Module):
    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn
        self.__name__ = getattr(fn, "__name__", "activation")

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.fn(z)


def prepare_activation(activation: str | nn.Module | None) -> tuple[str, nn.Module, float]:
    """``(name, module, sigma''(0))`` for a model's inserted layers, checked.

    ``name`` is the registry name, ``"silu-tanh"`` for ``None``, or ``"custom"``.
    """
    name = activation if isinstance(activation, str) else ("silu-tanh" if activation is None else "custom")
    module = resolve_activation(activation)
    return name, module, activation_curvature(module)
