"""as_growable: a residual network of the user's own modules grows without subclassing; its
topological derivative is the real change of the loss; its state dict round-trips; misuse is
refused in one line."""

import copy
import io
import json

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import helpers
import topogrow
from topogrow import Grower, topological_derivative
from topogrow.core.layer_kinds import Conv2d, Dense, Token
from topogrow.nn import (
    CONTRACT,
    GrowableModel,
    GrowableNetwork,
    ResidualBlock,
    ResidualConv,
    ResidualDense,
    as_growable,
)
from topogrow.nn.vit import ResidualToken

# torch.func imports torch internals that still call torch.jit.script
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")

EPS = 1e-3


# ------------------------------------------------------------ the user's modules
class Residual(nn.Module):
    """A user's residual block on ``(B, n)`` states: ``x + W2 tanh(W1 x)``."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.inner = nn.Linear(width, width)
        self.outer = nn.Linear(width, width)

    def forward(self, x):
        return x + self.outer(torch.tanh(self.inner(x)))


class ConvResidual(nn.Module):
    """A user's residual block on ``(B, C, H, W)`` states, with a batch norm."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x):
        return x + torch.tanh(self.norm(self.conv(x)))


class TokenResidual(nn.Module):
    """A user's residual block on tokens ``(B, T, d)``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.mix = nn.Linear(dim, dim)

    def forward(self, x):
        return x + torch.tanh(self.mix(x))


class MeanHead(nn.Module):
    """Mean over the tokens, then a linear map."""

    def __init__(self, dim: int, out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, out)

    def forward(self, x):
        return self.linear(x.mean(dim=1))


class Squash(nn.Module):
    """Drops the last feature: not a residual block."""

    def forward(self, x):
        return x[..., :-1]


def mlp_parts(width=8, seed=0):
    torch.manual_seed(seed)
    stem = nn.Sequential(nn.Linear(4, width), nn.Tanh())
    return stem, [Residual(width), Residual(width)], nn.Linear(width, 1)


def cnn_parts(channels=3, seed=0):
    torch.manual_seed(seed)
    stem = nn.Sequential(nn.Conv2d(1, channels, 3, padding=1), nn.Tanh())
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 2))
    return stem, [ConvResidual(channels)], head


def token_parts(dim=4, seed=0):
    torch.manual_seed(seed)
    return nn.Linear(3, dim), [TokenResidual(dim)], MeanHead(dim, 2)


def images(n=48, seed=0, dtype=torch.float32):
    """Two classes of 6 x 6 images: a bright left half or a bright right half, with noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = 0.3 * torch.randn(n, 1, 6, 6, generator=g, dtype=dtype)
    x[y == 0, :, :, :3] += 1.0
    x[y == 1, :, :, 3:] += 1.0
    return x, y


# ------------------------------------------------------------ an MLP of the user's
def test_an_adapted_mlp_satisfies_the_contract():
    stem, blocks, head = mlp_parts()
    model = as_growable(stem, blocks, head)
    assert isinstance(model, GrowableNetwork) and isinstance(model, GrowableModel)
    assert all(hasattr(model, member) for member in CONTRACT)
    assert model.stem is stem and model.head is head and model.head_modules() == [head]
    assert isinstance(model.layers, nn.ModuleList) and all(a is b for a, b in zip(model.layers, blocks, strict=True))
    assert model.state_shape == (8,) and model.depth == 2 and model.locations == range(3)
    assert model.insertion_kind(1) == Dense() and model.insertion_shape(1) == (8, 9)
    assert model.activation_name == "silu-tanh" and isinstance(model.activation_curvature, float)
    x = torch.randn(5, 4)
    prediction, states = model.forward_states(x)
    assert torch.equal(prediction, model(x)) and torch.equal(prediction, head(blocks[1](blocks[0](stem(x)))))
    assert len(states) == 3 and torch.equal(states[0], stem(x)) and torch.equal(states[2], blocks[1](states[1]))
    spec = model.spec()
    assert json.loads(json.dumps(spec)) == spec
    assert spec["layers"] == ["Residual", "Residual"] and spec["depth"] == 2 and spec["state_shape"] == [8]
    layer = model.insert_layer(2)
    assert isinstance(layer, ResidualDense) and torch.equal(model(x), prediction)  # zero: the identity
    assert model.spec()["layers"][-1] == "ResidualDense" and model.remove_layer(2) is layer


