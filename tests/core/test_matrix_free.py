"""The matrix-free topological derivative against closed forms, dense twins and the real loss.

- dense and conv layers: the Lanczos eigenvalues equal the closed-form block eigenvalues;
- the operator equals -hess_theta J of a zero-inserted block (the METHOD.md identity);
- a two-matrix GELU block: finite differences of the real loss, and its eigenvalue is
  GELU'(0) times the top singular value of sum_s p_s [x_s; 1]^T;
- first-order blocks are detected, with the gradient's direction.

Growing with a registered block: tests/growth/test_growing_by_block.py.
"""

import copy
import functools

import mlp_problems
import pytest
import torch
from mlp_problems import EPS, LOSS_FNS, full_loss, make_model
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from topogrow import topological_derivative
from topogrow.core import (
    HamiltonianHessian,
    MatrixFreeTopologicalDerivative,
    leading_operator_eigenpairs,
    matrix_free_topological_derivative,
    states_and_adjoints,
)
from topogrow.core.hamiltonian import hamiltonian_blocks, quadratic_form
from topogrow.core.layer_kinds import Conv2d
from topogrow.nn import ResidualBlock, SiLUTanh, ZTanh, make_block, register_block
from topogrow.nn.blocks import ConvBlock, GeluMLP

N_SAMPLES = 48

# torch.func imports torch internals that still call torch.jit.script
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


# ---------------------------------------------------------------- helpers
make_data = functools.partial(mlp_problems.make_data, n_samples=N_SAMPLES, first_seed=2000)


def change_after_block(model, x, y, loss, location, block, direction) -> float:
    """J(eps) - J(0) after inserting ``x + g(x)`` with parameters ``direction``."""
    grown = copy.deepcopy(model)
    residual = ResidualBlock(copy.deepcopy(block))
    residual.load_direction(direction)
    grown.insert_block(location, residual)
    assert grown.depth == model.depth + 1
    return full_loss(grown, x, y, loss) - full_loss(model, x, y, loss)


def factory(name, model):
    return lambda location: make_block(name, model, location)


def full_adjoints(model, x, y, loss):
    """States and adjoints p = -dJ/dx of the full-data mean loss, one batch."""
    _, states, adjoints = states_and_adjoints(model, x, y, LOSS_FNS[loss], scale=1.0)
    return states, adjoints


def augment(x):
    return torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], dim=1)


# ------------------------------------------------- (a) dense: closed form
@pytest.mark.parametrize(
    ("width", "depth", "loss", "activation"),
    [(4, 0, "mse", None), (5, 2, "cross_entropy", None), (4, 1, "mse", "z-tanh")],
)
def test_dense_block_matches_the_closed_form_at_every_location(width, depth, loss, activation):
    x, y = make_data(loss, seed=width + depth)
    model = make_model(width, depth, loss, seed=width + depth, activation=activation)
    closed = topological_derivative(model, (x, y), loss, keep_blocks=True)
    free = matrix_free_topological_derivative(model, (x, y), loss, factory("dense", model), k=3, batch_size=16)

    assert isinstance(free, MatrixFreeTopologicalDerivative)
    assert free.locations == tuple(range(depth + 1)) and free.n_samples == N_SAMPLES
    assert free.loss == pytest.approx(closed.loss, rel=1e-12)
    assert free.first_order == (None,) * (depth + 1)
    assert torch.all(free.gradient_norms == 0)
    # the leading eigenvalue at every location, to 1e-8 (measured: ~1e-15)
    assert torch.allclose(free.eigenvalues, closed.eigenvalues, rtol=0, atol=1e-8)
    assert free.best_location == closed.best_location
    for l in range(depth + 1):
        # the top 3 eigenvalues of Q_l: the top 3 of the union of the blocks' spectra
        union = torch.linalg.eigvalsh(closed.blocks[l]).flatten().sort(descending=True).values[:3]
        assert torch.allclose(free.block_eigenvalues[l], union, rtol=0, atol=1e-8)
        # flat layout [W.flatten(), b] -> rows [W | b]: the closed-form quadratic form agrees
        v = free.block_eigenvectors[l][0]
        rows = torch.cat([v[: width * width].reshape(width, width), v[width * width :, None]], dim=1)
        assert float(quadratic_form(closed.blocks[l], rows)) == pytest.approx(float(free.eigenvalues[l]), abs=1e-10)
        assert free.predicted_change(l, EPS) == pytest.approx(-0.5 * EPS**2 * float(free.eigenvalues[l]), rel=1e-12)


