"""Modules that can grow: activations with sigma(0) = sigma'(0) = 0, residual layers, models.

Every model is a :class:`GrowableModel` registered in :data:`MODELS` (``"mlp"``, ``"cnn"``,
``"vit"``); register your own with :func:`register_model`. A residual network of your own modules
grows without subclassing through :func:`as_growable`. A model of a registered class is saved for
inference with :func:`save` (JSON and safetensors; read back with
:func:`topogrow.load <topogrow.growth.load>`).
"""

from topogrow.nn.activations import ACTIVATIONS, SiLUTanh, ZTanh, activation_curvature, resolve_activation
from topogrow.nn.adapter import GrowableNetwork, as_growable
from topogrow.nn.blocks import BLOCKS, ResidualBlock, make_block, register_block
from topogrow.nn.cnn import ResidualCNN
from topogrow.nn.growable import CONTRACT, GROWTH_METADATA, MODELS, GrowableModel, register_model
from topogrow.nn.layers import ResidualConv, ResidualDense
from topogrow.nn.mlp import ResidualMLP
from topogrow.nn.saved import save
from topogrow.nn.serialization import CheckpointError
from topogrow.nn.vit import ViT

__all__ = [
    "ACTIVATIONS",
    "BLOCKS",
    "CONTRACT",
    "CheckpointError",
    "GROWTH_METADATA",
    "MODELS",
    "GrowableModel",
    "GrowableNetwork",
    "ResidualBlock",
    "ResidualCNN",
    "ResidualConv",
    "ResidualDense",
    "ResidualMLP",
    "SiLUTanh",
    "ViT",
    "ZTanh",
    "activation_curvature",
    "as_growable",
    "make_block",
    "register_block",
    "register_model",
    "resolve_activation",
    "save",
]
