"""``ResidualMLP``: stem, residual dense layers, head; grows by ``insert_layer``."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from topogrow.core.layer_kinds import Dense
from topogrow.nn.activations import prepare_activation
from topogrow.nn.blocks import block_name, rebuild_block
from topogrow.nn.growable import LayerListModel
from topogrow.nn.layers import ResidualDense


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _block_names(value: Any, depth: int, name: str = "blocks") -> list[str | None]:
    """``blocks`` of a spec: one entry per residual layer, a registered block name or ``None``."""
    if value is None:
        return [None] * depth
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or len(value) != depth:
        raise ValueError(f"{name} must list {depth} entries (a block name or None per layer), got {value!r}")
    for index, entry in enumerate(value):
        if entry is not None and not isinstance(entry, str):
            raise ValueError(f"{name}[{index}] must be a block name or None, got {entry!r}")
    return list(value)


class ResidualMLP(LayerListModel):
    """A residual MLP viewed as a discrete dynamical system (METHOD.md section 1).

    ``x_0 = tanh(A a + c)`` lifts the input to ``width``; ``depth`` residual layers
    ``x_t = x_{t-1} + sigma(W_t x_{t-1} + b_t)``; a linear head. Insertion location
    l (``0..depth``) is the state x_l: 0 is right after the stem, ``depth`` right
    before the head.

    Args:
        in_features: input dimension.
        width: state dimension n.
        depth: number of residual layers T (may be 0).
        out_features: output dimension.
        activation: sigma for the residual layers: a name (``"silu-tanh"``, the
            default 2 SiLU(z) - tanh(z), or ``"z-tanh"``), a module or a callable with
            sigma(0) = sigma'(0) = 0 and sigma''(0) != 0.
        blocks: per residual layer, the registered block (:data:`topogrow.nn.blocks.BLOCKS`)
            inserted there, or ``None`` for a dense layer; as :meth:`spec` records it, to
            rebuild a model grown by blocks. ``None`` (the default): dense layers only.
    """

    def __init__(
        self,
        in_features: int,
        width: int,
        depth: int,
        out_features: int,
        activation: str | nn.Module | None = None,
        blocks: list[str | None] | None = None,
    ) -> None:
        super().__init__()
        self.in_features = _positive_int("in_features", in_features)
        self.width = _positive_int("width", width)
        self.out_features = _positive_int("out_features", out_features)
        _positive_int("depth", depth, minimum=0)
        self.activation_name, self._activation, self.activation_curvature = prepare_activation(activation)
        self.stem = nn.Sequential(nn.Linear(in_features, width), nn.Tanh())
        names = _block_names(blocks, depth)
        self.layers = nn.ModuleList(self._new_layer() for _ in range(depth))
        self.head = nn.Linear(width, out_features)
        for index, name in enumerate(names):
            if name is not None:
                self.layers[index] = rebuild_block(name, self, index)

    def _new_layer(self) -> ResidualDense:
        return ResidualDense(self.width, copy.deepcopy(self._activation))

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"expected input of shape (batch, {self.in_features}), got {tuple(x.shape)}")

    def forward_states(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Prediction ``(B, out)`` and the states ``[x_0, ..., x_T]``, each ``(B, width)``."""
        self._check_input(x)
        state = self.stem(x)
        states = [state]
        for layer in self.layers:
            state = layer(state)
            states.append(state)
        return self.head(state), states

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        state = self.stem(x)
        for layer in self.layers:
            state = layer(state)
        return self.head(state)

    def insert_layer(
        self, location: int, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None
    ) -> ResidualDense:
        """Insert ``x -> x + sigma(W x + b)`` after state ``location``; zeros by default.

        With zero weight and bias the network's outputs are exactly unchanged.
        Returns the new layer (already on the model's device and dtype).
        """
        self._check_location(location)
        n = self.width
        reference = self.head.weight
        weight = torch.zeros(n, n) if weight is None else torch.as_tensor(weight)
        bias = torch.zeros(n) if bias is None else torch.as_tensor(bias)
        if weight.shape != (n, n):
            raise ValueError(f"weight must have shape ({n}, {n}), got {tuple(weight.shape)}")
        if bias.shape != (n,):
            raise ValueError(f"bias must have shape ({n},), got {tuple(bias.shape)}")
        if not (torch.isfinite(weight).all() and torch.isfinite(bias).all()):
            raise ValueError("weight and bias of an inserted layer must be finite")
        layer = self._new_layer().to(device=reference.device, dtype=reference.dtype)
        layer.load_rows(torch.cat([weight, bias[:, None]], dim=1))
        self.layers.insert(location, layer)
        return layer

    def insert_block(self, location: int, module: nn.Module) -> nn.Module:
        """Insert a residual module (``x -> x + g(x)``, e.g. a ``ResidualBlock``) after state ``location``.

        The module is moved to the model's device and dtype and must map ``(B, width)``
        to ``(B, width)``; the depth grows by one. Returns the module. :meth:`spec` records
        a named :class:`~topogrow.nn.blocks.ResidualBlock` by its name; any other module
        only as a layer, so ``ResidualMLP(**spec)`` rebuilds it as a dense layer.
        """
        self._check_location(location)
        if not isinstance(module, nn.Module):
            raise TypeError(f"expected an nn.Module, got {type(module).__name__}")
        reference = self.head.weight
        module = module.to(device=reference.device, dtype=reference.dtype)
        probe = torch.zeros(1, self.width, device=reference.device, dtype=reference.dtype)
        with torch.no_grad():
            out = module(probe)
        if not isinstance(out, torch.Tensor) or out.shape != probe.shape:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"an inserted module must map (batch, {self.width}) to the same shape, got {shape}")
        self.layers.insert(location, module)
        return module

    def insertion_kind(self, location: int) -> Dense:
        """Every location takes a dense layer (see :mod:`topogrow.core.layer_kinds`)."""
        return Dense()

    def insertion_shape(self, location: int) -> tuple[int, int]:
        """Shape ``(n, m)`` of the rows ``[W | b]`` of a layer inserted at ``location``."""
        return self.width, self.width + 1

    def spec(self) -> dict[str, Any]:
        """The architecture as a JSON-able dict (rebuild with ``ResidualMLP(**spec)``).

        ``blocks`` (the registered block name of each layer, ``None`` for dense layers)
        is there only when a named block was inserted.
        """
        spec: dict[str, Any] = {
            "in_features": self.in_features,
            "width": self.width,
            "depth": self.depth,
            "out_features": self.out_features,
            "activation": self.activation_name,
        }
        names = [block_name(layer) for layer in self.layers]
        if any(name is not None for name in names):
            spec["blocks"] = names
        return spec
