"""Modules that can grow: activations with sigma(0) = sigma'(0) = 0, residual layers, models."""

from topogrow.nn.activations import ACTIVATIONS, SiLUTanh, ZTanh, activation_curvature, resolve_activation
from topogrow.nn.blocks import BLOCKS, ResidualBlock, make_block, register_block
from topogrow.nn.cnn import ResidualCNN
from topogrow.nn.layers import ResidualConv, ResidualDense
from topogrow.nn.mlp import ResidualMLP

__all__ = [
    "ACTIVATIONS",
    "BLOCKS",
    "ResidualBlock",
    "ResidualCNN",
    "ResidualConv",
    "ResidualDense",
    "ResidualMLP",
    "SiLUTanh",
    "ZTanh",
    "activation_curvature",
    "make_block",
    "register_block",
    "resolve_activation",
]