def test_an_adapted_mlp_grows_under_the_grower_and_keeps_the_users_blocks():
    stem, blocks, head = mlp_parts()
    model = as_growable(stem, blocks, head)
    train = helpers.regression_data(300, 1, dtype=torch.float32)
    history = Grower(model, "mse", max_depth=3, final_epochs=2, device="cpu").fit(train)  # the default config
    assert history.stop_reason == "reached max depth 3" and model.depth == 3 and len(history.insertions) == 1
    assert isinstance(model.layers[history.insertions[0].location], ResidualDense)
    assert model.stem is stem and model.head is head
    users = [layer for layer in model.layers if type(layer) is Residual]
    assert len(users) == 2 and all(a is b for a, b in zip(users, blocks, strict=True))


def test_the_grower_inserts_closed_form_layers_among_the_users_blocks():
    model = as_growable(*mlp_parts())
    train = helpers.regression_data(200, 2, dtype=torch.float32)
    Grower(model, "mse", helpers.short_growth_config(max_depth=4)).fit(train)
    assert model.depth == 4
    assert sorted(type(layer).__name__ for layer in model.layers) == ["Residual"] * 2 + ["ResidualDense"] * 2


def test_one_growth_step_in_your_own_loop_and_its_undo():
    model = as_growable(*mlp_parts())
    x, y = helpers.regression_data(200, 3, dtype=torch.float32)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(5):
        optimizer.zero_grad()
        F.mse_loss(model(x), y).backward()
        optimizer.step()
    step = topogrow.grow(model, (x, y), "mse", optimizer=optimizer, strategy="td")
    assert model.depth == 3 and isinstance(step.layer, ResidualDense) and len(optimizer.param_groups) == 2
    step.undo()
    assert model.depth == 2 and [type(layer) for layer in model.layers] == [Residual, Residual]


def test_matrix_free_growth_by_a_registered_block():
    model = as_growable(*mlp_parts())
    train = helpers.regression_data(200, 4, dtype=torch.float32)
    Grower(model, "mse", helpers.short_growth_config(max_depth=3, block="dense")).fit(train)
    inserted = [layer for layer in model.layers if isinstance(layer, ResidualBlock)]
    assert model.depth == 3 and len(inserted) == 1 and inserted[0].name == "dense"
    assert model.spec()["blocks"].count("dense") == 1


# ------------------------------------------------------------ the same network as an nn.Sequential
def test_the_same_network_as_an_nn_sequential():
    stem, blocks, head = mlp_parts()
    x = torch.randn(6, 4)
    parts = as_growable(stem, blocks, head)
    whole = as_growable(nn.Sequential(stem, *blocks, head))
    flat = as_growable(nn.Sequential(*stem, *blocks, head), split=(2, -1))
    for model in (whole, flat):
        assert [id(layer) for layer in model.layers] == [id(block) for block in blocks] and model.head is head
        assert torch.equal(model(x), parts(x)) and model.state_shape == (8,)
    assert whole.stem is stem and list(flat.stem) == list(stem)
    no_blocks = as_growable(nn.Sequential(stem, head))
    assert no_blocks.depth == 0 and no_blocks.locations == range(1)
    train = helpers.regression_data(200, 5, dtype=torch.float32)
    Grower(flat, "mse", helpers.short_growth_config(max_depth=3)).fit(train)
    assert flat.depth == 3 and isinstance(flat.layers[0], Residual | ResidualDense)


# ------------------------------------------------------------ a CNN of the user's
def test_an_adapted_cnn_gets_convolution_insertions():
    stem, blocks, head = cnn_parts()
    stem.eval()  # the probe leaves every module's training flag as it was
    before = blocks[0].norm.running_mean.clone()
    x, y = images()
    model = as_growable(stem, blocks, head, example_input=x[:4])
    assert not stem.training and blocks[0].training and head.training
    assert torch.equal(blocks[0].norm.running_mean, before)  # run in eval mode
    assert model.state_shape == (3, 6, 6) and model.insertion_kind(0) == Conv2d(3)
    assert model.insertion_shape(0) == (3, 28)
    assert as_growable(*cnn_parts(), example_input=x[0]).state_shape == (3, 6, 6)  # one sample
    assert as_growable(*cnn_parts(), example_input=x[:4], kernel_size=5).insertion_shape(1) == (3, 76)
    stem.train()
    history = Grower(model, "cross_entropy", helpers.short_growth_config(max_depth=3)).fit((x, y))
    assert model.depth == 3 and len(history.insertions) == 2
    assert sum(isinstance(layer, ResidualConv) for layer in model.layers) == 2
    assert sum(layer is blocks[0] for layer in model.layers) == 1


