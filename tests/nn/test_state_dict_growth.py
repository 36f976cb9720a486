"""A grown model's state dict loads into the model as it was built: the insertions replay first."""

import io

import pytest
import torch

from topogrow.nn import GROWTH_METADATA, ResidualCNN, ResidualMLP, ViT
from topogrow.nn.blocks import rebuild_block


def _saved_and_loaded(state):
    """``state`` through ``torch.save`` / ``torch.load(weights_only=True)``, as a checkpoint file."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _grow(model, locations):
    for location in locations:
        n, m = model.insertion_shape(location)
        model.insert_layer(location, torch.randn(*model._weight_shapes(location)[0]), torch.randn(n))
    return model


@pytest.mark.parametrize(
    "build, x",
    [
        (lambda: ResidualMLP(3, 8, 1, 2), torch.randn(5, 3)),
        (lambda: ResidualCNN(1, channels=(2, 3), depths=(1, 1), out_features=2), torch.randn(2, 1, 8, 8)),
        (lambda: ViT(image_size=8, patch_size=4, in_channels=1, dim=8, depth=1, heads=2, out_features=2), None),
    ],
)
def test_a_grown_state_dict_grows_the_model_built_as_it_was(build, x):
    torch.manual_seed(0)
    grown = _grow(build(), [0, 2, 1])
    grown.remove_layer(2)
    x = torch.randn(2, 1, 8, 8) if x is None else x
    fresh = build()
    assert fresh.depth == grown.depth - 2
    fresh.load_state_dict(_saved_and_loaded(grown.state_dict()))
    assert fresh.depth == grown.depth
    assert fresh.spec() == grown.spec()
    grown.eval(), fresh.eval()
    assert torch.equal(fresh(x), grown(x))


def test_replay_works_inside_a_parent_module_and_for_registered_blocks():
    torch.manual_seed(1)
    grown = ResidualMLP(3, 8, 1, 2)
    grown.insert_block(1, rebuild_block("dense", grown, 1))
    grown.insert_layer(0)

    class Parent(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = ResidualMLP(3, 8, 1, 2)

    parent = Parent()
    parent.net = grown
    other = Parent()
    other.load_state_dict(_saved_and_loaded(parent.state_dict()))
    assert other.net.spec() == grown.spec()
    x = torch.randn(4, 3)
    assert torch.equal(other.net(x), grown(x))


def test_models_that_did_not_grow_record_nothing_and_a_grown_spec_loads_as_before():
    model = ResidualMLP(3, 8, 2, 2)
    assert GROWTH_METADATA not in model.state_dict()._metadata[""]
    grown = _grow(ResidualMLP(3, 8, 1, 2), [1])
    rebuilt = ResidualMLP(**grown.spec())  # built at the final depth: nothing to replay
    rebuilt.load_state_dict(grown.state_dict())
    assert rebuilt.depth == 2


def test_a_model_that_grew_differently_is_refused_naming_the_depths():
    grown = _grow(ResidualMLP(3, 8, 1, 2), [0, 0])
    with pytest.raises(ValueError, match="grown from depth 1 to depth 3, but this one has depth 2"):
        ResidualMLP(3, 8, 2, 2).load_state_dict(grown.state_dict())


def test_a_module_of_the_users_own_cannot_be_replayed_and_says_so():
    grown = ResidualMLP(3, 8, 1, 2)

    class Residual(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(8, 8)

        def forward(self, x):
            return x + self.linear(x)

    grown.insert_block(0, Residual())
    with pytest.raises(ValueError, match="module of its own inserted at location 0"):
        ResidualMLP(3, 8, 1, 2).load_state_dict(grown.state_dict())
