"""Growable modules: exact zero insertion, argument checks, activation checks."""

import copy

import pytest
import torch
from torch import nn

from topogrow import ResidualMLP
from topogrow.nn import ACTIVATIONS, SiLUTanh, ZTanh, activation_curvature, resolve_activation


def make_model(width=5, depth=2, dtype=torch.float64, seed=0, **kwargs):
    torch.manual_seed(seed)
    return ResidualMLP(3, width, depth, 2, **kwargs).to(dtype)


# -------------------------------------------- 3. zero insertion is exact
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("depth", [0, 1, 3])
@pytest.mark.parametrize("activation", [None, "z-tanh"])
def test_zero_insertion_is_exactly_the_identity(dtype, depth, activation):
    model = make_model(width=4, depth=depth, dtype=dtype, activation=activation)
    x = 3 * torch.randn(32, 3, dtype=dtype)
    before = model(x)
    pred_before, states_before = model.forward_states(x)
    assert torch.equal(before, pred_before)
    for location in model.locations:
        grown = copy.deepcopy(model)
        layer = grown.insert_layer(location)
        assert grown.depth == depth + 1
        assert list(grown.locations) == list(range(depth + 2))
        assert grown.layers[location] is layer
        assert layer.affine.weight.dtype == dtype and layer.affine.bias.dtype == dtype
        assert torch.count_nonzero(layer.affine.weight) == 0 and torch.count_nonzero(layer.affine.bias) == 0
        assert torch.equal(grown(x), before)
        pred, states = grown.forward_states(x)
        assert torch.equal(pred, before)
        assert len(states) == depth + 2
        # states up to x_l are unchanged, the new state x_{l+1} equals x_l, the rest shift by one
        expected = states_before[: location + 1] + [states_before[location]] + states_before[location + 1 :]
        for got, want in zip(states, expected, strict=True):
            assert torch.equal(got, want)
    assert model.depth == depth  # the original is untouched


def test_inserted_layer_computes_x_plus_sigma_of_wx_plus_b_at_its_location():
    model = make_model(width=4, depth=2)
    x = torch.randn(10, 3, dtype=torch.float64)
    _, states = model.forward_states(x)
    weight = torch.randn(4, 4, dtype=torch.float64)
    bias = torch.randn(4, dtype=torch.float64)
    grown = copy.deepcopy(model)
    grown.insert_layer(1, weight, bias)
    _, new_states = grown.forward_states(x)
    expected = states[1] + SiLUTanh()(states[1] @ weight.T + bias)
    assert torch.allclose(new_states[2], expected, atol=1e-14)
    assert torch.equal(grown.layers[1].affine.weight, weight)
    assert torch.equal(grown.layers[1].affine.bias, bias)
    # float32 inputs (e.g. numpy-made) are cast to the model's dtype
    grown32 = copy.deepcopy(model)
    grown32.insert_layer(0, weight.float(), bias.float())
    assert grown32.layers[0].affine.weight.dtype == torch.float64


def test_insert_layer_rejects_bad_arguments():
    model = make_model(width=4, depth=2)
    good_w, good_b = torch.zeros(4, 4), torch.zeros(4)
    with pytest.raises(ValueError, match=r"weight must have shape \(4, 4\)"):
        model.insert_layer(0, torch.zeros(4, 5), good_b)
    with pytest.raises(ValueError, match=r"weight must have shape"):
        model.insert_layer(0, torch.zeros(16), good_b)
    with pytest.raises(ValueError, match=r"bias must have shape \(4,\)"):
        model.insert_layer(0, good_w, torch.zeros(5))
    with pytest.raises(ValueError, match=r"bias must have shape"):
        model.insert_layer(0, good_w, torch.zeros(4, 1))
    nan_w = good_w.clone()
    nan_w[1, 2] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        model.insert_layer(0, nan_w, good_b)
    inf_b = good_b.clone()
    inf_b[0] = float("inf")
    with pytest.raises(ValueError, match="finite"):
        model.insert_layer(0, good_w, inf_b)
    for location in (-1, 3, 10, 1.0, True, "0", None):
        with pytest.raises(ValueError, match=r"location must be an integer in 0\.\.2"):
            model.insert_layer(location)
    assert model.depth == 2  # nothing was inserted by the failed calls
    model.insert_layer(2)  # the last location (just before the head) is valid
    assert model.depth == 3