def test_an_adapted_token_network_gets_token_insertions():
    model = as_growable(*token_parts(), example_input=torch.randn(2, 5, 3))
    assert model.state_shape == (5, 4) and model.insertion_kind(0) == Token() and model.insertion_shape(0) == (4, 5)
    assert isinstance(model.insert_layer(1), ResidualToken)


# ------------------------------------------------------------ the topological derivative
def _real_change(model, x, y, location, weight, bias):
    grown = copy.deepcopy(model)
    grown.insert_layer(location, weight, bias)
    with torch.no_grad():
        return float(F.mse_loss(grown(x), y) - F.mse_loss(model(x), y))


@pytest.mark.parametrize("network", ["mlp", "cnn", "tokens"])
def test_the_topological_derivative_is_the_real_change_of_the_loss(network):
    g = torch.Generator().manual_seed(7)
    if network == "mlp":
        stem, blocks, head = mlp_parts(width=5, seed=7)
        x, y = torch.randn(64, 4, generator=g), torch.randn(64, 1, generator=g)
    elif network == "cnn":
        stem, blocks, head = cnn_parts(seed=7)
        x, y = torch.randn(16, 1, 5, 5, generator=g), torch.randn(16, 2, generator=g)
    else:
        stem, blocks, head = token_parts(seed=7)
        x, y = torch.randn(32, 5, 3, generator=g), torch.randn(32, 2, generator=g)
    x, y = x.double(), y.double()
    model = as_growable(stem, blocks, head, example_input=x).double().eval()
    td = topological_derivative(model, (x, y), "mse", keep_blocks=True)
    assert td.eigenvalues.shape == (len(model.locations),)
    for location in model.locations:
        weight, bias = td.layer(location, EPS, k=1)
        predicted = td.predicted_change(location, EPS, 1)
        ratio = _real_change(model, x, y, location, weight, bias) / predicted
        assert abs(ratio - 1) < 0.01, f"{network} location {location}: real / predicted = {ratio}"


