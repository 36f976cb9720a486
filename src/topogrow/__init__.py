"""topogrow: grow neural networks in depth with the topological derivative."""

from topogrow.core import TopologicalDerivative, topological_derivative
from topogrow.growth import (
    STRATEGIES,
    Callback,
    CheckpointError,
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
    save,
)
from topogrow.growth.transfer import AdaptResult, adapt
from topogrow.nn import ResidualCNN, ResidualMLP
from topogrow.nn.vit import ViT

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
