"""The growable-model contract: every registered model has every member, zero insertions are
exact identities, and insert_layer / insert_block are validated the same way on every model."""

import copy
import re
from pathlib import Path

import pytest
import torch
from torch import nn

import topogrow
from topogrow.nn import CONTRACT, MODELS, GrowableModel, ResidualBlock, ResidualCNN, ResidualMLP, ViT, ZTanh
from topogrow.nn.blocks import make_block

#: A tiny float64 instance and a matching input batch of every built-in registered model.
TINY = {
    "mlp": lambda: (ResidualMLP(3, 4, 2, 2).double(), torch.randn(5, 3, dtype=torch.float64)),
    "cnn": lambda: (
        ResidualCNN(1, (2, 3), (1, 1), 2, image_size=6).double(),
        torch.randn(5, 1, 6, 6, dtype=torch.float64),
    ),
    "vit": lambda: (
        ViT(image_size=4, patch_size=2, dim=4, depth=1, heads=2, out_features=2).double(),
        torch.randn(5, 1, 4, 4, dtype=torch.float64),
    ),
}


def test_every_registered_model_has_a_tiny_instance_here():
    assert list(MODELS) == ["mlp", "cnn", "vit"]
    assert set(TINY) == set(MODELS)
    assert [MODELS[name] for name in TINY] == [ResidualMLP, ResidualCNN, ViT]


@pytest.mark.parametrize("name", list(TINY))
def test_every_model_satisfies_the_contract(name):
    model, x = TINY[name]()
    assert isinstance(model, GrowableModel)
    for member in CONTRACT:
        assert hasattr(model, member), member
    prediction, states = model.forward_states(x)
    assert torch.equal(prediction, model(x))
    assert isinstance(model.locations, range) and len(states) == len(model.locations)
    assert isinstance(model.depth, int) and model.depth == len(model.layers) == 2 - (name == "vit")
    for location, state in zip(model.locations, states, strict=True):
        n, m = model.insertion_shape(location)
        assert state.shape[0] == len(x) and n == state.shape[1 if name != "vit" else -1]
        assert model.insertion_kind(location) is not None
    assert isinstance(model.activation_curvature, float)
    assert model.n_parameters() == sum(p.numel() for p in model.parameters())
    assert type(model)(**model.spec()).spec() == model.spec()


@pytest.mark.parametrize("name", list(TINY))
def test_head_modules_are_the_modules_after_the_last_state(name):
    model, x = TINY[name]()
    heads = model.head_modules()
    assert all(isinstance(module, nn.Module) for module in heads)
    expected = [model.head, model.norm] if name == "vit" else [model.head]
    assert len(heads) == len(expected) and all(a is b for a, b in zip(heads, expected, strict=True))
    # the head modules alone map the last state to the prediction
    prediction, states = model.forward_states(x)
    last = states[-1]
    if name == "mlp":
        assert torch.equal(heads[0](last), prediction)
    elif name == "cnn":
        assert torch.equal(heads[0](last.mean(dim=(2, 3))), prediction)
    else:
        assert torch.equal(heads[0](heads[1](last[:, 0])), prediction)


@pytest.mark.parametrize("name", list(TINY))
def test_new_activation_is_a_fresh_copy_of_the_models(name):
    model, _ = TINY[name]()
    first, second = model.new_activation(), model.new_activation()
    assert isinstance(first, nn.Module) and first is not second
    assert type(first) is type(model.insert_layer(0).activation)
    assert topogrow.nn.activation_curvature(first) == model.activation_curvature


def test_growable_model_is_abstract():
    with pytest.raises(TypeError, match="abstract"):
        GrowableModel()


# ------------------------------------------------------------ insert_layer
@pytest.mark.parametrize("name", list(TINY))
def test_zero_insert_layer_is_an_exact_identity_at_every_location(name):
    model, x = TINY[name]()
    prediction, states = model.forward_states(x)
    for location in model.locations:
        grown = copy.deepcopy(model)
        layer = grown.insert_layer(location)
        assert grown.depth == model.depth + 1
        assert layer.affine.weight.dtype == torch.float64  # moved to the model's dtype
        assert torch.equal(layer.rows(), torch.zeros_like(layer.rows()))
        new_prediction, new_states = grown.forward_states(x)
        assert torch.equal(new_prediction, prediction)
        # the new layer repeats the state it was inserted after
        assert torch.equal(new_states[location + 1], new_states[location])
    # a non-zero layer does change the output (so the check above means something)
    n, m = model.insertion_shape(0)
    model.insert_layer(0, torch.full((n, m - 1), 0.5), torch.full((n,), 0.5))
    assert not torch.equal(model(x), prediction)


@pytest.mark.parametrize("name", list(TINY))
def test_insert_layer_loads_the_given_rows(name):
    model, _ = TINY[name]()
    n, m = model.insertion_shape(1)
    weight, bias = torch.randn(n, m - 1), torch.randn(n)  # float32: cast to the model's float64
    layer = model.insert_layer(1, weight, bias)
    assert torch.equal(layer.rows(), torch.cat([weight, bias[:, None]], dim=1).double())


