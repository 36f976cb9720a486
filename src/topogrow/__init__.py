"""topogrow: grow neural networks in depth with the topological derivative."""

from topogrow.core import TopologicalDerivative, topological_derivative
from topogrow.growth import (
    STRATEGIES,
    Callback,
    Grower,
    GrowthConfig,
    GrowthHistory,
    GrowthStep,
    Proposal,
    StageContext,
    Strategy,
    grow,
    load,
    register_strategy,
)
from topogrow.nn import CheckpointError, ResidualCNN, ResidualMLP, save
from topogrow.nn.vit import ViT
from topogrow.transfer import AdaptResult, adapt

__all__ = [
    "STRATEGIES",
    "AdaptResult",
    "Callback",
    "CheckpointError",
    "GrowthConfig",
    "GrowthHistory",
    "GrowthStep",
    "Proposal",
    "Grower",
    "ResidualCNN",
    "ResidualMLP",
    "StageContext",
    "Strategy",
    "ViT",
    "TopologicalDerivative",
    "adapt",
    "grow",
    "load",
    "register_strategy",
    "save",
    "topological_derivative",
]
__version__ = "0.1.0"
