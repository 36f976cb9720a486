"""The topological derivative against the real change of the loss (METHOD.md).

Every quantity the core computes is checked against an independent path:
finite differences of the actual training loss after inserting the layer, and
the dense Hessian of the loss with respect to a zero-initialised inserted layer.
"""

import copy
import itertools

import pytest
import torch
from mlp_problems import EPS, LOSS_FNS, N_SAMPLES, full_loss, make_data, make_model
from torch.func import functional_call
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import topogrow
from topogrow import ResidualMLP, topological_derivative
from topogrow.core.hamiltonian import dense_hamiltonian_blocks, dense_quadratic_form

# torch.func imports torch internals that still call torch.jit.script
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


# ---------------------------------------------------------------- helpers
def change_after_insert(model, x, y, loss, location, weight, bias) -> float:
    """J(eps) - J(0): the real change of the full-data loss after the insertion."""
    grown = copy.deepcopy(model)
    grown.insert_layer(location, weight, bias)
    assert grown.depth == model.depth + 1
    return full_loss(grown, x, y, loss) - full_loss(model, x, y, loss)


CASES = [
    pytest.param(width, depth, loss, id=f"w{width}-d{depth}-{loss}")
    for width, depth, loss in itertools.product((4, 5, 6), (0, 1, 3), ("mse", "cross_entropy"))
]


# ------------------------------------------------- 1. finite differences
@pytest.mark.parametrize(("width", "depth", "loss"), CASES)
def test_leading_eigenvector_matches_real_loss_change(width, depth, loss):
    seed = width * 10 + depth
    x, y = make_data(loss, seed=seed)
    model = make_model(width, depth, loss, seed=seed)
    td = topological_derivative(model, (x, y), loss, keep_blocks=True)

    assert td.eigenvalues.shape == (depth + 1,)
    assert torch.stack(td.block_eigenvalues).shape == (depth + 1, width)
    assert torch.stack(td.block_eigenvectors).shape == (depth + 1, width, width + 1)
    assert torch.stack(td.blocks).shape == (depth + 1, width, width + 1, width + 1)
    assert td.n_samples == N_SAMPLES
    assert td.loss == pytest.approx(full_loss(model, x, y, loss), rel=1e-12)
    assert td.best_location == int(torch.argmax(td.eigenvalues))

    ratios = []
    for location in model.locations:
        for k in (1, 2):
            weight, bias = td.layer(location, EPS, k=k)
            # exactly k rows are active, each of norm eps
            row_norms = torch.cat([weight, bias[:, None]], dim=1).norm(dim=1)
            assert int((row_norms > 0).sum()) == k
            assert torch.allclose(row_norms[row_norms > 0], torch.full((k,), EPS, dtype=torch.float64))
            predicted = td.predicted_change(location, EPS, k)
            # the quadratic model itself is consistent with the blocks
            assert predicted == pytest.approx(
                -0.5 * dense_quadratic_form(td.blocks[location], weight, bias).item(), rel=1e-10
            )
            actual = change_after_insert(model, x, y, loss, location, weight, bias)
            ratio = actual / predicted
            ratios.append(ratio)
            assert abs(ratio - 1) < 0.01, f"location {location}, k={k}: measured/predicted = {ratio}"
    print(f"FD ratios {width=} {depth=} {loss}: min {min(ratios):.6f} max {max(ratios):.6f}")


@pytest.mark.parametrize(("width", "depth", "loss"), CASES[::3])
def test_random_direction_matches_quadratic_form(width, depth, loss):
    """For any unit phi (not only an eigenvector): J(eps) - J(0) = -(eps^2/2) phi^T Q phi."""
    seed = width * 10 + depth
    x, y = make_data(loss, seed=seed)
    model = make_model(width, depth, loss, seed=seed)
    td = topological_derivative(model, (x, y), loss, keep_blocks=True)
    g = torch.Generator().manual_seed(seed)
    for location in model.locations:
        blocks = td.blocks[location]
        scale = torch.linalg.eigvalsh(blocks).abs().max()
        # several random unit directions; keep one whose curvature is not tiny
        best = None
        for _ in range(20):
            phi = torch.randn(width, width + 1, generator=g, dtype=torch.float64)
            phi /= phi.norm()
            q = dense_quadratic_form(blocks, phi[:, :-1], phi[:, -1])
            if best is None or q.abs() > best[1].abs():
                best = (phi, q)
        phi, q = best
        assert q.abs() > 0.05 * scale
        predicted = -0.5 * EPS**2 * q.item()
        actual = change_after_insert(model, x, y, loss, location, EPS * phi[:, :-1], EPS * phi[:, -1])
        ratio = actual / predicted
        assert abs(ratio - 1) < 0.01, f"location {location}: measured/predicted = {ratio}"


