"""topogrow: grow neural networks in depth with the topological derivative."""

from topogrow.core import TopologicalDerivative, topological_derivative
from topogrow.growth import STRATEGIES, CheckpointError, Grower, GrowthConfig, GrowthHistory, load, save
from topogrow.growth.transfer import AdaptResult, adapt
from topogrow.nn import ResidualCNN, ResidualMLP
from topogrow.nn.vit import ViT

__all__ = [
    "STRATEGIES",
    "AdaptResult",
    "CheckpointError",
    "GrowthConfig",
    "GrowthHistory",
    "Grower",
    "ResidualCNN",
    "ResidualMLP",
    "ViT",
    "TopologicalDerivative",
    "adapt",
    "load",
    "save",
    "topological_derivative",
]
__version__ = "0.1.0"