# ------------------------------------------------------------ save and load
def _through_a_file(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_a_grown_state_dict_loads_into_the_network_as_built():
    grown = as_growable(*mlp_parts(seed=0))
    train = helpers.regression_data(200, 6, dtype=torch.float32)
    Grower(grown, "mse", helpers.short_growth_config(max_depth=4)).fit(train)
    grown.insert_block(0, ResidualBlock(topogrow.nn.make_block("gelu-mlp", grown, 0), name="gelu-mlp"))
    grown.remove_layer(4)
    fresh = as_growable(*mlp_parts(seed=1))  # fresh modules, built as before
    assert fresh.depth == 2
    fresh.load_state_dict(_through_a_file(grown.state_dict()))
    assert fresh.depth == grown.depth == 4 and fresh.spec() == grown.spec()
    x = train[0][:10]
    grown.eval(), fresh.eval()
    assert torch.equal(fresh(x), grown(x))


def test_a_grown_cnn_state_dict_round_trips():
    x, _ = images(8)
    torch.manual_seed(3)
    grown = as_growable(*cnn_parts(seed=0), example_input=x)
    grown.insert_layer(1, torch.randn(3, 3, 3, 3), torch.randn(3))
    grown.insert_layer(0, torch.randn(3, 27), torch.randn(3))
    fresh = as_growable(*cnn_parts(seed=2), example_input=x)
    fresh.load_state_dict(_through_a_file(grown.state_dict()))
    grown.eval(), fresh.eval()
    assert fresh.depth == 3 and torch.equal(fresh(x), grown(x))


def test_topogrow_save_says_to_save_the_state_dict(tmp_path):
    model = as_growable(*mlp_parts())
    with pytest.raises(TypeError, match=r"cannot save a GrowableNetwork .*save model\.state_dict\(\) with torch\.save"):
        topogrow.save(model, tmp_path / "model")
    train = helpers.regression_data(64, 1, dtype=torch.float32)
    with pytest.raises(TypeError, match=r"load it into as_growable\(\.\.\.\) built as before"):
        Grower(model, "mse", helpers.short_growth_config()).fit(train, checkpoint_dir=tmp_path / "ckpt")


# ------------------------------------------------------------ errors
def test_the_state_shape_must_be_told():
    stem, blocks, _ = mlp_parts()
    with pytest.raises(
        ValueError,
        match=r"cannot tell the state's shape: pass example_input=\.\.\. \(a batch of inputs\) or a head that is "
        r"an nn\.Linear \(got a Sequential\)",
    ):
        as_growable(stem, blocks, nn.Sequential(nn.Tanh(), nn.Linear(8, 1)))
    model = as_growable(stem, blocks, nn.Sequential(nn.Tanh(), nn.Linear(8, 1)), example_input=torch.randn(3, 4))
    assert model.state_shape == (8,)


def test_a_block_that_changes_the_state_shape_is_named():
    stem, blocks, head = mlp_parts()
    message = r"block 1 \(Squash\) maps states \(batch, 8\) to \(batch, 7\): a residual block x -> x \+ g\(x\) must"
    with pytest.raises(ValueError, match=message):
        as_growable(stem, [blocks[0], Squash(), blocks[1]], head)
    with pytest.raises(ValueError, match=message):
        as_growable(stem, [blocks[0], Squash()], nn.Linear(7, 1), example_input=torch.randn(3, 4))
    with pytest.raises(ValueError, match=r"block 0 \(ConvResidual\) fails on states \(batch, 8\) \(the head's in_f"):
        as_growable(stem, [ConvResidual(3)], head)


def test_arguments_that_are_not_modules_are_refused():
    stem, blocks, head = mlp_parts()
    with pytest.raises(TypeError, match="expected the stem to be an nn.Module, got function"):
        as_growable(lambda x: x, blocks, head)
    with pytest.raises(TypeError, match="expected the head to be an nn.Module, got str"):
        as_growable(stem, blocks, "linear")
    with pytest.raises(TypeError, match=r"expected blocks\[1\] to be an nn.Module, got function"):
        as_growable(stem, [blocks[0], lambda x: x], head)
    with pytest.raises(TypeError, match=r"iterable of residual blocks .*got one Residual; pass \[block\]"):
        as_growable(stem, blocks[0], head)
    with pytest.raises(TypeError, match="expected blocks to be an iterable of residual blocks, got int"):
        as_growable(stem, 3, head)
    with pytest.raises(TypeError, match=r"as_growable\(model\) takes an nn.Sequential .*got a Linear; for other"):
        as_growable(head)
    with pytest.raises(TypeError, match=r"as_growable\(stem, blocks, head\): the head is missing"):
        as_growable(stem, blocks)
    with pytest.raises(TypeError, match=r"split applies to as_growable\(sequential\) only"):
        as_growable(stem, blocks, head, split=(1, 2))
    with pytest.raises(TypeError, match="expected example_input to be a tensor"):
        as_growable(stem, blocks, head, example_input=object())


def test_bad_sequentials_splits_and_kernel_sizes_are_refused():
    stem, blocks, head = mlp_parts()
    with pytest.raises(ValueError, match=r"needs a stem and a head \(at least 2 modules\), got 1"):
        as_growable(nn.Sequential(head))
    with pytest.raises(ValueError, match=r"split=\(0, 2\) must leave a stem, blocks and a head in the 4 modules"):
        as_growable(nn.Sequential(stem, *blocks, head), split=(0, 2))
    with pytest.raises(ValueError, match=r"split must be a pair \(start, stop\) of integers, got 2"):
        as_growable(nn.Sequential(stem, *blocks, head), split=2)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        as_growable(stem, blocks, head, kernel_size=2)


def test_an_example_input_that_does_not_run_and_an_unsupported_rank():
    stem, blocks, head = mlp_parts()
    with pytest.raises(ValueError, match=r"example_input does not run through the network as a batch \(the stem fails"):
        as_growable(stem, blocks, head, example_input=torch.randn(3, 5))
    volumes = nn.Unflatten(1, (1, 2, 2, 2))
    with pytest.raises(ValueError, match=r"the state after the stem has shape \(batch, 1, 2, 2, 2\); layers are"):
        as_growable(volumes, [], nn.Sequential(nn.Flatten(), nn.Linear(8, 1)), example_input=torch.randn(3, 8))


def test_a_network_that_is_not_growable_is_told_about_as_growable():
    network = nn.Sequential(*mlp_parts()[0], *mlp_parts()[1], mlp_parts()[2])
    x, y = torch.randn(8, 4), torch.randn(8, 1)
    with pytest.raises(TypeError, match=r"got Sequential; make a residual network of your own growable with topogrow"):
        topological_derivative(network, (x, y), "mse")
    assert as_growable(network, split=(2, -1)).depth == 2
