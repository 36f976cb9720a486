"""``ViT``: a small vision transformer that grows by token-wise layers or whole encoder blocks.

States are the token sequences ``(B, T, d)`` between encoder blocks (``T`` = patches
+ 1 class token). Location 0 is right after the patch embedding; location ``depth``
right before the final norm and head.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from topogrow._validation import check_int
from topogrow.core.layer_kinds import Token
from topogrow.nn.blocks import ResidualBlock, block_name, rebuild_block
from topogrow.nn.growable import GrowableModel, check_square_images, register_model
from topogrow.nn.layers import _RowsMixin
from topogrow.nn.mlp import _block_names


class ResidualToken(_RowsMixin, nn.Module):
    """``x -> x + sigma(W LN(x) + b)`` on tokens ``(B, T, d)``; LN without affine parameters,
    so zero W and b give exactly the identity."""

    def __init__(self, dim: int, activation: nn.Module) -> None:
        super().__init__()
        self.affine = nn.Linear(dim, dim)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.activation(self.affine(F.layer_norm(x, x.shape[-1:])))


class SelfAttention(nn.Module):
    """Multi-head self-attention written out (softmax(q k^T / sqrt(d_h)) v), so that
    second derivatives (``torch.func`` Hessian-vector products) work on every backend."""

    def __init__(self, dim: int, heads: int, out_bias: bool = True) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim, bias=out_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // self.heads), dim=-1)
        return self.out((weights @ v).transpose(1, 2).reshape(b, t, d))


class EncoderBlock(nn.Module):
    """Pre-norm encoder block: ``x + Attn(LN(x))``, then ``+ MLP(LN(.))``.

    With ``norm_affine=False, out_bias=False`` (the insertable form) the block's
    residual branch is zero, with zero first derivative, when all its parameters are
    zero, so its topological derivative is second order (matrix-free path).
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 2, norm_affine: bool = True, out_bias: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=norm_affine)
        self.attention = SelfAttention(dim, heads, out_bias)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=norm_affine)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim, bias=out_bias)
        )

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """The residual branch g(x): ``block(x) = x + g(x)``."""
        h = self.attention(self.norm1(x))
        return h + self.mlp(self.norm2(x + h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)


class EncoderBranch(EncoderBlock):
    """The residual branch of an insertable encoder block as a module: ``forward = branch``,
    for :class:`~topogrow.nn.blocks.ResidualBlock` (which adds the ``x +``)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 2) -> None:
        super().__init__(dim, heads, mlp_ratio, norm_affine=False, out_bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.branch(x)


@register_model("vit")
class ViT(GrowableModel):
    """A vision transformer seen as a discrete dynamical system on token sequences.

    Args:
        image_size: side of the (square) input images.
        patch_size: side of a patch; must divide ``image_size``.
        in_channels: image channels.
        dim: token width d.
        depth: number of encoder blocks to start from.
        heads: attention heads.
        out_features: classes.
        mlp_ratio: hidden width of the MLP is ``mlp_ratio * dim``.
        activation: sigma of inserted token-wise layers (sigma(0) = sigma'(0) = 0).
        layers: the kind of each residual layer, ``"encoder"``, ``"token"`` or ``"block"``
            (as :meth:`spec` records them), to rebuild a grown architecture with fresh
            (default-initialised) parameters; ``depth`` must equal its length.
        blocks: per residual layer, the registered block (:data:`topogrow.nn.blocks.BLOCKS`)
            inserted there, or ``None``; where it names one, that layer is a
            :class:`~topogrow.nn.blocks.ResidualBlock` of it (an inserted encoder block is
            ``"encoder"`` in both lists: it has no norm affine parameters and no output biases,
            unlike the encoder blocks the model starts with).
    """

    def __init__(
        self,
        image_size: int = 28,
        patch_size: int = 7,
        in_channels: int = 1,
        dim: int = 32,
        depth: int = 1,
        heads: int = 4,
        out_features: int = 10,
        mlp_ratio: int = 2,
        activation: str | nn.Module | None = None,
        layers: list[str] | None = None,
        blocks: list[str | None] | None = None,
    ) -> None:
        super().__init__()
        for name, value in [
            ("image_size", image_size),
            ("patch_size", patch_size),
            ("in_channels", in_channels),
            ("dim", dim),
            ("heads", heads),
            ("out_features", out_features),
            ("mlp_ratio", mlp_ratio),
        ]:
            check_int(name, value, minimum=1)
        check_int("depth", depth, minimum=0)
        if image_size % patch_size:
            raise ValueError(f"patch_size ({patch_size}) must divide image_size ({image_size})")
        self.image_size, self.patch_size, self.in_channels = image_size, patch_size, in_channels
        self.dim, self.heads, self.out_features, self.mlp_ratio = dim, heads, out_features, mlp_ratio
        self._init_activation(activation)
        n_tokens = (image_size // patch_size) ** 2 + 1
        self.embed = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.position = nn.Parameter(0.02 * torch.randn(1, n_tokens, dim))
        kinds = ["encoder"] * depth if layers is None else list(layers)
        if len(kinds) != depth or not set(kinds) <= {"encoder", "token", "block"}:
            raise ValueError(f"layers must list {depth} kinds, each 'encoder', 'token' or 'block', got {layers!r}")
        names = _block_names(blocks, depth)
        for index, (kind, name) in enumerate(zip(kinds, names, strict=True)):
            if kind == "block" and name is None:
                raise ValueError(f"layers[{index}] is 'block' but blocks[{index}] names no registered block")
            if name is not None and kind not in ("encoder", "block"):
                raise ValueError(f"blocks[{index}] is {name!r} but layers[{index}] is {kind!r} (expected 'block')")
        self.layers = nn.ModuleList(
            nn.Identity()  # a placeholder for a block, rebuilt below
            if name is not None
            else EncoderBlock(dim, heads, mlp_ratio)
            if kind == "encoder"
            else ResidualToken(dim, self.new_activation())
            for kind, name in zip(kinds, names, strict=True)
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, out_features)
        self._kinds = kinds
        for index, name in enumerate(names):
            if name is not None:
                self.layers[index] = rebuild_block(name, self, index)

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        expected = (self.in_channels, self.image_size, self.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"expected images of shape (batch, {', '.join(map(str, expected))}), got {tuple(x.shape)}")
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        return torch.cat([cls, tokens], dim=1) + self.position

    def forward_states(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits ``(B, classes)`` and the token states ``[x_0, ..., x_T]``, each ``(B, T, d)``."""
        state = self._embed(x)
        states = [state]
        for layer in self.layers:
            state = layer(state)
            states.append(state)
        return self.head(self.norm(state[:, 0])), states

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        state = self._embed(x)
        for layer in self.layers:
            state = layer(state)
        return self.head(self.norm(state[:, 0]))

    def insert_layer(
        self, location: int, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None
    ) -> ResidualToken:
        """Insert a token-wise layer ``x + sigma(W LN(x) + b)`` after state ``location``; zeros by default.

        ``weight`` is ``(d, d)``, ``bias`` ``(d,)``; zeros leave the outputs exactly unchanged.
        """
        return super().insert_layer(location, weight, bias)

    def _new_layer(self, location: int) -> ResidualToken:
        return ResidualToken(self.dim, self.new_activation())

    def _state_shape(self, location: int) -> tuple[int, ...]:
        """``(T, d)``: the patches and the class token, each of width d."""
        return (self.image_size // self.patch_size) ** 2 + 1, self.dim

    def _place(self, location: int, module: nn.Module) -> None:
        """Insert into ``layers`` and record the kind for :meth:`spec`: ``"token"`` for a token-wise
        layer, ``"encoder"`` for a block of an encoder branch, else ``"block"``."""
        self.layers.insert(location, module)
        if isinstance(module, ResidualToken):
            kind = "token"
        elif isinstance(getattr(module, "block", None), EncoderBranch):
            kind = "encoder"
        else:
            kind = "block"
        self._kinds.insert(location, kind)

    def _take(self, location: int) -> nn.Module:
        layer = super()._take(location)
        del self._kinds[location]
        return layer

    def head_modules(self) -> list[nn.Module]:
        """The head and the final norm before it: ``[self.head, self.norm]``."""
        return [self.head, self.norm]

    def insertion_kind(self, location: int) -> Token:
        return Token()

    def insertion_shape(self, location: int) -> tuple[int, int]:
        return self.dim, self.dim + 1

    def encoder_branch(self) -> EncoderBranch:
        """A fresh insertable encoder block's branch (no norm affine, no output biases).

        All its parameters at zero give a zero branch with zero first derivative,
        so it grows through the matrix-free path (``GrowthConfig(block="encoder")``).
        """
        return EncoderBranch(self.dim, self.heads, self.mlp_ratio)

    def _block_name(self, layer: nn.Module) -> str | None:
        name = block_name(layer)
        if name is None and isinstance(layer, ResidualBlock) and isinstance(layer.block, EncoderBranch):
            return "encoder"
        return name

    @classmethod
    def for_data(cls, input_shape, out_features, width, depth, activation=None) -> ViT:
        """Square images ``(C, H, H)`` in 7 x 7 patches (4 x 4 if 7 does not divide H, else
        one patch), token width ``width``, 4 heads (1 if 4 does not divide ``width``)."""
        check_square_images(input_shape, "vit")
        size = input_shape[1]
        patch = 7 if size % 7 == 0 else (4 if size % 4 == 0 else size)
        heads = 4 if width % 4 == 0 else 1
        return cls(
            size, patch, input_shape[0], width, depth, heads=heads, out_features=out_features, activation=activation
        )

    def spec(self) -> dict[str, Any]:
        """Architecture as a JSON-able dict; ``layers`` lists the kind of each residual layer.

        ``blocks`` (the registered block name of each layer, ``None`` for the model's own
        layers) is there only when a block was inserted.
        """
        spec: dict[str, Any] = {
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "in_channels": self.in_channels,
            "dim": self.dim,
            "depth": self.depth,
            "heads": self.heads,
            "out_features": self.out_features,
            "mlp_ratio": self.mlp_ratio,
            "activation": self.activation_name,
            "layers": list(self._kinds),
        }
        names = [self._block_name(layer) for layer in self.layers]
        if any(name is not None for name in names):
            spec["blocks"] = names
        return spec
