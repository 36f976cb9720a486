"""The registries of nn: models (register_model, read by checkpoints, the experiment runner and
the CLI), blocks (register_block) and activations."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

import topogrow
from topogrow._registry import Registry
from topogrow.core.layer_kinds import Dense
from topogrow.experiments.experiment import ModelConfig, build_model
from topogrow.nn import ACTIVATIONS, BLOCKS, MODELS, GrowableModel, ResidualMLP, register_block, register_model, saved
from topogrow.nn.blocks import make_block, rebuild_block
from topogrow.nn.layers import ResidualDense


class TinyGrowable(GrowableModel):
    """A user's growable model: a linear stem, dense residual layers, a linear head."""

    def __init__(self, features: int = 3, depth: int = 1) -> None:
        super().__init__()
        self.features = features
        self._init_activation("z-tanh")
        self.stem = nn.Linear(features, features)
        self.layers = nn.ModuleList(self._new_layer(index) for index in range(depth))
        self.head = nn.Linear(features, 1)

    def forward_states(self, x):
        states = [self.stem(x)]
        for layer in self.layers:
            states.append(layer(states[-1]))
        return self.head(states[-1]), states

    def forward(self, x):
        return self.forward_states(x)[0]

    def insertion_kind(self, location):
        return Dense()

    def insertion_shape(self, location):
        return self.features, self.features + 1

    def spec(self):
        return {"features": self.features, "depth": self.depth}

    def _new_layer(self, location):
        return ResidualDense(self.features, self.new_activation())

    def _state_shape(self, location):
        return (self.features,)


class TinyFresh(TinyGrowable):
    """The same model, buildable fresh for a task (``topogrow run --model ...``)."""

    @classmethod
    def for_data(cls, input_shape, out_features, width, depth, activation=None):
        return cls(features=input_shape[0], depth=depth)


@pytest.fixture
def tiny_model():
    register_model("tiny-test")(TinyGrowable)
    yield "tiny-test"
    MODELS.unregister("tiny-test")


def test_registries_are_registries():
    for registry, kind in ((MODELS, "model"), (BLOCKS, "block"), (ACTIVATIONS, "activation")):
        assert isinstance(registry, Registry) and registry.kind == kind
    assert list(ACTIVATIONS) == ["silu-tanh", "z-tanh"]
    assert set(BLOCKS) >= {"dense", "conv", "gelu-mlp", "encoder", "sensli-mlp", "sensli-conv"}
    with pytest.raises(ValueError, match=r"unknown model 'mpl'.*did you mean 'mlp'"):
        MODELS["mpl"]


def test_a_registered_model_round_trips_through_save_and_load(tiny_model, tmp_path):
    assert MODELS[tiny_model] is TinyGrowable and saved.MODEL_CLASSES["TinyGrowable"] is TinyGrowable
    model = TinyGrowable().double()
    model.insert_layer(1, 0.3 * torch.randn(3, 3), 0.1 * torch.randn(3))
    x = torch.randn(4, 3, dtype=torch.float64)
    topogrow.save(model, tmp_path / "tiny")
    loaded = topogrow.load(tmp_path / "tiny")
    assert type(loaded) is TinyGrowable and loaded.spec() == {"features": 3, "depth": 2}
    assert torch.equal(loaded(x), model(x))
    # the experiment runner builds it from its spec too
    config = ModelConfig(family=tiny_model)
    assert type(build_model(None, config, spec=model.spec())) is TinyGrowable
    task = SimpleNamespace(name="tiny", X_train=torch.zeros(2, 3), out_features=1)
    with pytest.raises(ValueError, match=r"TinyGrowable is built from its spec only.*pass spec="):
        build_model(task, config)
    register_model("tiny-fresh")(TinyFresh)
    try:
        fresh = build_model(task, ModelConfig(family="tiny-fresh", initial_depth=2))
    finally:
        MODELS.unregister("tiny-fresh")
    assert type(fresh) is TinyFresh and fresh.depth == 2 and fresh.features == 3


def test_an_unregistered_model_is_neither_saved_nor_loaded(tiny_model, tmp_path):
    topogrow.save(TinyGrowable(), tmp_path / "tiny")
    MODELS.unregister(tiny_model)
    try:
        with pytest.raises(TypeError, match="cannot save a TinyGrowable"):
            topogrow.save(TinyGrowable(), tmp_path / "again")
        with pytest.raises(topogrow.CheckpointError, match="unknown model class 'TinyGrowable'"):
            topogrow.load(tmp_path / "tiny")
        with pytest.raises(ValueError, match="unknown model 'tiny-test'"):
            ModelConfig(family=tiny_model)
    finally:
        register_model(tiny_model)(TinyGrowable)


def test_register_model_checks_the_contract():
    class NotGrowable(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(TypeError, match=r"lacks forward_states, insertion_kind, .* of the growable-model contract"):
        register_model("not-growable")(NotGrowable)

    class Incomplete(GrowableModel):
        def forward_states(self, x):
            return x, [x]

    with pytest.raises(TypeError, match=r"does not implement .*insertion_kind"):
        register_model("incomplete")(Incomplete)
    with pytest.raises(TypeError, match="expected an nn.Module subclass"):
        register_model("function")(lambda: None)
    with pytest.raises(ValueError, match="a model named 'mlp' is already registered"):
        register_model("mlp")(TinyGrowable)

    class ResidualMLP(TinyGrowable):  # noqa: F811 - same class name as a registered model
        pass

    with pytest.raises(ValueError, match="a model class named ResidualMLP is already registered"):
        register_model("other-mlp")(ResidualMLP)
    assert list(MODELS) == ["mlp", "cnn", "vit"]


def test_register_block_works_as_a_call_and_as_a_decorator():
    @register_block("test-linear")
    def linear(model, location):
        return nn.Linear(model.width, model.width)

    try:
        assert BLOCKS["test-linear"] is linear
        model = ResidualMLP(3, 4, 1, 2)
        assert rebuild_block("test-linear", model, 0).name == "test-linear"
        with pytest.raises(ValueError, match="already registered; pass overwrite=True"):
            register_block("test-linear", linear)
        assert register_block("test-linear", linear, overwrite=True) is linear
        with pytest.raises(TypeError, match="callable factory"):
            register_block("test-other", 3)
        with pytest.raises(ValueError, match=r"unknown block 'test-linaer'.*did you mean 'test-linear'"):
            make_block("test-linaer", model, 0)
    finally:
        BLOCKS.unregister("test-linear")
    assert "test-linear" not in BLOCKS and "test-other" not in BLOCKS
