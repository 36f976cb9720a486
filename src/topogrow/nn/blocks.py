"""Blocks to grow by: any module ``g`` inserted as ``x -> x + g(x)``, and a registry of them.

A block ``g(x; theta)`` can be inserted when ``g(x; 0) = 0`` (zero parameters leave
the network unchanged). Its topological derivative comes from
:func:`topogrow.core.matrix_free.matrix_free_topological_derivative`, which
flattens the parameters in the order of ``block.parameters()``; so does
:meth:`ResidualBlock.load_direction`, so a direction from the core loads as is.

Built-in blocks (each a factory ``factory(model, location) -> nn.Module``, with the
feature dimension read from ``model.insertion_shape(location)[0]``):

- ``"dense"``: ``sigma(W x + b)`` with the model's activation (sigma'(0) = 0): the
  closed-form layer of METHOD.md, useful to check the matrix-free path against it.
- ``"conv"``: ``sigma(K * x + b)``, "same" convolution (the model's ``kernel_size``, else 3)
  on ``(B, C, H, W)`` states.
- ``"gelu-mlp"``: ``W2 GELU(W1 x + b1)`` with hidden width equal to the feature
  dimension. At zero parameters both the output and its parameter gradient vanish
  (W2 = 0 and GELU(0) = 0), so the expansion is second order; its leading eigenvalue
  is GELU'(0) = 1/2 times the top singular value of ``sum_s p_s [x_s; 1]^T``. An output
  bias ``b2`` would make it first order (``d g / d b2 = I``), so it has none.
- ``"sensli-mlp"``: ``W2 tanh(W1 x + b1)`` (hidden width = feature dimension, no output
  bias), the block of the ``sensli`` strategy (:class:`SensliMLP`). It is inserted with
  ``W1, b1`` at their default initialisation and ``W2 = 0`` (function preserving, first order).
  ``"sensli-conv"``: its convolutional form, ``W2 tanh(K1 * x + b1)`` with a "same" k x k
  convolution ``K1`` and a 1 x 1 convolution ``W2``, on ``(B, C, H, W)`` states.

Register your own with :func:`register_block`::

    register_block("tanh-mlp", lambda model, location: MyBlock(model.width))
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from topogrow._registry import Registry
from topogrow._validation import unknown_name_error
from topogrow.nn.activations import ACTIVATIONS, resolve_activation

BlockFactory = Callable[[nn.Module, int], nn.Module]

__all__ = [
    "BLOCKS",
    "BlockFactory",
    "ConvBlock",
    "DenseBlock",
    "GeluMLP",
    "ResidualBlock",
    "SensliConv",
    "SensliMLP",
    "block_name",
    "make_block",
    "rebuild_block",
    "register_block",
]


class ResidualBlock(nn.Module):
    """``x -> x + g(x)`` for a block module ``g``; the identity when ``g``'s parameters are zero.

    Its parameters are read and written as one flat vector in the order of
    ``g.parameters()`` (:func:`torch.nn.utils.parameters_to_vector`), the layout of
    the matrix-free topological derivative.

    ``name`` is the block's name in :data:`BLOCKS` when it was made by
    :func:`make_block`; a model's ``spec()`` records it, so that the architecture
    (and a checkpoint's weights) can be rebuilt. An unnamed block cannot be rebuilt.
    """

    def __init__(self, block: nn.Module, name: str | None = None) -> None:
        super().__init__()
        if not isinstance(block, nn.Module):
            raise TypeError(f"expected the block to be an nn.Module, got {type(block).__name__}")
        if next(block.parameters(), None) is None:
            raise ValueError(f"the block {type(block).__name__} has no parameters: there is nothing to grow")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"expected the block name to be a string or None, got {type(name).__name__}")
        self.block = block
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)

    @property
    def n_parameters(self) -> int:
        """The number of parameters of the block (the length of :meth:`direction`)."""
        return sum(p.numel() for p in self.block.parameters())

    def direction(self) -> torch.Tensor:
        """The block's parameters as one flat, detached vector ``(n_parameters,)``."""
        return torch.nn.utils.parameters_to_vector(self.block.parameters()).detach().clone()

    def rows(self) -> torch.Tensor:
        """Same as :meth:`direction` (a block's "rows" are its flat parameter vector)."""
        return self.direction()

    @torch.no_grad()
    def load_direction(self, direction: torch.Tensor) -> None:
        """Set the parameters from a flat vector (any dtype/device; copied in place).

        In-place copies keep the parameter objects, so an optimiser that holds them
        stays valid.
        """
        direction = torch.as_tensor(direction)
        if direction.ndim != 1 or direction.numel() != self.n_parameters:
            raise ValueError(
                f"expected a flat vector of {self.n_parameters} parameters, got shape {tuple(direction.shape)}"
            )
        if not torch.isfinite(direction).all():
            raise ValueError("the parameters of an inserted block must be finite")
        offset = 0
        for parameter in self.block.parameters():
            count = parameter.numel()
            parameter.copy_(direction[offset : offset + count].view_as(parameter))
            offset += count

    def load_rows(self, rows: torch.Tensor) -> None:
        """Same as :meth:`load_direction`."""
        self.load_direction(rows)

    def zero_(self) -> ResidualBlock:
        """Set every parameter of the block to zero (the identity map); returns ``self``."""
        with torch.no_grad():
            for parameter in self.block.parameters():
                parameter.zero_()
        return self


# ------------------------------------------------------------------ built-ins
class DenseBlock(nn.Module):
    """``sigma(W x + b)`` on the last dimension."""

    def __init__(self, features: int, activation: nn.Module | str | None = None) -> None:
        super().__init__()
        self.affine = nn.Linear(features, features)
        self.activation = resolve_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.affine(x))


