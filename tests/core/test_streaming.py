"""The streamed pass of states and adjoints (:func:`topogrow.core.adjoint_batches`).

- the adjoints, joined over the mini-batches, are ``-dJ/dx_l`` of the full-data mean loss
  (autograd on the whole data set at once, float64), for an ``(X, y)`` pair and a DataLoader,
  with either scale; the states and the losses are those of the full batch;
- inputs take the model's dtype, integer targets keep theirs;
- the model is in eval mode during the pass, and its training flag comes back after a full
  pass, an early ``break``, an exception in the consumer and an exception in the data.
"""

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from topogrow import ResidualMLP
from topogrow.core import AdjointBatch, adjoint_batches, device_and_dtype, resolve_loss
from topogrow.nn.cnn import ResidualCNN

N_SAMPLES, BATCH = 50, 16  # batches of 16, 16, 16 and 2: uneven, so a wrong scale shows


def make_data(loss: str, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(100 + seed)
    x = torch.randn(N_SAMPLES, 4, generator=g, dtype=dtype)
    if loss == "mse":
        y = torch.sin(2 * x[:, :2]) + 0.1 * torch.randn(N_SAMPLES, 2, generator=g, dtype=dtype)
    else:
        y = torch.randint(0, 3, (N_SAMPLES,), generator=g)
    return x, y


def make_model(loss: str, seed: int = 0) -> ResidualMLP:
    torch.manual_seed(seed)
    return ResidualMLP(4, 6, 2, 2 if loss == "mse" else 3).double()


def full_batch_reference(model, x, y, loss: str):
    """The full-data mean loss J, the states, and ``-dJ/dx_l`` by plain autograd on all samples at once."""
    prediction, states = model.forward_states(x)
    value = {"mse": F.mse_loss, "cross_entropy": F.cross_entropy}[loss](prediction, y)
    grads = torch.autograd.grad(value, states)
    return value.item(), [s.detach() for s in states], [-g for g in grads]


def as_data(x, y, form: str):
    return (x, y) if form == "pair" else DataLoader(TensorDataset(x, y), batch_size=BATCH)


@pytest.mark.parametrize("form", ["pair", "loader"])
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("scale_by_batch", [True, False])
def test_streamed_adjoints_are_the_full_data_adjoints(form, loss, scale_by_batch):
    x, y = make_data(loss)
    model = make_model(loss)
    value, states, adjoints = full_batch_reference(model, x, y, loss)

    stream = adjoint_batches(model, as_data(x, y, form), resolve_loss(loss), BATCH, scale_by_batch=scale_by_batch)
    batches = list(stream)
    assert all(isinstance(b, AdjointBatch) for b in batches)
    assert [b.size for b in batches] == [16, 16, 16, 2]
    assert [b.x.shape[0] for b in batches] == [16, 16, 16, 2]
    for l, (state, adjoint) in enumerate(zip(states, adjoints, strict=True)):
        streamed_states = torch.cat([b.states[l] for b in batches])
        assert torch.allclose(streamed_states, state, rtol=0, atol=1e-12)
        assert not streamed_states.requires_grad
        # batch-sum adjoints are -B dloss_b/dx; batch-mean ones -dloss_b/dx; J = sum_b B loss_b / S
        factor = [1.0 if scale_by_batch else float(b.size) for b in batches]
        streamed = torch.cat([f * b.adjoints[l] for f, b in zip(factor, batches, strict=True)]) / N_SAMPLES
        assert torch.allclose(streamed, adjoint, rtol=1e-10, atol=1e-14), f"location {l}"
        assert adjoint.abs().max() > 1e-6  # the comparison is not between zeros
    assert sum(b.loss * b.size for b in batches) / N_SAMPLES == pytest.approx(value, rel=1e-12)


def test_a_pair_and_a_loader_stream_the_same_numbers():
    x, y = make_data("mse")
    model = make_model("mse")
    loss = resolve_loss("mse")
    pair = list(adjoint_batches(model, (x, y), loss, BATCH))
    loader = list(adjoint_batches(model, DataLoader(TensorDataset(x, y), batch_size=BATCH), loss, BATCH))
    for a, b in zip(pair, loader, strict=True):
        assert a.loss == b.loss and a.size == b.size
        assert all(torch.equal(p, q) for p, q in zip(a.adjoints, b.adjoints, strict=True))


def test_inputs_take_the_model_dtype_and_integer_targets_keep_theirs():
    x, y = make_data("cross_entropy", dtype=torch.float32)
    model = make_model("cross_entropy")  # float64
    batch = next(iter(adjoint_batches(model, (x, y), resolve_loss("cross_entropy"), BATCH)))
    assert batch.x.dtype == torch.float64 and torch.equal(batch.x, x[:BATCH].double())
    assert batch.y.dtype == torch.int64 and torch.equal(batch.y, y[:BATCH])
    assert all(t.dtype == torch.float64 for t in batch.states + batch.adjoints)
    assert device_and_dtype(model) == (torch.device("cpu"), torch.float64)

    xr, yr = make_data("mse", dtype=torch.float64)
    model32 = ResidualMLP(4, 6, 1, 2)
    batch = next(iter(adjoint_batches(model32, (xr, yr), resolve_loss("mse"), BATCH)))
    assert batch.x.dtype == batch.y.dtype == torch.float32


def test_convolution_states_and_adjoints_keep_their_shapes():
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(10, 1, 6, 6, generator=g), torch.randint(0, 3, (10,), generator=g)
    model = ResidualCNN(1, (4, 5), (1, 1), 3)
    batches = list(adjoint_batches(model, (x, y), resolve_loss("cross_entropy"), 4))
    assert [b.size for b in batches] == [4, 4, 2]
    for batch in batches:
        for state, adjoint in zip(batch.states, batch.adjoints, strict=True):
            assert state.ndim == 4 and state.shape == adjoint.shape and state.shape[0] == batch.size


def test_empty_data_raises():
    model = make_model("mse")
    with pytest.raises(ValueError, match="empty"):
        list(adjoint_batches(model, (torch.zeros(0, 4), torch.zeros(0, 2)), resolve_loss("mse")))


# ------------------------------------------------------------------ training flag
class Recorder(ResidualMLP):
    """A ResidualMLP with dropout (so eval mode matters) that records its mode at each forward."""

    def __init__(self):
        super().__init__(4, 6, 1, 2)
        self.double()
        self.dropout = nn.Dropout(0.5)
        self.modes: list[bool] = []

    def forward_states(self, x):
        self.modes.append(self.training)
        prediction, states = super().forward_states(x)
        return self.dropout(prediction), states


@pytest.mark.parametrize("training", [True, False])
def test_the_pass_runs_in_eval_mode_and_restores_the_flag(training):
    x, y = make_data("mse")
    model = Recorder().train(training)
    first = list(adjoint_batches(model, (x, y), resolve_loss("mse"), BATCH))
    second = list(adjoint_batches(model, (x, y), resolve_loss("mse"), BATCH))
    assert model.modes == [False] * 8
    assert model.training is training and model.dropout.training is training
    # eval mode: dropout is off, so two passes give the same numbers
    assert all(a.loss == b.loss for a, b in zip(first, second, strict=True))


def test_an_early_break_restores_the_training_flag():
    x, y = make_data("mse")
    model = Recorder().train()
    for _ in adjoint_batches(model, (x, y), resolve_loss("mse"), BATCH):
        assert not model.training
        break
    assert model.training and model.modes == [False]


def test_closing_a_held_generator_restores_the_training_flag():
    x, y = make_data("mse")
    model = Recorder().train()
    stream = adjoint_batches(model, (x, y), resolve_loss("mse"), BATCH)
    next(stream)
    assert not model.training
    stream.close()
    assert model.training


def test_an_exception_in_the_consumer_restores_the_training_flag():
    x, y = make_data("mse")
    model = Recorder().train()
    with pytest.raises(RuntimeError, match="consumer"):
        for _ in adjoint_batches(model, (x, y), resolve_loss("mse"), BATCH):
            raise RuntimeError("consumer failed")
    assert model.training


def test_an_exception_in_the_data_restores_the_training_flag():
    x, y = make_data("mse")
    x[20, 1] = float("nan")  # in the second batch: the first is streamed, then the data check raises
    model = Recorder().train()
    seen = []
    with pytest.raises(ValueError, match="NaN"):
        for batch in adjoint_batches(model, DataLoader(TensorDataset(x, y), batch_size=BATCH), resolve_loss("mse")):
            seen.append(batch.size)
    assert seen == [16] and model.training


def test_a_non_finite_loss_restores_the_training_flag():
    x, y = make_data("mse")
    model = Recorder().train()
    with torch.no_grad():
        model.head.bias.fill_(float("inf"))
    with pytest.raises(FloatingPointError):
        list(adjoint_batches(model, (x, y), resolve_loss("mse"), BATCH))
    assert model.training
