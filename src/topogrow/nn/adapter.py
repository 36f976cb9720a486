"""Your own residual network, growable with one call: :func:`as_growable`.

A network ``stem -> blocks -> head`` whose blocks are residual (``x -> x + g(x)``, keeping the
state's shape) is the discrete dynamical system of METHOD.md: ``x_0 = stem(a)``, ``x_t`` the
state after block t, the prediction ``head(x_T)``. :func:`as_growable` wraps the user's modules,
as they are, into a :class:`GrowableNetwork` (a :class:`~topogrow.nn.GrowableModel`), so that the
growth loop inserts the library's closed-form layers (or registered blocks) among the user's
blocks::

    model = as_growable(stem, [Block(16), Block(16)], head)
    model = as_growable(nn.Sequential(stem, Block(16), Block(16), head))
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from topogrow._validation import check_int, one_line
from topogrow.core.layer_kinds import Conv2d, Dense, Token
from topogrow.nn.blocks import block_name
from topogrow.nn.growable import GrowableModel
from topogrow.nn.layers import ResidualConv, ResidualDense

__all__ = ["GrowableNetwork", "as_growable"]

#: The state ranks (one sample's state) that closed-form layers are inserted into, and their names.
_STATE_KINDS = {1: "(batch, n)", 2: "(batch, T, d)", 3: "(batch, C, H, W)"}


def _shape_text(shape: tuple[int, ...]) -> str:
    """One sample's shape as messages say it: ``(batch, ...)``."""
    return f"(batch, {', '.join(map(str, shape))})" if shape else "(batch,)"


