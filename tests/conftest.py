"""Shared settings for the test suite: few threads, deterministic seeds."""

import pytest
import torch

# The models here are tiny: one thread avoids OpenMP start-up and contention costs
# (with two threads and a busy core, every small op can wait milliseconds).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_everything():
    """Every test starts from the same global RNG state."""
    torch.manual_seed(0)
    yield