class ConvBlock(nn.Module):
    """``sigma(K * x + b)``, C -> C channels, ``kernel_size`` "same" padding, on ``(B, C, H, W)``."""

    def __init__(self, channels: int, activation: nn.Module | str | None = None, kernel_size: int = 3) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd (for 'same' padding), got {kernel_size}")
        self.conv = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2)
        self.activation = resolve_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.conv(x))


class GeluMLP(nn.Module):
    """``W2 GELU(W1 x + b1) (+ b2)`` on the last dimension.

    Without ``b2`` (the default) it is second order at zero parameters; with
    ``output_bias=True`` the gradient ``sum_s p_s`` on ``b2`` makes it first order.
    """

    def __init__(self, features: int, hidden: int, bias: bool = True, output_bias: bool = False) -> None:
        super().__init__()
        self.fc1 = nn.Linear(features, hidden, bias=bias)
        self.fc2 = nn.Linear(hidden, features, bias=output_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SensliMLP(nn.Module):
    """``W2 act(W1 x + b1)`` on the last dimension, ``act`` a standard activation (tanh).

    The block of layer insertion by first-order sensitivity (strategy ``sensli``): with
    ``W2 = 0`` it is the zero map while ``dJ/dW2 = -sum_s p_s act(W1 x_s + b1)^T`` is not
    zero; ``output_weight`` is ``W2``. No output bias (as in :class:`GeluMLP`).
    """

    def __init__(self, features: int, hidden: int | None = None, activation: str = "tanh") -> None:
        super().__init__()
        activations = {"tanh": torch.tanh, "relu": torch.relu}
        if activation not in activations:
            raise unknown_name_error("activation", activation, activations)
        self.activation_name = activation
        self._act = activations[activation]
        self.fc1 = nn.Linear(features, hidden or features)
        self.fc2 = nn.Linear(hidden or features, features, bias=False)

    @property
    def output_weight(self) -> nn.Parameter:
        return self.fc2.weight

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """``act(W1 x + b1)``."""
        return self._act(self.fc1(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.hidden(x))


class SensliConv(SensliMLP):
    """``W2 act(K1 * x + b1)``, C -> C channels: a "same" ``kernel_size`` convolution ``K1``
    and a 1 x 1 convolution ``W2`` without bias (``output_weight``), on ``(B, C, H, W)``."""

    def __init__(self, channels: int, kernel_size: int = 3, activation: str = "tanh") -> None:
        super().__init__(channels, channels, activation)
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd (for 'same' padding), got {kernel_size}")
        self.fc1 = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2)
        self.fc2 = nn.Conv2d(channels, channels, 1, bias=False)


def _features(model: nn.Module, location: int) -> int:
    if hasattr(model, "insertion_shape"):
        return int(model.insertion_shape(location)[0])
    if hasattr(model, "width"):
        return int(model.width)
    raise TypeError(
        f"cannot tell the feature dimension at location {location} of a {type(model).__name__}: "
        "expected a model with insertion_shape(location) or width"
    )


def _fresh_activation(model: nn.Module) -> nn.Module:
    """A fresh activation for a block of ``model``: ``model.new_activation()`` (a growable model's),
    else the one its ``activation_name`` names, else the default."""
    new_activation = getattr(model, "new_activation", None)
    if callable(new_activation):
        return new_activation()
    name = getattr(model, "activation_name", None)
    return resolve_activation(name if name in ACTIVATIONS else None)


def _encoder_branch(model: nn.Module) -> nn.Module:
    if not hasattr(model, "encoder_branch"):
        raise TypeError(f"block 'encoder' needs a ViT, got {type(model).__name__}")
    return model.encoder_branch()


#: Blocks by name: ``factory(model, location) -> nn.Module`` (the block ``g``, not ``x + g(x)``).
BLOCKS: Registry[BlockFactory] = Registry("block")
BLOCKS.register(
    "dense",
    lambda model, location: DenseBlock(_features(model, location), _fresh_activation(model)),
    help="sigma(W x + b) with the model's activation (the closed-form layer, matrix-free)",
)
BLOCKS.register(
    "conv",
    lambda model, location: ConvBlock(
        _features(model, location), _fresh_activation(model), getattr(model, "kernel_size", 3)
    ),
    help="sigma(K * x + b), a 'same' convolution with the model's activation",
)
BLOCKS.register(
    "gelu-mlp",
    lambda model, location: GeluMLP(_features(model, location), _features(model, location)),
    help="W2 GELU(W1 x + b1), second order at zero",
)
BLOCKS.register(
    "encoder",
    lambda model, location: _encoder_branch(model),
    help="a ViT encoder block (attention + MLP) without norm affine parameters or output biases",
)
BLOCKS.register(
    "sensli-mlp",
    lambda model, location: SensliMLP(_features(model, location)),
    help="W2 tanh(W1 x + b1), the block of the sensli strategy",
)
BLOCKS.register(
    "sensli-conv",
    lambda model, location: SensliConv(_features(model, location), getattr(model, "kernel_size", 3)),
    help="W2 tanh(K1 * x + b1), the convolutional block of the sensli strategy",
)


def register_block(name: str, factory: BlockFactory | None = None, *, overwrite: bool = False):
    """Register ``factory(model, location) -> nn.Module`` under ``name``.

    The module is the block ``g`` (not ``x + g(x)``); its output must have the shape
    of its input and be zero at zero parameters. Its default initialisation is what
    the random strategies insert. Use as a call or as a decorator::

        @register_block("tanh-mlp")
        def tanh_mlp(model, location):
            return MyBlock(model.width)

    Raises ``ValueError`` if ``name`` is taken, unless ``overwrite=True``.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"expected a non-empty string name, got {name!r}")

    def register(fn: BlockFactory) -> BlockFactory:
        if not callable(fn):
            raise TypeError(f"expected a callable factory(model, location), got {type(fn).__name__}")
        return BLOCKS.register(name, fn, overwrite=overwrite)

    return register if factory is None else register(factory)


def make_block(name: str, model: nn.Module, location: int, generator: torch.Generator | None = None) -> nn.Module:
    """A fresh block ``name`` for ``location`` of ``model``, with its default initialisation.

    With a ``generator`` the initialisation is drawn from a global RNG seeded from
    it (then restored), so it is reproducible and leaves the global RNG untouched.
    """
    factory = BLOCKS[name]
    if generator is None:
        block = factory(model, location)
    else:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            block = factory(model, location)
    if not isinstance(block, nn.Module):
        raise TypeError(f"block {name!r}: expected its factory to return an nn.Module, got {type(block).__name__}")
    return block


def block_name(layer: nn.Module) -> str | None:
    """The registered name of an inserted :class:`ResidualBlock` (``None`` for anything else)."""
    return layer.name if isinstance(layer, ResidualBlock) else None


def rebuild_block(name: str, model: nn.Module, location: int) -> ResidualBlock:
    """A fresh ``ResidualBlock`` of the registered block ``name`` for ``location`` of ``model``
    (its default initialisation): what a model's constructor puts where its spec names a block."""
    return ResidualBlock(make_block(name, model, location), name=name)
