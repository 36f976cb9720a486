"""Small ResidualMLP problems shared by test_core.py and test_matrix_free.py: seeded float64
data, a model for either loss, and the full-data loss (to measure the real change of an insertion)."""

import torch
from torch.nn import functional as F

from topogrow import ResidualMLP

IN_FEATURES = 3
OUT_FEATURES = 2
N_CLASSES = 3
N_SAMPLES = 64
EPS = 1e-3
LOSS_FNS = {"mse": F.mse_loss, "cross_entropy": F.cross_entropy}


def make_data(loss: str, n_samples: int = N_SAMPLES, seed: int = 0, first_seed: int = 1000):
    """x: standard normal inputs; y: standard normal targets (mse) or class labels (cross_entropy).
    The generator's seed is ``first_seed + seed`` (each test file keeps its own data)."""
    g = torch.Generator().manual_seed(first_seed + seed)
    x = torch.randn(n_samples, IN_FEATURES, generator=g, dtype=torch.float64)
    if loss == "mse":
        y = torch.randn(n_samples, OUT_FEATURES, generator=g, dtype=torch.float64)
    else:
        y = torch.randint(0, N_CLASSES, (n_samples,), generator=g)
    return x, y


def make_model(width: int, depth: int, loss: str, seed: int = 0, dtype=torch.float64, activation=None):
    torch.manual_seed(seed)
    out = OUT_FEATURES if loss == "mse" else N_CLASSES
    return ResidualMLP(IN_FEATURES, width, depth, out, activation=activation).to(dtype)


def full_loss(model, x, y, loss: str) -> float:
    with torch.no_grad():
        return LOSS_FNS[loss](model(x), y).item()
