"""``ResidualMLP``: stem, residual dense layers, head; grows by ``insert_layer``."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from topogrow._validation import check_int
from topogrow.core.layer_kinds import Dense
from topogrow.nn.blocks import block_name, rebuild_block
from topogrow.nn.growable import GrowableModel, register_model
from topogrow.nn.layers import ResidualDense


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


@register_model("mlp")
class ResidualMLP(GrowableModel):
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
        self.in_features = check_int("in_features", in_features, minimum=1)
        self.width = check_int("width", width, minimum=1)
        self.out_features = check_int("out_features", out_features, minimum=1)
        check_int("depth", depth, minimum=0)
        self._init_activation(activation)
        self.stem = nn.Sequential(nn.Linear(in_features, width), nn.Tanh())
        names = _block_names(blocks, depth)
        self.layers = nn.ModuleList(self._new_layer(index) for index in range(depth))
        self.head = nn.Linear(width, out_features)
        for index, name in enumerate(names):
            if name is not None:
                self.layers[index] = rebuild_block(name, self, index)

    def _new_layer(self, location: int) -> ResidualDense:
        return ResidualDense(self.width, self.new_activation())

    def _state_shape(self, location: int) -> tuple[int, ...]:
        return (self.width,)

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

    def insertion_kind(self, location: int) -> Dense:
        """Every location takes a dense layer (see :mod:`topogrow.core.layer_kinds`)."""
        return Dense()

    def insertion_shape(self, location: int) -> tuple[int, int]:
        """Shape ``(n, m)`` of the rows ``[W | b]`` of a layer inserted at ``location``."""
        return self.width, self.width + 1

    @classmethod
    def for_data(cls, input_shape, out_features, width, depth, activation=None) -> ResidualMLP:
        """Inputs flattened to ``prod(input_shape)`` features."""
        return cls(math.prod(input_shape), width, depth, out_features, activation)

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
