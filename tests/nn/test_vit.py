"""ViT: token-wise insertion (closed form) against the real loss change; identity; growth."""

import copy

import pytest
import torch
from torch.nn import functional as F

from topogrow import Grower, GrowthConfig, topological_derivative
from topogrow.growth.strategies import growth_strategies, inserts_layers
from topogrow.nn.vit import ViT

LOSSES = {"mse": F.mse_loss, "cross_entropy": F.cross_entropy}


def make(loss: str, depth: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    out = 3
    model = ViT(image_size=8, patch_size=4, in_channels=1, dim=8, depth=depth, heads=2, out_features=out).double()
    x = torch.randn(40, 1, 8, 8, dtype=torch.float64)
    y = torch.randint(0, out, (40,)) if loss == "cross_entropy" else torch.randn(40, out, dtype=torch.float64)
    return model, x, y


@pytest.mark.parametrize("loss", sorted(LOSSES))
@pytest.mark.parametrize("depth", [0, 2])
def test_token_layer_matches_real_loss_change_at_every_location(loss, depth):
    model, x, y = make(loss, depth)
    td = topological_derivative(model, (x, y), loss, batch_size=16)
    before = LOSSES[loss](model(x), y).item()
    for location in model.locations:
        for k in (1, 3):
            weight, bias = td.layer(location, 1e-3, k)
            grown = copy.deepcopy(model)
            grown.insert_layer(location, weight, bias)
            change = LOSSES[loss](grown(x), y).item() - before
            assert change / td.predicted_change(location, 1e-3, k) == pytest.approx(1.0, abs=0.01)


def test_token_blocks_equal_dense_hessian_of_loss():
    model, x, y = make("cross_entropy", depth=1)
    td = topological_derivative(model, (x, y), "cross_entropy", keep_blocks=True)
    for location in model.locations:
        grown = copy.deepcopy(model)
        grown.insert_layer(location)
        prefix = f"layers.{location}.affine"

        def loss_of(rows, grown=grown, prefix=prefix):
            params = {f"{prefix}.weight": rows[:, :-1], f"{prefix}.bias": rows[:, -1]}
            return F.cross_entropy(torch.func.functional_call(grown, params, (x,)), y)

        rows = torch.zeros(model.dim, model.dim + 1, dtype=torch.float64)
        hessian = torch.autograd.functional.hessian(loss_of, rows).reshape(rows.numel(), rows.numel())
        assert torch.allclose(-hessian, torch.block_diag(*td.blocks[location]), atol=1e-10)


def test_zero_insertion_is_identity_and_errors_are_clear():
    model, x, _ = make("mse", depth=1)
    out = model(x)
    for location in (0, 1, 2):
        model.insert_layer(location)
        assert torch.equal(model(x), out)
    assert model.depth == 4 and model.spec()["layers"] == ["token", "token", "token", "encoder"]
    with pytest.raises(ValueError, match="location must be an integer in 0..4"):
        model.insert_layer(5)
    with pytest.raises(ValueError, match=r"expected images of shape \(batch, 1, 8, 8\)"):
        model(torch.randn(2, 64, dtype=torch.float64))
    with pytest.raises(ValueError, match="must divide"):
        ViT(image_size=8, patch_size=3)
    with pytest.raises(ValueError, match="sigma'\\(0\\)"):
        ViT(image_size=8, patch_size=4, activation=torch.nn.GELU())


@pytest.mark.parametrize("strategy", growth_strategies())
def test_every_strategy_grows_a_vit(strategy):
    model, x, y = make("cross_entropy", depth=1)
    config = GrowthConfig(
        strategy=strategy,
        max_depth=3,
        epochs_per_stage=1,
        final_epochs=1,
        batch_size=16,
        device="cpu",
        early_stopping=False,
        rollback=False,
    )
    history = Grower(model, "cross_entropy", config).fit((x, y), (x, y))
    assert model.depth == (3 if inserts_layers(strategy) or strategy == "small-init" else 1)
    for stage in history.insertions:
        if strategy in ("td", "td-how"):
            assert stage.actual_change <= 0


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_encoder_block_matrix_free_matches_real_loss_change_at_every_location(loss):
    from topogrow.core import matrix_free_topological_derivative
    from topogrow.nn.blocks import ResidualBlock

    model, x, y = make(loss, depth=1)
    td = matrix_free_topological_derivative(model, (x, y), loss, lambda: model.encoder_branch().double(), k=2)
    assert not td.first_order_locations  # no output biases, no norm affine: second order
    before = LOSSES[loss](model(x), y).item()
    for location in model.locations:
        assert td.eigenvalues[location] > 0
        direction = td.rows(location, 1e-3, k=1)
        grown = copy.deepcopy(model)
        block = grown.insert_block(location, ResidualBlock(model.encoder_branch()))
        block.load_direction(direction)
        assert grown.spec()["layers"][location] == "encoder"
        change = LOSSES[loss](grown(x), y).item() - before
        assert change / td.predicted_change(location, 1e-3, k=1) == pytest.approx(1.0, abs=0.01)


def test_vit_grows_by_encoder_blocks():
    model, x, y = make("cross_entropy", depth=1)
    config = GrowthConfig(
        strategy="td", block="encoder", max_depth=3, epochs_per_stage=1, final_epochs=1, batch_size=16
    )
    history = Grower(model, "cross_entropy", config).fit((x, y), (x, y))
    assert model.depth == 3 and model.spec()["layers"].count("encoder") == 3
    assert len(history.insertions) == 2 and all(s.actual_change <= 0 for s in history.insertions)
