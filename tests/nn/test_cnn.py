"""ResidualCNN: the convolutional closed form of METHOD.md against the real loss change.

Checks, at every insertion location: finite differences of the training loss
after inserting the eigenvector layer, the dense Hessian of the loss with respect
to a zero-inserted convolution, exact zero insertion; then argument checks and a
short growth run with every strategy.
"""

import copy
import json

import pytest
import torch
from torch.func import functional_call
from torch.nn import functional as F

from topogrow import Grower, GrowthConfig, topological_derivative
from topogrow.core.layer_kinds import Conv2d
from topogrow.growth.strategies import growth_strategies, inserts_layers
from topogrow.nn import ResidualCNN, ResidualConv, SiLUTanh

IN_CHANNELS = 2
IMAGE = 7
CHANNELS = (3, 4)
DEPTHS = (1, 2)
OUT_FEATURES = 2
N_CLASSES = 3
N_SAMPLES = 24
EPS = 1e-3
LOSS_FNS = {"mse": F.mse_loss, "cross_entropy": F.cross_entropy}

# torch.func imports torch internals that still call torch.jit.script
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


# ---------------------------------------------------------------- helpers
def make_data(loss: str, n_samples: int = N_SAMPLES, seed: int = 0, image: int = IMAGE):
    g = torch.Generator().manual_seed(2000 + seed)
    x = torch.randn(n_samples, IN_CHANNELS, image, image, generator=g, dtype=torch.float64)
    if loss == "mse":
        y = torch.randn(n_samples, OUT_FEATURES, generator=g, dtype=torch.float64)
    else:
        y = torch.randint(0, N_CLASSES, (n_samples,), generator=g)
    return x, y


def make_model(loss: str = "mse", seed: int = 0, dtype=torch.float64, **kwargs) -> ResidualCNN:
    torch.manual_seed(seed)
    args = dict(channels=CHANNELS, depths=DEPTHS, out_features=OUT_FEATURES if loss == "mse" else N_CLASSES)
    args.update(kwargs)
    return ResidualCNN(IN_CHANNELS, **args).to(dtype)


def full_loss(model, x, y, loss: str) -> float:
    with torch.no_grad():
        return LOSS_FNS[loss](model(x), y).item()


# ------------------------------------------------- 1. finite differences
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_eigenvector_layer_matches_real_loss_change_at_every_location(loss):
    x, y = make_data(loss, seed=1)
    model = make_model(loss, seed=1)
    td = topological_derivative(model, (x, y), loss, batch_size=10)  # streamed: 3 batches
    assert td.n_locations == len(model.locations) == 5
    assert td.loss == pytest.approx(full_loss(model, x, y, loss), rel=1e-12)
    base = full_loss(model, x, y, loss)
    ratios = []
    for location in model.locations:
        c = model.channels[model.stage_position(location)[0]]
        assert td.block_eigenvectors[location].shape == (c, c * 9 + 1) == model.insertion_shape(location)
        for k in (1, 2):
            weight, bias = td.layer(location, EPS, k)
            grown = copy.deepcopy(model)
            grown.insert_layer(location, weight, bias)
            actual = full_loss(grown, x, y, loss) - base
            predicted = td.predicted_change(location, EPS, k)
            ratio = actual / predicted
            ratios.append(ratio)
            assert abs(ratio - 1) < 0.01, f"location {location}, k={k}: measured/predicted = {ratio}"
    print(f"CNN FD ratios {loss}: min {min(ratios):.6f} max {max(ratios):.6f}")


def test_insertion_with_a_four_dimensional_kernel_equals_the_flat_rows():
    x, y = make_data("mse", seed=2)
    model = make_model(seed=2)
    td = topological_derivative(model, (x, y), "mse")
    weight, bias = td.layer(3, 0.5, 2)
    flat, full = copy.deepcopy(model), copy.deepcopy(model)
    flat.insert_layer(3, weight, bias)
    full.insert_layer(3, weight.reshape(4, 4, 3, 3), bias)
    assert torch.equal(flat(x), full(x))
    assert torch.equal(flat.layers[2].rows(), td.rows(3, 0.5, 2))