@contextmanager
def _evaluating(module: nn.Module) -> Iterator[None]:
    """Eval mode and no gradients inside; afterwards every submodule's training flag as it was."""
    flags = [(child, child.training) for child in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for child, training in flags:
            child.training = training


def _check_module(name: str, value: Any) -> nn.Module:
    if not isinstance(value, nn.Module):
        raise TypeError(f"expected the {name} to be an nn.Module, got {type(value).__name__}")
    return value


def _block_list(blocks: Any) -> list[nn.Module]:
    """The user's residual blocks as a list (the same objects)."""
    if isinstance(blocks, nn.Module) and not isinstance(blocks, (nn.ModuleList, nn.Sequential)):
        raise TypeError(
            f"expected blocks to be an iterable of residual blocks (a list or an nn.ModuleList), got one "
            f"{type(blocks).__name__}; pass [block]"
        )
    if isinstance(blocks, (str, bytes)) or not isinstance(blocks, Iterable):
        raise TypeError(f"expected blocks to be an iterable of residual blocks, got {type(blocks).__name__}")
    blocks = list(blocks)
    for index, block in enumerate(blocks):
        if not isinstance(block, nn.Module):
            raise TypeError(f"expected blocks[{index}] to be an nn.Module, got {type(block).__name__}")
    return blocks


class GrowableNetwork(GrowableModel):
    """A residual network of the user's own modules that grows in depth: ``stem``, residual
    ``layers`` (the user's blocks, with the inserted layers among them), ``head``.

    States are ``x_0 = stem(a)`` and the output of every layer; location l (``0..depth``) is the
    state x_l: 0 right after the stem, ``depth`` right before the head. The layer inserted there
    is the library's closed-form layer for the state's shape: ``ResidualDense`` on ``(B, n)``,
    ``ResidualConv`` ("same", ``kernel_size``) on ``(B, C, H, W)``, ``ResidualToken`` on tokens
    ``(B, T, d)``; or any registered block (``GrowthConfig(block=...)``, the matrix-free path).
    Build it with :func:`as_growable`, which says how the state's shape is found.

    Save it with ``torch.save(model.state_dict(), path)``: the state dict records the insertions,
    and ``load_state_dict`` into the network built as before (``as_growable`` of fresh modules)
    replays them first. :func:`topogrow.save` and growth-run checkpoints cannot rebuild the
    user's modules from JSON, so they refuse it.

    Args:
        stem: the module that maps an input batch to the first state x_0.
        blocks: the user's residual blocks (each keeps the state's shape), possibly none.
        head: the module that maps the last state to the prediction.
        example_input: one batch (or one sample) of inputs: the network runs on it once (eval
            mode, no gradients, training flags restored) to find the state's shape.
        activation: sigma of inserted layers, as for ``ResidualMLP`` (default ``"silu-tanh"``).
        kernel_size: odd kernel size of inserted convolutions (states ``(B, C, H, W)``).
    """

    def __init__(
        self,
        stem: nn.Module,
        blocks: Iterable[nn.Module],
        head: nn.Module,
        *,
        example_input: Any = None,
        activation: str | nn.Module | None = None,
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        self.stem = _check_module("stem", stem)
        self.layers = nn.ModuleList(_block_list(blocks))
        self.head = _check_module("head", head)
        self.kernel_size = check_int("kernel_size", kernel_size, minimum=1)
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd (for 'same' padding), got {kernel_size}")
        self._init_activation(activation)
        if example_input is not None:
            shape = self._probe(example_input)
        elif isinstance(head, nn.Linear):
            shape = (head.in_features,)
            self._check_blocks(shape)
        else:
            raise ValueError(
                f"cannot tell the state's shape: pass example_input=... (a batch of inputs) or a head that is "
                f"an nn.Linear (got a {type(head).__name__})"
            )
        if len(shape) not in _STATE_KINDS:
            raise ValueError(
                f"the state after the stem has shape {_shape_text(shape)}; layers are inserted into states "
                f"{', '.join(_STATE_KINDS.values())}"
            )
        #: One sample's state shape: ``(n,)``, ``(T, d)`` or ``(C, H, W)``.
        self.state_shape: tuple[int, ...] = shape

    # ------------------------------------------------------------ the state's shape
    def _probe(self, example_input: Any) -> tuple[int, ...]:
        """One sample's state shape, from running ``example_input`` as a batch, else as one sample."""
        try:
            x = torch.as_tensor(example_input)
        except (TypeError, ValueError, RuntimeError) as error:
            raise TypeError(
                f"expected example_input to be a tensor (a batch of inputs), got {type(example_input).__name__} "
                f"({one_line(error)})"
            ) from None
        reference = next(self.parameters(), None)
        if reference is not None:
            x = x.to(device=reference.device, dtype=reference.dtype if x.is_floating_point() else x.dtype)
        failures = []
        with _evaluating(self):
            for batch in (x, x.unsqueeze(0)):
                try:
                    return self._probe_batch(batch)
                except _NotABatch as failure:
                    failures.append(str(failure))
        raise ValueError(
            f"example_input does not run through the network as a batch ({failures[0]}) "
            f"or as one sample ({failures[1]})"
        )

    def _probe_batch(self, x: torch.Tensor) -> tuple[int, ...]:
        """The state shape of one sample of the batch ``x``; ``_NotABatch`` if ``x`` is no batch."""
        if x.ndim == 0:
            raise _NotABatch("a scalar")
        state = self._run_probe("the stem", self.stem, x)
        if state.ndim < 2 or state.shape[0] != x.shape[0]:
            raise _NotABatch(f"the stem maps {tuple(x.shape)} to {tuple(state.shape)}, not a batch of states")
        shape = tuple(state.shape[1:])
        for index, block in enumerate(self.layers):
            out = self._run_probe(f"block {index} ({type(block).__name__})", block, state)
            self._check_block_shape(index, block, tuple(state.shape[1:]), out)
            state = out
        prediction = self._run_probe("the head", self.head, state)
        if prediction.ndim == 0 or prediction.shape[0] != x.shape[0]:
            raise _NotABatch(f"the head maps the states to {tuple(prediction.shape)}, not a batch of predictions")
        return shape

    @staticmethod
    def _run_probe(name: str, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        try:
            out = module(x)
        except Exception as error:  # the user's module: any error means it does not take this input
            raise _NotABatch(f"{name} fails: {one_line(error)}") from None
        if not isinstance(out, torch.Tensor):
            raise _NotABatch(f"{name} returns a {type(out).__name__}, not a tensor")
        return out

    def _check_blocks(self, shape: tuple[int, ...]) -> None:
        """Run the user's blocks on a zero state of ``shape`` (eval mode, no gradients): each must keep it."""
        reference = next(self.parameters(), None)
        probe = torch.zeros(2, *shape)
        if reference is not None:
            probe = probe.to(device=reference.device, dtype=reference.dtype)
        with _evaluating(self):
            for index, block in enumerate(self.layers):
                try:
                    out = block(probe)
                except Exception as error:  # the user's module
                    raise ValueError(
                        f"block {index} ({type(block).__name__}) fails on states {_shape_text(shape)} (the "
                        f"head's in_features): {one_line(error)}; pass example_input=... (a batch of inputs)"
                    ) from None
                self._check_block_shape(index, block, shape, out)

    @staticmethod
    def _check_block_shape(index: int, block: nn.Module, shape: tuple[int, ...], out: Any) -> None:
        got = _shape_text(tuple(out.shape[1:])) if isinstance(out, torch.Tensor) else f"a {type(out).__name__}"
        if not isinstance(out, torch.Tensor) or tuple(out.shape[1:]) != shape:
            raise ValueError(
                f"block {index} ({type(block).__name__}) maps states {_shape_text(shape)} to {got}: a residual "
                "block x -> x + g(x) must keep the state's shape"
            )

    # ------------------------------------------------------------ forward
    def forward_states(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The prediction and the states ``[x_0, ..., x_T]``, each ``(B, *state_shape)``."""
        state = self.stem(x)
        states = [state]
        for layer in self.layers:
            state = layer(state)
            states.append(state)
        return self.head(state), states

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``head(layers(stem(x)))``."""
        state = self.stem(x)
        for layer in self.layers:
            state = layer(state)
        return self.head(state)

    # ------------------------------------------------------------ growth
    def insertion_kind(self, location: int) -> Dense | Conv2d | Token:
        """``Dense`` on ``(B, n)`` states, ``Conv2d(kernel_size)`` on ``(B, C, H, W)``, ``Token`` on ``(B, T, d)``."""
        self._check_location(location)
        rank = len(self.state_shape)
        return Dense() if rank == 1 else Token() if rank == 2 else Conv2d(self.kernel_size)

    def insertion_shape(self, location: int) -> tuple[int, int]:
        """Shape ``(n, m)`` of the rows ``[W | b]``: ``(n, n + 1)``, ``(d, d + 1)`` or ``(C, C k k + 1)``."""
        self._check_location(location)
        if len(self.state_shape) == 3:
            channels = self.state_shape[0]
            return channels, channels * self.kernel_size**2 + 1
        return self.state_shape[-1], self.state_shape[-1] + 1

    def _new_layer(self, location: int) -> nn.Module:
        rank, features = len(self.state_shape), self.state_shape[0 if len(self.state_shape) == 3 else -1]
        if rank == 1:
            return ResidualDense(features, self.new_activation())
        if rank == 2:
            from topogrow.nn.vit import ResidualToken  # not at the top: topogrow.nn registers "cnn" before "vit"

            return ResidualToken(features, self.new_activation())
        return ResidualConv(features, self.kernel_size, self.new_activation())

    def _state_shape(self, location: int) -> tuple[int, ...]:
        return self.state_shape

    def _weight_shapes(self, location: int) -> tuple[tuple[int, ...], ...]:
        """``(n, n)``; for convolutions ``(C, C, k, k)`` or flat ``(C, C k k)``."""
        n, m = self.insertion_shape(location)
        if len(self.state_shape) == 3:
            return (n, n, self.kernel_size, self.kernel_size), (n, m - 1)
        return ((n, m - 1),)

    def spec(self) -> dict[str, Any]:
        """The architecture as a JSON-able description: the class names of the stem, of each layer
        and of the head, the state's shape, the activation and kernel size of inserted layers
        (``blocks``: the registered block name of each layer, only when one was inserted).

        It describes the network but cannot rebuild it (the modules are the user's): rebuild with
        :func:`as_growable` of the same modules, then ``load_state_dict``.
        """
        spec: dict[str, Any] = {
            "stem": type(self.stem).__name__,
            "layers": [type(layer).__name__ for layer in self.layers],
            "head": type(self.head).__name__,
            "depth": self.depth,
            "state_shape": list(self.state_shape),
            "activation": self.activation_name,
            "kernel_size": self.kernel_size,
        }
        names = [block_name(layer) for layer in self.layers]
        if any(name is not None for name in names):
            spec["blocks"] = names
        return spec

    def extra_repr(self) -> str:
        return f"state_shape={self.state_shape}, activation={self.activation_name!r}"


class _NotABatch(Exception):
    """The probe input did not run through the network as a batch (the message says where)."""


def as_growable(
    stem: nn.Module,
    blocks: Iterable[nn.Module] | None = None,
    head: nn.Module | None = None,
    *,
    split: tuple[int, int] | None = None,
    example_input: Any = None,
    activation: str | nn.Module | None = None,
    kernel_size: int = 3,
) -> GrowableNetwork:
    """Make a residual network of your own modules growable, without subclassing.

    Two forms:

    - ``as_growable(stem, blocks, head)``: the modules; ``blocks`` is an iterable (possibly
      empty) of residual blocks ``x -> x + g(x)`` that keep the state's shape;
    - ``as_growable(sequential)``: an ``nn.Sequential`` whose first module is the stem, last
      module the head and the modules between them the residual blocks. ``split=(start, stop)``
      says otherwise: modules ``[:start]`` are the stem, ``[start:stop]`` the blocks, ``[stop:]``
      the head (slice indices; a stem or head of several modules becomes an ``nn.Sequential`` of
      them).

    The modules are kept as they are (the same objects); the blocks go into the returned
    model's ``layers``, where inserted layers go among them. The state's shape (what is
    inserted, see :class:`GrowableNetwork`) comes from ``example_input`` (one batch or one
    sample, run once in eval mode without gradients; the training flags are restored), else
    from a head that is an ``nn.Linear`` (its ``in_features``: states ``(B, n)``).

    Raises ``TypeError`` for arguments that are not modules, ``ValueError`` when the state's
    shape cannot be told, when a block changes the state's shape, or when the state's rank is
    not 1, 2 or 3 (one sample's). Example::

        model = as_growable(nn.Sequential(nn.Linear(4, 16), Block(16), Block(16), nn.Linear(16, 1)))
        topogrow.Grower(model, "mse", max_depth=4).fit((X, y))
    """
    if blocks is None and head is None:
        if not isinstance(stem, nn.Sequential):
            raise TypeError(
                f"as_growable(model) takes an nn.Sequential (stem, residual blocks..., head), got a "
                f"{type(stem).__name__}; for other networks call as_growable(stem, blocks, head)"
            )
        stem, blocks, head = _split(stem, split)
    elif split is not None:
        raise TypeError("split applies to as_growable(sequential) only, not to as_growable(stem, blocks, head)")
    elif head is None:
        raise TypeError("as_growable(stem, blocks, head): the head is missing")
    return GrowableNetwork(
        stem,
        [] if blocks is None else blocks,
        head,
        example_input=example_input,
        activation=activation,
        kernel_size=kernel_size,
    )


def _split(sequential: nn.Sequential, split: Any) -> tuple[nn.Module, list[nn.Module], nn.Module]:
    """Stem, blocks and head of ``sequential`` (the same modules)."""
    modules = list(sequential)
    if len(modules) < 2:
        raise ValueError(f"an nn.Sequential to grow needs a stem and a head (at least 2 modules), got {len(modules)}")
    if split is None:
        start, stop = 1, len(modules) - 1
    else:
        if (
            isinstance(split, (str, bytes))
            or not isinstance(split, (tuple, list))
            or len(split) != 2
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in split)
        ):
            raise ValueError(f"split must be a pair (start, stop) of integers, got {split!r}")
        start, stop, _ = slice(*split).indices(len(modules))
        if not 1 <= start <= stop <= len(modules) - 1:
            raise ValueError(
                f"split={tuple(split)} must leave a stem, blocks and a head in the {len(modules)} modules: "
                f"1 <= start <= stop <= {len(modules) - 1}"
            )

    def part(chosen: list[nn.Module]) -> nn.Module:
        return chosen[0] if len(chosen) == 1 else nn.Sequential(*chosen)

    return part(modules[:start]), modules[start:stop], part(modules[stop:])
