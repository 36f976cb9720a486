"""topogrow: grow neural networks in depth with the topological derivative."""

from topogrow.core import TopologicalDerivative, topological_derivative
from topogrow.growth import STRATEGIES, Grower, GrowthConfig, GrowthHistory
from topogrow.nn import ResidualMLP

__all__ = [
    "STRATEGIES",
    "GrowthConfig",
    "GrowthHistory",
    "Grower",
    "ResidualMLP",
    "TopologicalDerivative",
    "topological_derivative",
]
__version__ = "0.1.0"