def test_streaming_and_dataloaders_give_the_same_result():
    x, y = make_data("mse")
    model = make_model(4, 1, "mse")
    whole = matrix_free_topological_derivative(model, (x, y), "mse", factory("dense", model), k=2, batch_size=1000)
    loader = DataLoader(TensorDataset(x, y), batch_size=10)
    streamed = matrix_free_topological_derivative(model, loader, "mse", factory("dense", model), k=2, locations=[1])
    assert streamed.locations == (1,)
    assert streamed.eigenvalues[1] == pytest.approx(float(whole.eigenvalues[1]), abs=1e-12)
    assert streamed.eigenvalues[0] == -float("inf") and streamed.best_location == 1
    with pytest.raises(ValueError, match="was not examined"):
        streamed.rows(0, 1.0)


# -------------------------------------------------- (b) conv: closed form
@pytest.mark.parametrize("activation", [SiLUTanh(), ZTanh()], ids=["silu-tanh", "z-tanh"])
def test_conv_block_matches_the_closed_form(activation):
    g = torch.Generator().manual_seed(5)
    channels = 2
    states = torch.randn(3, channels, 5, 5, generator=g, dtype=torch.float64)
    adjoints = torch.randn(3, channels, 5, 5, generator=g, dtype=torch.float64) / 3
    curvature = 1.0 if isinstance(activation, SiLUTanh) else 2.0
    kind = Conv2d(kernel_size=3)
    blocks = hamiltonian_blocks(kind.patches(states), kind.adjoint_rows(adjoints), curvature)
    union = torch.linalg.eigvalsh(blocks).flatten().sort(descending=True).values

    block = ConvBlock(channels, activation)
    operator = HamiltonianHessian(block, [states[:2], states[2:]], [adjoints[:2], adjoints[2:]])  # two chunks
    assert operator.n == channels * channels * 9 + channels
    values, vectors = leading_operator_eigenpairs(operator, k=3)
    assert torch.allclose(values, union[:3], rtol=0, atol=1e-8)
    # flat layout [K.flatten(), b] -> rows [K reshaped to (C, C k k) | b]
    v = vectors[0]
    rows = torch.cat([v[:-channels].reshape(channels, -1), v[-channels:, None]], dim=1)
    assert float(quadratic_form(blocks, rows)) == pytest.approx(float(values[0]), abs=1e-10)
    assert operator.gradient().abs().max() == 0


# --------------------------------------- dense twin: Q = -hess_theta J at 0
def test_operator_equals_minus_the_loss_hessian_of_a_zero_inserted_block():
    x, y = make_data("cross_entropy")
    model = make_model(3, 1, "cross_entropy")
    block = GeluMLP(3, 2)
    for location in model.locations:
        free = matrix_free_topological_derivative(
            model, (x, y), "cross_entropy", lambda: block, locations=[location], keep_operators=True, solver="dense"
        )
        q = free.operators[location].dense()
        grown = copy.deepcopy(model)
        grown.insert_block(location, ResidualBlock(copy.deepcopy(block)).zero_())
        names = [f"layers.{location}.block.{name}" for name, _ in block.named_parameters()]
        shapes = [p.shape for p in block.parameters()]
        sizes = [p.numel() for p in block.parameters()]

        def loss_of(theta, grown=grown, names=names, shapes=shapes, sizes=sizes):
            params = {n: t.view(s) for n, t, s in zip(names, theta.split(sizes), shapes, strict=True)}
            return F.cross_entropy(functional_call(grown, params, (x,)), y)

        hessian = torch.autograd.functional.hessian(loss_of, torch.zeros(sum(sizes), dtype=torch.float64))
        assert torch.allclose(q, -hessian, rtol=0, atol=1e-13)
        # and the forward-over-reverse products agree with reverse-over-reverse
        operator = free.operators[location]
        forward = HamiltonianHessian(block, operator.states, operator.adjoints, mode="forward")
        assert torch.allclose(forward.dense(), q, rtol=0, atol=1e-14)