# ------------------------------------------------- 2. dense reference
def dense_minus_hessian(model, x, y, loss, location):
    """-d^2 J / d theta^2 at theta = 0, theta the flattened rows [K | b] of a zero conv inserted at l."""
    grown = copy.deepcopy(model)
    grown.insert_layer(location)
    stage, position = grown.stage_position(location)
    n, m = grown.insertion_shape(location)
    k = grown.kernel_size
    params = {name: p.detach() for name, p in grown.named_parameters()}
    prefix = f"stages.{stage}.{position}.affine."
    assert torch.count_nonzero(params[prefix + "weight"]) == 0

    def loss_of(theta):
        rows = theta.reshape(n, m)
        changed = dict(params)
        changed[prefix + "weight"] = rows[:, :-1].reshape(n, n, k, k)
        changed[prefix + "bias"] = rows[:, -1]
        return LOSS_FNS[loss](functional_call(grown, changed, (x,)), y)

    return -torch.func.hessian(loss_of)(torch.zeros(n * m, dtype=torch.float64))


@pytest.mark.parametrize(("loss", "location"), [("mse", 0), ("cross_entropy", 4)])
def test_blocks_equal_dense_hessian_of_loss(loss, location):
    x, y = make_data(loss, n_samples=8, seed=3, image=6)
    model = make_model(loss, seed=3)
    td = topological_derivative(model, (x, y), loss, batch_size=3, keep_blocks=True)
    q_dense = dense_minus_hessian(model, x, y, loss, location)
    n, m = model.insertion_shape(location)
    assert q_dense.shape == (n * m, n * m)
    assert td.blocks[location].shape == (n, m, m)
    # block diagonal, block c = output channel c (row c of [K | b])
    assert torch.allclose(q_dense, torch.block_diag(*td.blocks[location]), rtol=0, atol=1e-10)
    assert torch.linalg.eigvalsh(q_dense)[-1].item() == pytest.approx(td.eigenvalues[location].item(), abs=1e-10)


# -------------------------------------------- 3. zero insertion is exact
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zero_insertion_is_exactly_the_identity_at_every_location(dtype):
    model = make_model(dtype=dtype)
    x = 3 * torch.randn(5, IN_CHANNELS, 8, 8, dtype=dtype)
    before = model(x)
    pred_before, states_before = model.forward_states(x)
    assert torch.equal(before, pred_before)
    assert len(states_before) == len(model.locations) == 5
    assert [s.shape[1:] for s in states_before] == [(3, 8, 8)] * 2 + [(4, 4, 4)] * 3
    for location in model.locations:
        stage, position = model.stage_position(location)
        grown = copy.deepcopy(model)
        layer = grown.insert_layer(location)
        assert isinstance(layer, ResidualConv)
        assert grown.stages[stage][position] is layer
        assert grown.depth == model.depth + 1
        assert grown.depths == tuple(d + (i == stage) for i, d in enumerate(DEPTHS))
        assert list(grown.locations) == list(range(6))
        assert layer.affine.weight.dtype == dtype
        assert torch.count_nonzero(layer.affine.weight) == 0 and torch.count_nonzero(layer.affine.bias) == 0
        assert torch.equal(grown(x), before)
        pred, states = grown.forward_states(x)
        assert torch.equal(pred, before)
        expected = states_before[: location + 1] + [states_before[location]] + states_before[location + 1 :]
        for got, want in zip(states, expected, strict=True):
            assert torch.equal(got, want)
    assert model.depths == DEPTHS  # the original is untouched


def test_inserted_layer_computes_x_plus_sigma_of_conv():
    model = make_model()
    x = torch.randn(4, IN_CHANNELS, 6, 6, dtype=torch.float64)
    _, states = model.forward_states(x)
    weight = torch.randn(3, 3, 3, 3, dtype=torch.float64)
    bias = torch.randn(3, dtype=torch.float64)
    grown = copy.deepcopy(model)
    grown.insert_layer(1, weight, bias)
    _, new_states = grown.forward_states(x)
    expected = states[1] + SiLUTanh()(F.conv2d(states[1], weight, bias, padding=1))
    assert torch.allclose(new_states[2], expected, atol=1e-14)
    # rows are [K reshaped (C, C k k) | b] and agree with the Conv2d kind's unfolded patches
    rows = grown.layers[1].rows()
    assert torch.equal(rows, torch.cat([weight.reshape(3, 27), bias[:, None]], dim=1))
    patches = Conv2d(3).patches(states[1])  # (B, H W, C k k + 1)
    by_rows = (patches @ rows.T).transpose(1, 2).reshape(4, 3, 6, 6)
    assert torch.allclose(by_rows, F.conv2d(states[1], weight, bias, padding=1), atol=1e-13)


