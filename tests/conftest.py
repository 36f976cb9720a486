"""Shared settings for the test suite: few threads, deterministic seeds, and skips (with how to get
the data) for tests of California housing where there is no copy of it."""

import functools

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


@functools.cache
def _california_missing() -> str | None:
    """Why California housing cannot be read here without a download (``None``: it can)."""
    from topogrow.data.datasets import load_california

    try:
        load_california(download=False)  # the shared copy, $TOPOGROW_DATA_DIR, or scikit-learn's cache
    except (FileNotFoundError, OSError, ValueError):
        return (
            "needs California housing, which is not here and tests never download: put cal_housing.data "
            "(StatLib) under shared/datasets/california_housing above the repository or in $TOPOGROW_DATA_DIR, "
            "or run sklearn.datasets.fetch_california_housing() once online"
        )
    return None


def pytest_runtest_setup(item):
    """A test marked ``california`` is skipped, saying how to get the data, where there is none."""
    if item.get_closest_marker("california") is not None and (reason := _california_missing()):
        pytest.skip(reason)