# ------------------------------------------ (c) GELU two-matrix block: FD
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_gelu_block_matches_the_real_loss_change_at_every_location(loss):
    x, y = make_data(loss, seed=3)
    model = make_model(4, 2, loss, seed=3)
    free = matrix_free_topological_derivative(model, (x, y), loss, factory("gelu-mlp", model), k=2)
    assert free.first_order == (None,) * 3
    states, adjoints = full_adjoints(model, x, y, loss)
    for l in model.locations:
        mu = float(free.eigenvalues[l])
        assert mu > 0
        # METHOD.md: mu = GELU'(0) * top singular value of sum_s p_s [x_s; 1]^T (b1 included)
        top = torch.linalg.svdvals(adjoints[l].T @ augment(states[l]))[0]
        assert mu == pytest.approx(0.5 * float(top), rel=1e-10)
        # finite differences of the real loss
        direction = free.rows(l, EPS, k=1)
        predicted = free.predicted_change(l, EPS, k=1)
        actual = change_after_block(model, x, y, loss, l, make_block("gelu-mlp", model, l), direction)
        assert predicted == pytest.approx(-0.5 * EPS**2 * mu, rel=1e-12)
        assert actual / predicted == pytest.approx(1.0, abs=0.01), (l, actual, predicted)


def test_gelu_block_without_hidden_bias_uses_the_plain_states():
    x, y = make_data("mse", seed=4)
    model = make_model(4, 1, "mse", seed=4)
    free = matrix_free_topological_derivative(model, (x, y), "mse", lambda: GeluMLP(4, 3, bias=False), k=3)
    states, adjoints = full_adjoints(model, x, y, "mse")
    for l in model.locations:
        top = torch.linalg.svdvals(adjoints[l].T @ states[l])[0]
        # the top eigenvalue is repeated once per hidden unit
        assert torch.allclose(free.block_eigenvalues[l], 0.5 * top.expand(3), rtol=1e-10, atol=0)
        # three orthonormal eigenvectors: phi^T Q phi = sum of their mu
        vectors = free.block_eigenvectors[l]
        assert torch.allclose(vectors @ vectors.T, torch.eye(3, dtype=torch.float64), atol=1e-10)
        assert free.predicted_change(l, EPS, k=3) == pytest.approx(-0.5 * EPS**2 * 1.5 * float(top), rel=1e-9)


# ------------------------------------------------- (d) first-order blocks
def test_a_linear_block_is_first_order_along_the_loss_gradient():
    x, y = make_data("mse", seed=5)
    model = make_model(3, 1, "mse", seed=5)
    free = matrix_free_topological_derivative(model, (x, y), "mse", lambda: nn.Linear(3, 3), k=2, keep_operators=True)
    assert free.first_order_locations == (0, 1)
    norms = [free.first_order[l].norm for l in model.locations]
    assert free.best_location == max(model.locations, key=lambda l: norms[l])
    assert torch.allclose(free.gradient_norms, torch.tensor(norms, dtype=torch.float64))
    for l in model.locations:
        first = free.first_order[l]
        # the direction is -grad_theta J of a zero-inserted Linear, normalised
        grown = copy.deepcopy(model)
        inserted = grown.insert_block(l, ResidualBlock(nn.Linear(3, 3)).zero_())
        LOSS_FNS["mse"](grown(x), y).backward()
        gradient = -torch.cat([p.grad.reshape(-1) for p in inserted.parameters()])
        assert first.norm == pytest.approx(float(gradient.norm()), rel=1e-12)
        assert torch.allclose(first.direction, gradient / gradient.norm(), rtol=0, atol=1e-12)
        assert torch.equal(free.rows(l, 2.0), 2.0 * first.direction)
        assert free.slope(l) == first.norm and free.linear_form(l, first.direction) == pytest.approx(first.norm)
        assert free.curvature(l) == 0 and free.quadratic_form(l, first.direction) == 0  # linear in theta
        # finite differences: J(eps d) - J(0) = -eps |G| + O(eps^2)
        actual = change_after_block(model, x, y, "mse", l, nn.Linear(3, 3), free.rows(l, EPS))
        assert free.predicted_change(l, EPS) == -EPS * first.norm
        assert actual / free.predicted_change(l, EPS) == pytest.approx(1.0, abs=0.01)