def test_loss_decreases_at_best_location_and_negative_mu_raises_it():
    """The sign matters: mu > 0 lowers the loss, a direction with phi^T Q phi < 0 raises it."""
    x, y = make_data("mse", seed=3)
    model = make_model(5, 2, "mse", seed=3)
    td = topological_derivative(model, (x, y), "mse", keep_blocks=True)
    location = td.best_location
    assert td.eigenvalues[location] > 0
    weight, bias = td.layer(location, EPS)
    assert change_after_insert(model, x, y, "mse", location, weight, bias) < 0
    # the most negative eigenvector of one block raises the loss
    values, vectors = torch.linalg.eigh(td.blocks[location])
    r = int(torch.argmin(values[:, 0]))
    assert values[r, 0] < 0
    rows = torch.zeros(5, 6, dtype=torch.float64)
    rows[r] = EPS * vectors[r, :, 0]
    change = change_after_insert(model, x, y, "mse", location, rows[:, :-1], rows[:, -1])
    assert change > 0
    assert change == pytest.approx(-0.5 * EPS**2 * values[r, 0].item(), rel=0.01)


def test_eigenvectors_are_unit_eigenvectors_of_their_blocks():
    x, y = make_data("cross_entropy", seed=1)
    model = make_model(4, 2, "cross_entropy", seed=1)
    td = topological_derivative(model, (x, y), "cross_entropy", keep_blocks=True)
    v = torch.stack(td.block_eigenvectors)
    assert torch.allclose(v.norm(dim=-1), torch.ones_like(torch.stack(td.block_eigenvalues)), atol=1e-12)
    bv = torch.einsum("lrij,lrj->lri", torch.stack(td.blocks), v)
    assert torch.allclose(bv, torch.stack(td.block_eigenvalues)[..., None] * v, atol=1e-12)
    top = torch.linalg.eigvalsh(torch.stack(td.blocks))[..., -1]
    assert torch.allclose(torch.stack(td.block_eigenvalues), top, atol=1e-12)
    assert torch.allclose(td.eigenvalues, top.max(dim=1).values, atol=1e-12)


def test_rel_threshold_neuron_selection():
    x, y = make_data("mse", seed=2)
    model = make_model(6, 1, "mse", seed=2)
    td = topological_derivative(model, (x, y), "mse")
    location = td.best_location
    values = td.block_eigenvalues[location]
    chosen = td.neurons(location, k=None, rel_threshold=0.5)
    expected = {int(r) for r in torch.nonzero((values > 0) & (values >= 0.5 * values.max()))}
    assert set(chosen.tolist()) == expected
    assert td.predicted_change(location, EPS, k=None, rel_threshold=0.5) == pytest.approx(
        -0.5 * EPS**2 * values[chosen].sum().item()
    )
    with pytest.raises(ValueError, match="k must be an integer in"):
        td.layer(location, EPS, k=7)
    with pytest.raises(ValueError, match="location"):
        td.layer(model.depth + 1, EPS)