def test_a_conv_weight_is_accepted_as_a_kernel_or_flat():
    model, _ = TINY["cnn"]()
    kernel = torch.randn(2, 2, 3, 3)
    flat = model.insert_layer(0, kernel.reshape(2, -1), torch.zeros(2))
    shaped = model.insert_layer(0, kernel, torch.zeros(2))
    assert torch.equal(flat.affine.weight, shaped.affine.weight)


@pytest.mark.parametrize("name", list(TINY))
def test_insert_layer_rejects_bad_arguments_the_same_way(name):
    model, _ = TINY[name]()
    n, m = model.insertion_shape(0)
    last = len(model.locations) - 1
    with pytest.raises(ValueError, match=rf"weight must have shape \({n}, .*got \({n}, {m}\)"):
        model.insert_layer(0, torch.zeros(n, m), torch.zeros(n))
    with pytest.raises(ValueError, match=rf"bias must have shape \({n},\), got \({n + 1},\)"):
        model.insert_layer(0, torch.zeros(n, m - 1), torch.zeros(n + 1))
    with pytest.raises(ValueError, match="weight and bias of an inserted layer must be finite"):
        model.insert_layer(0, torch.full((n, m - 1), float("nan")), torch.zeros(n))
    for location in (-1, last + 1, 1.0, True, None):
        with pytest.raises(ValueError, match=rf"location must be an integer in 0\.\.{last}, got"):
            model.insert_layer(location)
    assert model.depth == TINY[name]()[0].depth  # nothing was inserted


# ------------------------------------------------------------ insert_block
def _good_block(name, model):
    return ResidualBlock(make_block({"mlp": "dense", "cnn": "conv", "vit": "encoder"}[name], model, 0), name=None)


class Squash(nn.Module):
    """Drops the last feature: the wrong shape on every model."""

    def forward(self, x):
        return x[..., :-1]


@pytest.mark.parametrize("name", list(TINY))
def test_insert_block_rejects_a_wrong_shaped_module_with_the_same_message(name):
    model, x = TINY[name]()
    expected = {"mlp": r"\(batch, 4\)", "cnn": r"\(batch, 2, 6, 6\)", "vit": r"\(batch, 5, 4\)"}[name]
    with pytest.raises(ValueError, match=rf"an inserted module must map {expected} to the same shape, got \("):
        model.insert_block(0, Squash())
    with pytest.raises(TypeError, match="expected an nn.Module, got function"):
        model.insert_block(0, lambda x: x)
    with pytest.raises(ValueError, match="location must be an integer"):
        model.insert_block(len(model.locations), _good_block(name, model))
    assert model.depth == TINY[name]()[0].depth  # nothing was inserted
    block = model.insert_block(0, _good_block(name, model).zero_())
    assert block.training and next(block.parameters()).dtype == torch.float64
    assert model.depth == TINY[name]()[0].depth + 1


def test_the_cnn_probes_each_stage_at_its_resolution():
    model = ResidualCNN(1, (2, 3), (1, 1), 2, image_size=7)
    with pytest.raises(ValueError, match=r"map \(batch, 3, 4, 4\) to the same shape"):
        model.insert_block(3, Squash())  # stage 1: 7 -> 4 after the stride-2 downsampling
    free = ResidualCNN(1, (2, 3), (1, 1), 2)
    with pytest.raises(ValueError, match=r"map \(batch, 2, H, W\) to the same shape"):
        free.insert_block(0, Squash())


def test_the_vit_records_inserted_kinds_in_its_spec():
    model, _ = TINY["vit"]()
    model.insert_layer(0)
    model.insert_block(0, ResidualBlock(model.encoder_branch()))
    model.insert_block(0, ResidualBlock(make_block("dense", model, 0), name="dense"))
    spec = model.spec()
    assert spec["layers"] == ["block", "encoder", "token", "encoder"]
    assert spec["blocks"] == ["dense", "encoder", None, None]
    assert ViT(**spec).spec() == spec


# ------------------------------------------------------ blocks and activations
@pytest.mark.parametrize("name", list(TINY))
def test_blocks_take_their_activation_from_new_activation(name, monkeypatch):
    model, _ = TINY[name]()
    made = []

    def new_activation():
        made.append(ZTanh())
        return made[-1]

    monkeypatch.setattr(model, "new_activation", new_activation)
    block = make_block("conv" if name == "cnn" else "dense", model, 0)
    assert len(made) == 1 and block.activation is made[0]


def test_nothing_outside_growable_reads_a_models_private_activation():
    root = Path(topogrow.__file__).parent
    offenders = [
        f"{path.relative_to(root)}:{number}"
        for path in sorted(root.rglob("*.py"))
        if path.name != "growable.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\b_activation\b", line)
    ]
    assert offenders == []