def test_structure_and_spec_round_trip():
    model = make_model(kernel_size=5, activation="z-tanh", image_size=7)
    assert model.depth == 3 and model.depths == DEPTHS
    assert [model.stage_position(location) for location in model.locations] == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]
    assert model.insertion_kind(2) == Conv2d(5)
    assert model.insertion_shape(0) == (3, 3 * 25 + 1) and model.insertion_shape(4) == (4, 4 * 25 + 1)
    assert model.activation_curvature == pytest.approx(2.0)
    model.insert_layer(0)
    model.insert_layer(5)
    spec = model.spec()
    assert spec == {
        "in_channels": IN_CHANNELS,
        "channels": [3, 4],
        "depths": [2, 3],
        "out_features": OUT_FEATURES,
        "kernel_size": 5,
        "activation": "z-tanh",
        "image_size": [7, 7],
    }
    rebuilt = ResidualCNN(**json.loads(json.dumps(spec)))
    assert rebuilt.depths == model.depths
    assert rebuilt.n_parameters() == model.n_parameters()
    assert [p.shape for p in rebuilt.parameters()] == [p.shape for p in model.parameters()]
    # zero-depth stages and a single stage work too
    empty = ResidualCNN(1, channels=(2,), depths=(0,), out_features=3)
    assert list(empty.locations) == [0] and empty.depth == 0
    assert empty(torch.randn(2, 1, 5, 5)).shape == (2, 3)


# ---------------------------------------------------------- 4. errors
def test_insert_layer_rejects_bad_arguments():
    model = make_model()
    good_b = torch.zeros(3)
    with pytest.raises(ValueError, match=r"weight must have shape \(3, 3, 3, 3\) or \(3, 27\)"):
        model.insert_layer(0, torch.zeros(3, 28), good_b)
    with pytest.raises(ValueError, match=r"weight must have shape"):
        model.insert_layer(2, torch.zeros(3, 27), torch.zeros(4))  # stage 1 has 4 channels
    with pytest.raises(ValueError, match=r"bias must have shape \(3,\)"):
        model.insert_layer(0, torch.zeros(3, 27), torch.zeros(4))
    nan_w = torch.zeros(3, 3, 3, 3)
    nan_w[0, 1, 2, 0] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        model.insert_layer(0, nan_w, good_b)
    for location in (-1, 5, 1.0, True, "0", None):
        with pytest.raises(ValueError, match=r"location must be an integer in 0\.\.4"):
            model.insert_layer(location)
        with pytest.raises(ValueError, match=r"location must be an integer in 0\.\.4"):
            model.insertion_shape(location)
    assert model.depths == DEPTHS  # nothing was inserted by the failed calls


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"in_channels": 0}, "in_channels"),
        ({"channels": ()}, "channels"),
        ({"channels": (3, 0)}, r"channels\[1\]"),
        ({"channels": "34"}, "channels"),
        ({"depths": (1,)}, "one depth per stage"),
        ({"depths": (1, -1)}, r"depths\[1\]"),
        ({"out_features": 0}, "out_features"),
        ({"kernel_size": 2}, "odd"),
        ({"kernel_size": 0}, "kernel_size"),
        ({"image_size": (7,)}, "image_size"),
        ({"image_size": 0}, "image_size"),
        ({"activation": "relu"}, "unknown activation"),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs, message):
    args = {"in_channels": 1, "channels": (3, 4), "depths": (1, 1), **kwargs}
    with pytest.raises(ValueError, match=message):
        ResidualCNN(**args)