# ---------------------------------------------------------- streaming
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_streaming_is_independent_of_batching(loss):
    x, y = make_data(loss, n_samples=50, seed=5)
    model = make_model(5, 2, loss, seed=5)
    reference = topological_derivative(model, (x, y), loss, batch_size=10_000, keep_blocks=True)
    small = topological_derivative(model, (x, y), loss, batch_size=7, keep_blocks=True)
    ordered = DataLoader(TensorDataset(x, y), batch_size=9, shuffle=False)
    shuffled = DataLoader(TensorDataset(x, y), batch_size=11, shuffle=True, generator=torch.Generator().manual_seed(0))
    as_list = topological_derivative(model, [x, y], loss, batch_size=13, keep_blocks=True)
    for other in (
        small,
        as_list,
        topological_derivative(model, ordered, loss, keep_blocks=True),
        topological_derivative(model, shuffled, loss, keep_blocks=True),
    ):
        assert other.n_samples == 50
        assert other.loss == pytest.approx(reference.loss, rel=1e-12)
        assert torch.allclose(torch.stack(other.blocks), torch.stack(reference.blocks), rtol=1e-10, atol=1e-13)
        assert torch.allclose(
            torch.stack(other.block_eigenvalues), torch.stack(reference.block_eigenvalues), rtol=1e-10, atol=1e-13
        )
        assert torch.allclose(other.eigenvalues, reference.eigenvalues, rtol=1e-10, atol=1e-13)
        # eigenvectors agree up to sign
        dots = (torch.stack(other.block_eigenvectors) * torch.stack(reference.block_eigenvectors)).sum(-1).abs()
        assert torch.allclose(dots, torch.ones_like(dots), atol=1e-8)
        assert other.best_location == reference.best_location


def test_blocks_equal_the_closed_form_from_states_and_adjoints():
    """B_r = sigma''(0) sum_s p_r^s u^s u^s^T with p = -dJ/dx computed by plain autograd."""
    x, y = make_data("mse", n_samples=20, seed=6)
    model = make_model(4, 1, "mse", seed=6, activation="z-tanh")
    td = topological_derivative(model, (x, y), "mse", batch_size=6, keep_blocks=True)
    prediction, states = model.forward_states(x)
    grads = torch.autograd.grad(F.mse_loss(prediction, y), states)
    for location, (state, grad) in enumerate(zip(states, grads, strict=True)):
        p = -grad
        u = torch.cat([state.detach(), torch.ones(20, 1, dtype=torch.float64)], dim=1)
        expected = 2.0 * torch.einsum("sr,si,sj->rij", p, u, u)
        assert torch.allclose(td.blocks[location], expected, rtol=1e-10, atol=1e-14)
        assert torch.allclose(dense_hamiltonian_blocks(state.detach(), p, 2.0), expected, atol=1e-14)


def test_float32_model_gives_float64_blocks_close_to_float64_model():
    x, y = make_data("mse", seed=7)
    model64 = make_model(4, 1, "mse", seed=7)
    model32 = copy.deepcopy(model64).float()
    td64 = topological_derivative(model64, (x, y), "mse", keep_blocks=True)
    td32 = topological_derivative(model32, (x.float(), y.float()), "mse", keep_blocks=True)
    assert torch.stack(td32.blocks).dtype == torch.float64
    assert td32.eigenvalues.dtype == torch.float64
    assert torch.allclose(td32.eigenvalues, td64.eigenvalues, rtol=1e-4, atol=1e-6)


def test_training_mode_is_restored():
    x, y = make_data("mse")
    model = make_model(4, 1, "mse")
    model.train()
    topological_derivative(model, (x, y), "mse")
    assert model.training
    model.eval()
    topological_derivative(model, (x, y), "mse")
    assert not model.training


def test_callable_loss_equals_named_loss():
    x, y = make_data("mse", seed=8)
    model = make_model(4, 1, "mse", seed=8)
    named = topological_derivative(model, (x, y), "mse", keep_blocks=True)
    custom = topological_derivative(model, (x, y), lambda a, b: ((a - b) ** 2).mean(), keep_blocks=True)
    assert torch.allclose(torch.stack(named.blocks), torch.stack(custom.blocks), rtol=1e-12, atol=1e-15)
    # a loss of twice the size has twice the blocks
    double = topological_derivative(model, (x, y), lambda a, b: 2 * F.mse_loss(a, b), keep_blocks=True)
    assert torch.allclose(torch.stack(double.blocks), 2 * torch.stack(named.blocks), rtol=1e-12, atol=1e-15)


# ------------------------------------------------- 2. dense reference
def dense_minus_hessian(model, x, y, loss, location):
    """-d^2 J / d theta^2 at theta = 0 for theta = flattened [W | b] of a zero layer inserted at l."""
    grown = copy.deepcopy(model)
    grown.insert_layer(location)
    n = grown.width
    params = {name: p.detach() for name, p in grown.named_parameters()}
    prefix = f"layers.{location}.affine."
    assert torch.count_nonzero(params[prefix + "weight"]) == 0

    def loss_of(theta):
        rows = theta.reshape(n, n + 1)
        changed = dict(params)
        changed[prefix + "weight"] = rows[:, :-1]
        changed[prefix + "bias"] = rows[:, -1]
        return LOSS_FNS[loss](functional_call(grown, changed, (x,)), y)

    theta0 = torch.zeros(n * (n + 1), dtype=torch.float64)
    return -torch.func.hessian(loss_of)(theta0)