def test_an_output_bias_makes_the_gelu_block_first_order():
    x, y = make_data("cross_entropy", seed=6)
    model = make_model(4, 1, "cross_entropy", seed=6)
    block = GeluMLP(4, 4, output_bias=True)
    free = matrix_free_topological_derivative(model, (x, y), "cross_entropy", lambda: block, k=1)
    _, adjoints = full_adjoints(model, x, y, "cross_entropy")
    for l in model.locations:
        first = free.first_order[l]
        assert first is not None
        # only b2 (the last 4 numbers) moves, along sum_s p_s
        total = adjoints[l].sum(dim=0)
        assert torch.all(first.direction[:-4] == 0)
        assert torch.allclose(first.direction[-4:], total / total.norm(), atol=1e-12)
        assert first.norm == pytest.approx(float(total.norm()), rel=1e-12)


# ------------------------------------------------------ blocks and errors
def test_residual_block_round_trips_its_flat_parameters_and_zero_is_the_identity():
    block = ResidualBlock(GeluMLP(3, 5)).double()
    vector = torch.arange(block.n_parameters, dtype=torch.float32)
    block.load_direction(vector)
    assert torch.equal(block.direction(), vector.double())
    assert torch.equal(block.rows(), torch.nn.utils.parameters_to_vector(block.block.parameters()))
    assert all(p.dtype == torch.float64 for p in block.parameters())
    x = torch.randn(7, 3, dtype=torch.float64)
    assert torch.equal(block.zero_()(x), x)
    with pytest.raises(ValueError, match=f"expected a flat vector of {block.n_parameters}"):
        block.load_direction(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="finite"):
        block.load_direction(torch.full((block.n_parameters,), float("nan")))


def test_misuse_gets_errors_that_say_what_was_expected():
    x, y = make_data("mse")
    model = make_model(3, 1, "mse")

    class Shifted(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(3, 3)

        def forward(self, x):
            return self.linear(x) + 1

    with pytest.raises(ValueError, match="zero at zero parameters"):
        matrix_free_topological_derivative(model, (x, y), "mse", Shifted)
    with pytest.raises(ValueError, match=r"same shape"):
        matrix_free_topological_derivative(model, (x, y), "mse", lambda: nn.Linear(3, 2))
    with pytest.raises(TypeError, match="nn.Module"):
        matrix_free_topological_derivative(model, (x, y), "mse", lambda: "dense")
    with pytest.raises(ValueError, match=r"did you mean 'eigsh'"):
        matrix_free_topological_derivative(model, (x, y), "mse", factory("dense", model), solver="eigs")
    with pytest.raises(ValueError, match="locations must be integers"):
        matrix_free_topological_derivative(model, (x, y), "mse", factory("dense", model), locations=[2])
    free = matrix_free_topological_derivative(model, (x, y), "mse", factory("dense", model), k=2)
    with pytest.raises(ValueError, match="keep_operators=True"):
        free.quadratic_form(0, torch.zeros(12))
    with pytest.raises(ValueError, match=r"did you mean 'dense'"):
        make_block("dnese", model, 0)
    with pytest.raises(ValueError, match="already registered"):
        register_block("dense", lambda model, location: nn.Linear(3, 3))
    with pytest.raises(ValueError, match="map \\(batch, 3\\) to the same shape"):
        model.insert_block(0, nn.Linear(3, 2))


def test_lobpcg_agrees_with_lanczos():
    x, y = make_data("mse", seed=7)
    model = make_model(4, 0, "mse", seed=7)
    lanczos = matrix_free_topological_derivative(model, (x, y), "mse", factory("dense", model), k=2)
    block = matrix_free_topological_derivative(model, (x, y), "mse", factory("dense", model), k=2, solver="lobpcg")
    assert torch.allclose(lanczos.block_eigenvalues[0], block.block_eigenvalues[0], rtol=1e-8, atol=0)