def test_forward_checks_input_shape():
    model = make_model()
    for bad in (torch.zeros(5, 3, 6, 6), torch.zeros(5, 2 * 36), torch.zeros(2, 6, 6)):
        with pytest.raises(ValueError, match=r"expected input of shape \(batch, 2, H, W\), got"):
            model(bad.double())
        with pytest.raises(ValueError, match=r"\(batch, 2, H, W\)"):
            model.forward_states(bad.double())
    sized = make_model(image_size=(6, 8))
    assert sized(torch.zeros(1, 2, 6, 8, dtype=torch.float64)).shape == (1, 2)
    with pytest.raises(ValueError, match=r"expected input of shape \(batch, 2, 6, 8\), got \(1, 2, 8, 6\)"):
        sized(torch.zeros(1, 2, 8, 6, dtype=torch.float64))


# ---------------------------------------------------------- 5. growth
@pytest.mark.parametrize("strategy", growth_strategies())
def test_every_strategy_grows_a_cnn(strategy):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(48, 1, 6, 6, generator=g, dtype=torch.float64)
    y = (x[:, 0, :3].mean(dim=(1, 2)) > x[:, 0, 3:].mean(dim=(1, 2))).long()
    torch.manual_seed(0)
    model = ResidualCNN(1, channels=(3, 4), depths=(1, 0), out_features=2).double()
    config = GrowthConfig(
        strategy=strategy,
        max_depth=3,
        epochs_per_stage=1,
        final_epochs=1,
        growth_patience=100,
        batch_size=16,
        lr=1e-2,
        device="cpu",
        early_stopping=False,
        rollback=False,
    )
    grower = Grower(model, "cross_entropy", config)
    history = grower.fit((x[:32], y[:32]), (x[32:], y[32:]))
    assert {id(p) for g_ in grower.optimizer.param_groups for p in g_["params"]} == {
        id(p) for p in grower.model.parameters()
    }
    if strategy == "small-init":  # the layers go in before training
        assert grower.model.depth == 3 and history.insertions == []
        return
    if not inserts_layers(strategy):
        assert grower.model.depth == 1 and history.insertions == []
        return
    assert grower.model.depth == 3
    assert grower.model.spec()["depths"] == list(grower.model.depths)
    assert sum(grower.model.spec()["depths"]) == 3
    assert len(history.insertions) == 2
    for record in history.insertions:
        if strategy in ("td", "td-where", "td-how", "small-where", "td-eigenspace"):
            assert len(record.eigenvalues) == record.depth + 2  # depth + number of stages
        if strategy in ("td", "td-how"):
            assert record.actual_change <= 0
        if strategy == "zero":
            assert record.location == record.depth + 1  # last position of the last stage
            assert record.actual_change == 0.0


def test_cnn_grows_by_a_matrix_free_conv_block():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(48, 1, 6, 6, generator=g, dtype=torch.float64)
    y = (x[:, 0, :3].mean(dim=(1, 2)) > x[:, 0, 3:].mean(dim=(1, 2))).long()
    torch.manual_seed(0)
    model = ResidualCNN(1, channels=(3, 4), depths=(1, 0), out_features=2).double()
    closed = topological_derivative(model, (x, y), "cross_entropy")
    config = GrowthConfig(
        block="conv", max_depth=3, epochs_per_stage=1, final_epochs=1, growth_patience=100, rollback=False
    )
    grower = Grower(model, "cross_entropy", config)
    history = grower.fit((x[:32], y[:32]), (x[32:], y[32:]))
    assert grower.model.depth == 3 and len(history.insertions) == 2
    assert all(record.actual_change <= 0 for record in history.insertions)
    # the matrix-free eigenvalues of the conv block before growth equal the closed form
    from topogrow.core import matrix_free_topological_derivative
    from topogrow.nn.blocks import make_block

    torch.manual_seed(0)
    fresh = ResidualCNN(1, channels=(3, 4), depths=(1, 0), out_features=2).double()
    free = matrix_free_topological_derivative(
        fresh, (x, y), "cross_entropy", lambda location: make_block("conv", fresh, location).double(), k=1
    )
    assert torch.allclose(free.eigenvalues, closed.eigenvalues, rtol=1e-8, atol=1e-12)
