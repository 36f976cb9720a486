"""``ResidualCNN``: stem, stages of residual convolutions, pooling, head; grows by ``insert_layer``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from topogrow._validation import check_int
from topogrow.core.layer_kinds import Conv2d
from topogrow.nn.blocks import block_name, rebuild_block
from topogrow.nn.growable import GrowableModel, check_square_images, register_model
from topogrow.nn.layers import ResidualConv
from topogrow.nn.mlp import _block_names

#: The spatial size of the probe that checks an inserted module's shape when the model
#: has no fixed ``image_size`` ("same" convolutions accept any size).
PROBE_SIZE = 8


def _int_sequence(name: str, value: Any, minimum: int) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) == 0:
        raise ValueError(f"{name} must be a non-empty sequence of integers >= {minimum}, got {value!r}")
    return tuple(check_int(f"{name}[{i}]", v, minimum=minimum) for i, v in enumerate(value))


def _image_size(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(f"image_size must be None, an integer or a pair (H, W) of integers >= 1, got {value!r}")
    return check_int("image_size[0]", value[0], minimum=1), check_int("image_size[1]", value[1], minimum=1)


@register_model("cnn")
class ResidualCNN(GrowableModel):
    """A residual CNN viewed as a discrete dynamical system (METHOD.md section 1).

    ``x_0 = tanh(conv(a))`` lifts the image to ``channels[0]``; stage i holds
    ``depths[i]`` residual layers ``x -> x + sigma(K * x + b)`` ("same" padding,
    ``channels[i]`` channels); between stages a stride-2 3x3 convolution and tanh
    change the channel count and halve the resolution; then global average
    pooling and a linear head.

    Insertion locations are all states inside stages: stage i has ``depths[i] + 1``
    positions (0 is right after the stem/downsampling, ``depths[i]`` right before the
    next downsampling or the pooling), flattened in order into ``0..len(locations) - 1``.
    :meth:`stage_position` maps a flat location to ``(stage, position)``.

    Args:
        in_channels: channels of the input images.
        channels: channel count of each stage.
        depths: residual layers in each stage (each may be 0).
        out_features: output dimension.
        kernel_size: odd kernel size of the stem and residual convolutions.
        activation: sigma for the residual layers, as for ``ResidualMLP``.
        image_size: if given (``int`` or ``(H, W)``), inputs must have this size.
        blocks: per stage, per residual layer, the registered block
            (:data:`topogrow.nn.blocks.BLOCKS`) inserted there or ``None`` for a
            convolution layer; as :meth:`spec` records it. ``None``: convolutions only.
    """

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int] = (8, 16),
        depths: Sequence[int] = (1, 1),
        out_features: int = 10,
        kernel_size: int = 3,
        activation: str | nn.Module | None = None,
        image_size: int | Sequence[int] | None = None,
        blocks: Sequence[Sequence[str | None]] | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels, minimum=1)
        self.channels = _int_sequence("channels", channels, 1)
        depths = _int_sequence("depths", depths, 0)
        if len(depths) != len(self.channels):
            raise ValueError(
                f"depths must give one depth per stage ({len(self.channels)} stages in channels), got {list(depths)}"
            )
        self.out_features = check_int("out_features", out_features, minimum=1)
        self.kernel_size = check_int("kernel_size", kernel_size, minimum=1)
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd (for 'same' padding), got {kernel_size}")
        self.image_size = _image_size(image_size)
        self._init_activation(activation)

        k = self.kernel_size
        self.stem = nn.Sequential(nn.Conv2d(in_channels, self.channels[0], k, padding=k // 2), nn.Tanh())
        self.stages = nn.ModuleList(
            nn.ModuleList(self._conv_layer(c) for _ in range(d)) for c, d in zip(self.channels, depths, strict=True)
        )
        self.downsamples = nn.ModuleList(
            nn.Sequential(nn.Conv2d(a, b, 3, stride=2, padding=1), nn.Tanh())
            for a, b in zip(self.channels[:-1], self.channels[1:], strict=True)
        )
        self.head = nn.Linear(self.channels[-1], out_features)
        if blocks is not None:
            if isinstance(blocks, (str, bytes)) or not isinstance(blocks, Sequence) or len(blocks) != len(depths):
                raise ValueError(f"blocks must give one list per stage ({len(depths)} stages), got {blocks!r}")
            start = 0
            for stage, (names, depth) in enumerate(zip(blocks, depths, strict=True)):
                for position, name in enumerate(_block_names(names, depth, f"blocks[{stage}]")):
                    if name is not None:
                        self.stages[stage][position] = rebuild_block(name, self, start + position)
                start += depth + 1

    def _conv_layer(self, channels: int) -> ResidualConv:
        return ResidualConv(channels, self.kernel_size, self.new_activation())

    # ------------------------------------------------------------ structure
    @property
    def depths(self) -> tuple[int, ...]:
        """The number of residual layers in each stage."""
        return tuple(len(stage) for stage in self.stages)

    @property
    def depth(self) -> int:
        """The total number of residual layers T."""
        return sum(self.depths)

    @property
    def layers(self) -> tuple[ResidualConv, ...]:
        """Every residual layer, stage by stage."""
        return tuple(layer for stage in self.stages for layer in stage)

    @property
    def locations(self) -> range:
        """Flat insertion locations: ``depths[i] + 1`` positions per stage, in order."""
        return range(self.depth + len(self.stages))

    def stage_position(self, location: int) -> tuple[int, int]:
        """``(stage, position)`` of a flat location; position p is the state after p layers of the stage."""
        location = self._check_location(location)
        for stage, depth in enumerate(self.depths):
            if location <= depth:
                return stage, location
            location -= depth + 1
        raise AssertionError("unreachable")  # pragma: no cover

    def _check_input(self, x: torch.Tensor) -> None:
        size = "H, W" if self.image_size is None else f"{self.image_size[0]}, {self.image_size[1]}"
        ok = x.ndim == 4 and x.shape[1] == self.in_channels
        if ok and self.image_size is not None:
            ok = tuple(x.shape[2:]) == self.image_size
        if not ok:
            raise ValueError(f"expected input of shape (batch, {self.in_channels}, {size}), got {tuple(x.shape)}")

    # -------------------------------------------------------------- forward
    def _run(self, x: torch.Tensor, states: list[torch.Tensor] | None) -> torch.Tensor:
        self._check_input(x)
        state = self.stem(x)
        for i, stage in enumerate(self.stages):
            if i > 0:
                state = self.downsamples[i - 1](state)
            if states is not None:
                states.append(state)
            for layer in stage:
                state = layer(state)
                if states is not None:
                    states.append(state)
        return self.head(state.mean(dim=(2, 3)))

    def forward_states(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Prediction ``(B, out)`` and one state ``(B, C_i, H_i, W_i)`` per location, in order."""
        states: list[torch.Tensor] = []
        prediction = self._run(x, states)
        return prediction, states

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, None)

    # --------------------------------------------------------------- growth
    def insert_layer(
        self, location: int, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None
    ) -> ResidualConv:
        """Insert ``x -> x + sigma(K * x + b)`` at flat ``location``; zeros by default.

        ``weight`` is ``(C, C, k, k)`` or flat ``(C, C k k)`` (channel-major, as
        ``F.unfold`` and :meth:`TopologicalDerivative.layer` give it); ``bias`` is ``(C,)``.
        With zero weight and bias the network's outputs are exactly unchanged.
        Returns the new layer (already on the model's device and dtype).
        """
        return super().insert_layer(location, weight, bias)

    def _new_layer(self, location: int) -> ResidualConv:
        return self._conv_layer(self.channels[self.stage_position(location)[0]])

    def _weight_shapes(self, location: int) -> tuple[tuple[int, ...], ...]:
        """``(C, C, k, k)`` or flat ``(C, C k k)``."""
        c, k = self.channels[self.stage_position(location)[0]], self.kernel_size
        return (c, c, k, k), (c, c * k * k)

    def _state_shape(self, location: int) -> tuple[int, ...]:
        """``(C, H, W)`` of the stage; ``H = W =`` :data:`PROBE_SIZE` without an ``image_size``."""
        stage = self.stage_position(location)[0]
        if self.image_size is None:
            return self.channels[stage], PROBE_SIZE, PROBE_SIZE
        height, width = self.image_size
        for _ in range(stage):  # each downsampling: a stride-2 3x3 convolution with padding 1
            height, width = (height - 1) // 2 + 1, (width - 1) // 2 + 1
        return self.channels[stage], height, width

    def _state_shape_text(self, location: int) -> str:
        c, height, width = self._state_shape(location)
        return f"(batch, {c}, H, W)" if self.image_size is None else f"(batch, {c}, {height}, {width})"

    def _place(self, location: int, module: nn.Module) -> None:
        stage, position = self.stage_position(location)
        self.stages[stage].insert(position, module)

    def _take(self, location: int) -> nn.Module:
        stage, position = self.stage_position(location)
        if position >= len(self.stages[stage]):
            raise ValueError(f"no residual layer after state {location} (the last of stage {stage})")
        layer = self.stages[stage][position]
        del self.stages[stage][position]
        return layer

    def insertion_kind(self, location: int) -> Conv2d:
        """Every location takes a "same" convolution (see :mod:`topogrow.core.layer_kinds`)."""
        self.stage_position(location)
        return Conv2d(self.kernel_size)

    def insertion_shape(self, location: int) -> tuple[int, int]:
        """Shape ``(C, C k k + 1)`` of the rows ``[K | b]`` of a layer inserted at ``location``."""
        c = self.channels[self.stage_position(location)[0]]
        return c, c * self.kernel_size**2 + 1

    @classmethod
    def for_data(cls, input_shape, out_features, width, depth, activation=None) -> ResidualCNN:
        """Two stages of ``width`` and ``2 * width`` channels, ``depth`` layers each (or a pair),
        on square images ``(C, H, H)``."""
        check_square_images(input_shape, "cnn")
        depths = (depth, depth) if isinstance(depth, int) else tuple(depth)
        return cls(input_shape[0], (width, 2 * width), depths, out_features, activation=activation)

    def spec(self) -> dict[str, Any]:
        """The architecture as a JSON-able dict (rebuild with ``ResidualCNN(**spec)``).

        ``blocks`` (per stage, the registered block name of each layer, ``None`` for
        convolutions) is there only when a named block was inserted.
        """
        spec: dict[str, Any] = {
            "in_channels": self.in_channels,
            "channels": list(self.channels),
            "depths": list(self.depths),
            "out_features": self.out_features,
            "kernel_size": self.kernel_size,
            "activation": self.activation_name,
            "image_size": None if self.image_size is None else list(self.image_size),
        }
        names = [[block_name(layer) for layer in stage] for stage in self.stages]
        if any(name is not None for stage in names for name in stage):
            spec["blocks"] = names
        return spec
