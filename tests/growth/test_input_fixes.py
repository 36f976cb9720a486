"""Inputs that used to fail late, raw or silently (issue 13): targets of the wrong shape in the
topological derivative, iterable and one-shot data, a model that cannot grow, float16, fit twice."""

import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

from topogrow import Grower, GrowthConfig, ResidualMLP, topological_derivative
from topogrow.core.matrix_free import matrix_free_topological_derivative
from topogrow.nn.blocks import make_block

FAST = {"max_depth": 2, "epochs_per_stage": 1, "final_epochs": 1}


def data(n=120, out=1):
    generator = torch.Generator().manual_seed(0)
    return torch.randn(n, 4, generator=generator), torch.randn(n, out, generator=generator)


def model(out=1, depth=1):
    torch.manual_seed(0)
    return ResidualMLP(in_features=4, width=6, depth=depth, out_features=out)


# 1. targets of another shape than the predictions -----------------------------------------------
def test_topological_derivative_refuses_flat_targets_for_one_output():
    X, y = data()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no torch broadcasting warning either: refused before the loss
        with pytest.raises(
            ValueError, match=r"^targets have shape \(120,\) but the model predicts \(120, 1\): use y\[:, None\]$"
        ):
            topological_derivative(model(), (X, y[:, 0]), "mse")
    reference = topological_derivative(model(), (X, y), "mse")  # the (N, 1) targets still work
    assert reference.n_samples == 120


def test_topological_derivative_refuses_any_mismatched_float_target():
    X, y = data(out=3)
    with pytest.raises(ValueError, match=r"targets have shape \(50, 3\) but the model predicts \(50, 2\)"):
        topological_derivative(model(out=2), DataLoader(list(zip(X, y, strict=True)), batch_size=50), "mse")
    probabilities = torch.softmax(y, dim=1)[:, :2]
    with pytest.raises(ValueError, match=r"targets have shape \(120, 2\) but the model predicts \(120, 3\)"):
        topological_derivative(model(out=3), (X, probabilities), "cross_entropy")
    labels = torch.randint(0, 3, (120,))
    topological_derivative(model(out=3), (X, labels), "cross_entropy")  # class labels (N,) are fine


def test_matrix_free_topological_derivative_refuses_flat_targets():
    X, y = data()
    network = model()
    with pytest.raises(ValueError, match=r"targets have shape \(120,\) but the model predicts \(120, 1\)"):
        matrix_free_topological_derivative(
            network, (X, y[:, 0]), "mse", lambda location: make_block("sensli-mlp", network, location)
        )


def test_a_custom_loss_may_take_targets_of_its_own_shape():
    X, y = data()
    td = topological_derivative(model(), (X, y[:, 0]), lambda p, t: ((p[:, 0] - t) ** 2).mean())
    assert torch.allclose(td.eigenvalues, topological_derivative(model(), (X, y), "mse").eigenvalues)


# 3. iterable and one-shot data --------------------------------------------------------------------
class Stream(IterableDataset):
    def __init__(self, X, y):
        self.X, self.y = X, y

    def __iter__(self):
        return iter(zip(self.X, self.y, strict=True))


def test_a_dataloader_over_an_iterable_dataset_trains():
    X, y = data()
    history = Grower(model(), "mse", GrowthConfig(**FAST)).fit(
        DataLoader(Stream(X, y), batch_size=32), DataLoader(Stream(X, y), batch_size=64)
    )
    assert len(history.epochs) >= 2 and all(e.train_loss > 0 for e in history.epochs)


def test_a_one_shot_generator_is_refused_before_training():
    X, y = data()
    batches = ((X[i : i + 32], y[i : i + 32]) for i in range(0, 120, 32))
    grower = Grower(model(), "mse", GrowthConfig(**FAST))
    with pytest.raises(TypeError, match=r"^train: got a one-shot generator .* once per epoch"):
        grower.fit(batches)
    assert grower.history.epochs == []
    with pytest.raises(TypeError, match=r"^val: got a one-shot list_iterator"):
        grower.fit((X, y), iter([(X, y)]))


# 4. a model that cannot grow fails before training ----------------------------------------------
class RenamedHead(ResidualMLP):
    """Its head is ``self.out``, but head_modules() (not overridden) still reads ``self.head``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.out = nn.Sequential(self.head)
        del self.head

    def forward_states(self, x):
        state = self.stem(x)
        states = [state]
        for layer in self.layers:
            state = layer(state)
            states.append(state)
        return self.out(state), states

    def forward(self, x):
        return self.forward_states(x)[0]


def test_a_model_without_its_head_fails_in_init_naming_it():
    torch.manual_seed(0)
    with pytest.raises(TypeError, match=r"RenamedHead cannot grow: head_modules\(\).*'head'.*overrides head_modules"):
        Grower(RenamedHead(4, 6, 1, 1), "mse", GrowthConfig(strategy="zero", **FAST))


def test_a_model_missing_a_member_fails_in_init_naming_it():
    class NoInsert(nn.Module):
        activation_curvature = 1.0
        depth, locations = 0, range(1)

        def __init__(self):
            super().__init__()
            self.head = nn.Linear(4, 1)

        def forward_states(self, x):
            return self.head(x), [x]

        def insertion_kind(self, location):
            return None

        def head_modules(self):
            return [self.head]

        def forward(self, x):
            return self.head(x)

    with pytest.raises(TypeError, match=r"NoInsert cannot grow: it has no insert_layer"):
        Grower(NoInsert(), "mse", GrowthConfig(strategy="zero", **FAST))


def test_a_replaced_sequential_head_still_grows():
    network = model()
    network.head = nn.Sequential(nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 1))
    history = Grower(network, "mse", GrowthConfig(**FAST)).fit(data())
    assert history.epochs


# 5. float16 ----------------------------------------------------------------------------------------
def test_float16_parameters_are_refused_with_the_right_advice():
    with pytest.raises(TypeError, match=r"float16 parameters.*on CPU use bfloat16.*or float32$") as error:
        Grower(model().half(), "mse", GrowthConfig(lr=1e-5, **FAST))
    assert "learning rate" in str(error.value) and "lower the learning rate" not in str(error.value)
    Grower(model().to(torch.bfloat16), "mse", GrowthConfig(**FAST))  # bfloat16 is accepted


# 8. fit twice ----------------------------------------------------------------------------------------
def test_fit_twice_refuses_and_keeps_the_first_history():
    X, y = data()
    grower = Grower(model(), "mse", GrowthConfig(**FAST))
    history = grower.fit((X, y))
    epochs = list(history.epochs)
    with pytest.raises(RuntimeError, match=r"^fit\(\) was already called on this Grower.*new Grower\(grower.model"):
        grower.fit((X, y))
    assert grower.history.epochs == epochs
    again = Grower(grower.model, "mse", GrowthConfig(**{**FAST, "max_depth": 3})).fit((X, y))
    assert again.epochs[0].epoch == 1 and grower.model.depth == 3


def test_fit_may_be_called_again_after_it_refused_the_data():
    X, y = data()
    grower = Grower(model(), "mse", GrowthConfig(**FAST))
    with pytest.raises(TypeError):
        grower.fit((X.numpy(), y.numpy()))
    assert grower.fit((X, y)).epochs
