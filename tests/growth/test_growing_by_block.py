"""Growing by a block: a user registers a block and grows with it; every strategy grows with a
block; unknown block names and models without insert_block are refused."""

import pytest
import torch
from torch import nn

from topogrow import Grower, GrowthConfig, ResidualMLP
from topogrow.nn import BLOCKS, ResidualBlock, register_block


# ----------------------------------------------- (e) growing with a block
class TanhMLP(nn.Module):
    """A user's block: W2 tanh(W1 x), second order at zero parameters."""

    def __init__(self, features: int, hidden: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Linear(features, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, features, bias=False)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


@pytest.fixture
def my_block():
    register_block("my-block", lambda model, location: TanhMLP(model.width), overwrite=True)
    yield "my-block"
    BLOCKS.unregister("my-block")


def regression_data(n_samples: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_samples, 4, generator=g, dtype=torch.float64)
    y = torch.sin(2 * x[:, :1]) + x[:, 1:2] * x[:, 2:3]
    return x, y


def block_config(block, **changes):
    base = dict(
        block=block,
        max_depth=3,
        epochs_per_stage=2,
        final_epochs=1,
        growth_patience=100,
        batch_size=32,
        lr=1e-2,
        device="cpu",
        seed=0,
    )
    base.update(changes)
    return GrowthConfig(**base)


def test_a_registered_block_grows_to_the_target_depth(my_block):
    torch.manual_seed(0)
    model = ResidualMLP(4, 6, 1, 1).double()
    train, val = regression_data(200, seed=1), regression_data(60, seed=2)
    history = Grower(model, "mse", block_config(my_block, strategy="td")).fit(train, val)
    assert model.depth == 3
    inserted = [layer for layer in model.layers if isinstance(layer, ResidualBlock)]
    assert len(inserted) == 2 and all(isinstance(layer.block, TanhMLP) for layer in inserted)
    grown = [stage for stage in history.stages if stage.location is not None]
    assert len(grown) == 2
    for stage in grown:
        assert stage.actual_change <= 0
        assert stage.epsilon != 0 and stage.predicted_change < 0
        assert len(stage.eigenvalues) == stage.depth + 1
    # the new blocks are trained with the others (the optimiser was rebuilt)
    assert all(layer.direction().abs().max() > 0 for layer in inserted)


@pytest.mark.parametrize("strategy", ["td-where", "td-how", "random", "zero"])
def test_every_strategy_grows_with_a_block(strategy):
    torch.manual_seed(0)
    model = ResidualMLP(4, 4, 1, 1).double()
    train = regression_data(100, seed=1)
    config = block_config("gelu-mlp", strategy=strategy, max_depth=2, epochs_per_stage=1, final_epochs=0)
    history = Grower(model, "mse", config).fit(train)
    assert model.depth == 2 and isinstance(model.layers[history.stages[0].location], ResidualBlock)
    assert history.stages[0].actual_change <= 0 or strategy in ("random", "td-where")  # no line search there
    if strategy == "zero":
        assert history.stages[0].actual_change == 0


def test_unknown_block_names_suggest_the_closest():
    with pytest.raises(ValueError, match=r"unknown block 'gelu-mpl'.*did you mean 'gelu-mlp'\?"):
        GrowthConfig(block="gelu-mpl")
    with pytest.raises(ValueError, match=r"did you mean 'dense'"):
        Grower(ResidualMLP(4, 4, 1, 1), "mse", GrowthConfig(), block="dens")
    assert GrowthConfig.from_dict(GrowthConfig(block="conv").to_dict()).block == "conv"


def test_growing_by_block_needs_insert_block():
    class NoBlocks(nn.Module):
        pass

    with pytest.raises(TypeError, match="insert_block"):
        Grower(NoBlocks(), "mse", GrowthConfig(block="dense", device="cpu"))