def test_constructor_rejects_bad_sizes():
    for kwargs in (
        {"in_features": 0},
        {"width": 0},
        {"out_features": -1},
        {"depth": -1},
        {"width": 2.0},
        {"depth": True},
    ):
        args = {"in_features": 3, "width": 4, "depth": 1, "out_features": 2, **kwargs}
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            ResidualMLP(**args)


def test_forward_checks_input_shape():
    model = make_model(width=4, depth=1)
    with pytest.raises(ValueError, match=r"expected input of shape \(batch, 3\), got \(5, 4\)"):
        model(torch.zeros(5, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\(batch, 3\)"):
        model.forward_states(torch.zeros(3, dtype=torch.float64))


def test_spec_round_trip():
    model = make_model(width=4, depth=1, activation="z-tanh")
    model.insert_layer(0)
    spec = model.spec()
    assert spec == {"in_features": 3, "width": 4, "depth": 2, "out_features": 2, "activation": "z-tanh"}
    rebuilt = ResidualMLP(**spec)
    assert rebuilt.n_parameters() == model.n_parameters()
    assert rebuilt.activation_curvature == 2.0


# ------------------------------------------------- 4. activations
def test_default_activation_has_unit_curvature():
    model = make_model()
    assert model.activation_curvature == pytest.approx(1.0, abs=1e-12)
    assert model.activation_name == "silu-tanh"
    assert isinstance(model.layers[0].activation, SiLUTanh)
    z = torch.linspace(-3, 3, 7, dtype=torch.float64)
    assert torch.allclose(SiLUTanh()(z), 2 * z * torch.sigmoid(z) - torch.tanh(z))
    assert SiLUTanh()(torch.zeros(1)).item() == 0.0


def test_z_tanh_activation_has_curvature_two():
    model = make_model(activation="z-tanh")
    assert model.activation_curvature == pytest.approx(2.0, abs=1e-12)
    assert isinstance(model.layers[0].activation, ZTanh)
    assert activation_curvature(ZTanh()) == pytest.approx(2.0, abs=1e-12)
    assert set(ACTIVATIONS) == {"silu-tanh", "z-tanh"}


@pytest.mark.parametrize(
    ("activation", "condition", "value"),
    [
        (nn.Tanh(), "sigma'(0) = ", "1"),
        (nn.Sigmoid(), "sigma(0) = ", "0.5"),
        (nn.ReLU(), "sigma''(0)", ""),
        (nn.Identity(), "sigma'(0) = ", "1"),
        (nn.Softplus(), "sigma(0) = ", "0.693"),
    ],
    ids=["tanh", "sigmoid", "relu", "identity", "softplus"],
)
def test_unsuitable_activations_are_rejected_naming_the_condition(activation, condition, value):
    with pytest.raises(ValueError) as info:
        ResidualMLP(3, 4, 1, 2, activation=activation)
    message = str(info.value)
    # the message says which condition fails first, with the measured value
    assert f"has {condition}{value}" in message
    with pytest.raises(ValueError):
        activation_curvature(activation)


def test_callable_activations():
    model = make_model(activation=lambda z: z**2)
    assert model.activation_curvature == pytest.approx(2.0)
    assert model.activation_name == "custom"
    with pytest.raises(ValueError, match=r"sigma\(0\) = 1"):
        ResidualMLP(3, 4, 1, 2, activation=torch.cos)
    with pytest.raises(ValueError, match=r"sigma''\(0\)"):
        ResidualMLP(3, 4, 1, 2, activation=lambda z: z**3)
    with pytest.raises(TypeError):
        ResidualMLP(3, 4, 1, 2, activation=3)


def test_unknown_activation_name_suggests_the_closest():
    with pytest.raises(ValueError, match=r"did you mean 'silu-tanh'\?"):
        ResidualMLP(3, 4, 1, 2, activation="silu_tanh")
    with pytest.raises(ValueError, match=r"did you mean 'z-tanh'\?"):
        resolve_activation("ztanh")
    with pytest.raises(ValueError, match="unknown activation 'relu'"):
        resolve_activation("relu")


def test_each_layer_has_its_own_activation_module():
    """Layers must not share one module instance (deepcopy of the activation per layer)."""
    model = make_model(depth=2)
    model.insert_layer(0)
    ids = {id(layer.activation) for layer in model.layers}
    assert len(ids) == 3