@pytest.mark.parametrize(
    ("width", "depth", "loss"),
    [(3, 0, "mse"), (4, 2, "mse"), (5, 1, "cross_entropy"), (3, 2, "cross_entropy")],
)
def test_blocks_equal_dense_hessian_of_loss(width, depth, loss):
    seed = 100 + width + depth
    x, y = make_data(loss, n_samples=40, seed=seed)
    model = make_model(width, depth, loss, seed=seed)
    td = topological_derivative(model, (x, y), loss, batch_size=16, keep_blocks=True)
    for location in model.locations:
        q_dense = dense_minus_hessian(model, x, y, loss, location)
        assert q_dense.shape == (width * (width + 1),) * 2
        # Q_l = -Hessian is block diagonal, block r = neuron r (row r of [W | b])
        assert torch.allclose(q_dense, torch.block_diag(*td.blocks[location]), rtol=0, atol=1e-10)
        dense_eigs = torch.linalg.eigvalsh(q_dense)
        block_eigs = torch.sort(torch.linalg.eigvalsh(td.blocks[location]).flatten()).values
        assert torch.allclose(dense_eigs, block_eigs, rtol=0, atol=1e-10)
        assert dense_eigs[-1].item() == pytest.approx(td.eigenvalues[location].item(), abs=1e-10)


# ---------------------------------------------------------- 7. errors
def test_nan_or_inf_in_data_is_rejected():
    x, y = make_data("mse")
    model = make_model(4, 1, "mse")
    x_bad = x.clone()
    x_bad[5, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        topological_derivative(model, (x_bad, y), "mse")
    y_bad = y.clone()
    y_bad[40, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        topological_derivative(model, (x, y_bad), "mse", batch_size=8)
    with pytest.raises(ValueError, match="NaN"):
        topological_derivative(model, DataLoader(TensorDataset(x, y_bad), batch_size=8), "mse")
    x_inf = x.clone()
    x_inf[0, 0] = float("inf")
    with pytest.raises(ValueError, match="inf"):
        topological_derivative(model, (x_inf, y), "mse")


def test_malformed_data_is_rejected():
    x, y = make_data("mse")
    model = make_model(4, 1, "mse")
    with pytest.raises(ValueError, match="64 samples but y has 63"):
        topological_derivative(model, (x, y[:-1]), "mse")
    with pytest.raises(ValueError, match=r"expected input of shape \(batch, 3\)"):
        topological_derivative(model, (x[:, :2], y), "mse")
    with pytest.raises(ValueError, match="empty"):
        topological_derivative(model, (x[:0], y[:0]), "mse")
    with pytest.raises(ValueError, match="empty"):
        topological_derivative(model, DataLoader(TensorDataset(x[:0], y[:0]), batch_size=4), "mse")
    with pytest.raises(TypeError):
        topological_derivative(model, (x, y, y), "mse")
    with pytest.raises(TypeError, match="growable model"):
        topological_derivative(torch.nn.Linear(3, 2), (x, y), "mse")


def test_unknown_loss_name_is_rejected_with_suggestion():
    x, y = make_data("cross_entropy")
    model = make_model(4, 1, "cross_entropy")
    with pytest.raises(ValueError, match="did you mean 'cross_entropy'"):
        topological_derivative(model, (x, y), "cross-entropy")
    with pytest.raises(ValueError, match="unknown loss"):
        topological_derivative(model, (x, y), "hinge")


def test_public_api_exports():
    assert topogrow.topological_derivative is topological_derivative
    assert topogrow.ResidualMLP is ResidualMLP


def test_topological_derivative_of_a_frozen_model():
    """Transfer learning freezes the pretrained network: the adjoints must still exist."""
    model = make_model(4, 1, "mse", seed=3)
    x, y = make_data("mse", seed=3)
    reference = topological_derivative(model, (x, y), "mse")
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    frozen = topological_derivative(model, (x, y), "mse")
    assert torch.equal(frozen.eigenvalues, reference.eigenvalues)
