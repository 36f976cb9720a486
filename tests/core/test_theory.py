"""Every computable formula of docs/theory.md, checked in float64 on small problems.

The page names these tests next to the formulas they check. Each one compares a closed
form with an independent computation: autograd Hessians, the real change of the loss
after a real insertion, or the exact Wasserstein distance between the empirical state
distributions before and after the insertion (POT's network simplex, ``ot.emd2``).
Run with ``-s`` to see the measured numbers.
"""

import copy
import math

import numpy as np
import pytest
import torch
from mlp_problems import LOSS_FNS, full_loss, make_data, make_model
from torch.func import functional_call, hessian

from topogrow.core import HamiltonianHessian, matrix_free_topological_derivative, topological_derivative
from topogrow.core.adjoint import states_and_adjoints
from topogrow.core.hamiltonian import dense_hamiltonian_blocks
from topogrow.nn.blocks import GeluMLP

ot = pytest.importorskip("ot", reason="POT (the dev extra) computes the exact Wasserstein distances")

# torch.func imports torch internals that still call torch.jit.script
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")

DTYPE = torch.float64


# ------------------------------------------------------------------ a location's state measure
class StateMeasure:
    """The empirical distribution of the states ``x_l^s`` of a ResidualMLP at one location,
    with what the theory needs: the loss as a function of those states (the rest of the
    network applied to them), the adjoints ``p_s = -dJ/dx_s`` and the blocks ``B_r``."""

    def __init__(self, model, y, loss, location, states):
        self.model, self.y, self.loss_name, self.location = model, y, loss, location
        self.states = states.detach().clone()
        self.curvature = float(model.activation_curvature)
        self.activation = model.new_activation()
        x = self.states.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(self.loss(x), x)
        self.adjoints = -grad  # of the mean loss J
        self.blocks = dense_hamiltonian_blocks(self.states, self.adjoints, self.curvature)

    @classmethod
    def of(cls, model, x, y, loss, location):
        """The measure a real network produces at ``location`` from inputs ``x``."""
        _, states, _ = states_and_adjoints(model, x, y, LOSS_FNS[loss])
        return cls(model, y, loss, location, states[location])

    @property
    def n_samples(self):
        return self.states.shape[0]

    @property
    def patches(self):
        """``u = [x; 1]`` for every sample, ``(S, n + 1)``."""
        return torch.cat([self.states, torch.ones(self.n_samples, 1, dtype=DTYPE)], dim=1)

    def loss(self, states):
        """J as a function of the states at the location: the rest of the network, then the loss."""
        h = states
        for layer in self.model.layers[self.location :]:
            h = layer(h)
        return LOSS_FNS[self.loss_name](self.model.head(h), self.y)

    def value(self, states=None):
        with torch.no_grad():
            return self.loss(self.states if states is None else states).item()

    def displacement(self, rows, epsilon):
        """``g(x_s) = sigma(eps [W | b] u_s)``: the inserted layer moves x_s to x_s + g(x_s)."""
        return self.activation(epsilon * self.patches @ rows.T)

    def change(self, rows, epsilon):
        """The real ``J(T#mu) - J(mu)`` of inserting the layer ``epsilon * rows`` here."""
        return self.value(self.states + self.displacement(rows, epsilon)) - self.value()

    def quadratic_form(self, rows):
        """``phi^T Q phi``."""
        return float(torch.einsum("ri,rij,rj->", rows, self.blocks, rows))

    def transport_constant(self, rows, p, ground="euclidean"):
        """``C_p(phi)``: ``W_p(mu, T#mu) = eps^2 C_p(phi) + O(eps^3)`` (theory.md, "the size of the move")."""
        quad = (self.patches @ rows.T) ** 2  # (S, n): (w_r . u_s)^2
        size = quad.norm(dim=1) if ground == "euclidean" else quad.sum(dim=1)
        return 0.5 * abs(self.curvature) * float(size.pow(p).mean() ** (1 / p))

    def wasserstein(self, rows, epsilon, p, ground="euclidean"):
        """Exact ``W_p`` between the empirical state distributions before and after the insertion."""
        before = self.states.numpy()
        after = (self.states + self.displacement(rows, epsilon)).numpy()
        metric = "euclidean" if ground == "euclidean" else "cityblock"
        cost = ot.dist(before, after, metric=metric) ** p
        weights = np.full(self.n_samples, 1.0 / self.n_samples)
        return float(ot.emd2(weights, weights, cost)) ** (1 / p)

    def top_block(self):
        """``(r, mu, v)``: the block with the largest eigenvalue, that eigenvalue and its unit eigenvector."""
        values, vectors = torch.linalg.eigh(self.blocks)
        r = int(values[:, -1].argmax())
        return r, float(values[r, -1]), vectors[r, :, -1]

    def single_row(self, r, vector):
        rows = torch.zeros_like(self.blocks[:, 0])
        rows[r] = vector / vector.norm()
        return rows


def small_problem(loss="mse", width=4, depth=2, seed=0, n_samples=48):
    x, y = make_data(loss, n_samples=n_samples, seed=seed, first_seed=2000)
    return make_model(width, depth, loss, seed=seed), x, y


def whitened(states):
    """States with mean 0 and covariance I exactly (so ``E[u u^T] = I`` for ``u = [x; 1]``)."""
    centred = states - states.mean(dim=0)
    chol = torch.linalg.cholesky(centred.T @ centred / states.shape[0])
    return torch.linalg.solve_triangular(chol, centred.T, upper=False).T


def at_budget(measure, rows, delta, p, ground="euclidean"):
    """``(epsilon, W_p measured, real change)`` for the insertion of ``rows`` scaled to ``W_p = delta``."""
    epsilon = math.sqrt(delta / measure.transport_constant(rows, p, ground))
    return epsilon, measure.wasserstein(rows, epsilon, p, ground), measure.change(rows, epsilon)


def maximise_ratio(measure, p, start, mask=None, steps=300):
    """Maximise ``R_p(phi) = phi^T Q phi / (2 C_p(phi))`` by L-BFGS from ``start`` (rows outside
    ``mask`` stay zero). Returns the unit maximiser and the ratio there."""
    patches = measure.patches
    keep = torch.ones_like(start) if mask is None else mask
    phi = start.clone().requires_grad_(True)
    optimiser = torch.optim.LBFGS([phi], max_iter=steps, line_search_fn="strong_wolfe", tolerance_grad=1e-12)

    def negative_ratio():
        optimiser.zero_grad()
        rows = phi * keep
        quad = torch.einsum("ri,rij,rj->", rows, measure.blocks, rows)
        size = ((patches @ rows.T) ** 2).norm(dim=1).pow(p).mean() ** (1 / p)
        value = -quad / (abs(measure.curvature) * size)
        value.backward()
        return value

    optimiser.step(negative_ratio)
    rows = (phi * keep).detach()
    return rows / rows.norm(), -float(negative_ratio().detach())


def ratio(measure, rows, p, ground="euclidean"):
    """``R_p(phi)``: the predicted loss decrease per unit of W_p."""
    return measure.quadratic_form(rows) / (2 * measure.transport_constant(rows, p, ground))


# ------------------------------------------------------- 1-4. Hamiltonian, blocks, matrix-free
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_hamiltonian_hessian_identity(loss):
    """Q_l three ways: autograd Hessian of sum_s p_s^T sigma(W x_s + b), minus the Hessian of the
    training loss in a zero-initialised inserted layer, and the block diagonal of topogrow.core."""
    model, x, y = small_problem(loss)
    n = model.width
    worst = 0.0
    for location in model.locations:
        measure = StateMeasure.of(model, x, y, loss, location)
        act = measure.activation

        def hamiltonian(theta, measure=measure, act=act):
            rows = theta.view(n, n + 1)
            return (measure.adjoints * act(measure.patches @ rows.T)).sum()

        zero = torch.zeros(n * (n + 1), dtype=DTYPE)
        q_hamiltonian = hessian(hamiltonian)(zero)
        q_blocks = torch.block_diag(*measure.blocks)

        grown = copy.deepcopy(model)
        layer = grown.insert_layer(location)
        names = {id(p): name for name, p in grown.named_parameters()}
        weight_name, bias_name = names[id(layer.affine.weight)], names[id(layer.affine.bias)]

        def training_loss(theta, grown=grown, weight_name=weight_name, bias_name=bias_name):
            rows = theta.view(n, n + 1)
            out = functional_call(grown, {weight_name: rows[:, :-1], bias_name: rows[:, -1]}, (x,))
            return LOSS_FNS[loss](out, y)

        q_loss = -hessian(training_loss)(zero).detach()
        scale = q_blocks.abs().max()
        errors = [float((q - q_blocks).abs().max() / scale) for q in (q_hamiltonian, q_loss)]
        worst = max(worst, *errors)
        assert max(errors) < 1e-12, f"location {location}: relative errors {errors}"
    print(f"Hamiltonian-Hessian identity ({loss}): worst relative error {worst:.1e}")


def test_eigenvalues_of_q_are_those_of_its_blocks():
    """The spectrum of the dense n(n+1) x n(n+1) matrix is the union of the blocks' spectra, and
    topological_derivative's mu_l is its largest eigenvalue."""
    model, x, y = small_problem()
    td = topological_derivative(model, (x, y), "mse", keep_blocks=True)
    for location in model.locations:
        blocks = td.blocks[location]
        dense = torch.linalg.eigvalsh(torch.block_diag(*blocks))
        union = torch.linalg.eigvalsh(blocks).flatten().sort().values
        assert torch.allclose(dense, union, atol=1e-14, rtol=0)
        assert float(td.eigenvalues[location]) == pytest.approx(float(dense[-1]), rel=1e-12)


def test_matrix_free_operator_matches_blocks():
    """Hessian-vector products of the Hamiltonian (never forming Q) give the same matrix and the
    same leading eigenvalue as the closed form."""
    model, x, y = small_problem()
    td = topological_derivative(model, (x, y), "mse", keep_blocks=True)
    mf = matrix_free_topological_derivative(model, (x, y), "mse", lambda: _dense_block(model), k=1)
    for location in model.locations:
        measure = StateMeasure.of(model, x, y, "mse", location)
        operator = HamiltonianHessian(_dense_block(model), measure.states, measure.adjoints)
        dense = operator.dense()
        # the block's parameters are flattened as [W (n*n), b (n)]; reorder to rows [W_r | b_r]
        n = model.width
        order = torch.cat([torch.arange(n * n).view(n, n), torch.arange(n * n, n * n + n)[:, None]], dim=1).flatten()
        assert torch.allclose(dense[order][:, order], torch.block_diag(*td.blocks[location]), atol=1e-14, rtol=0)
        assert float(mf.eigenvalues[location]) == pytest.approx(float(td.eigenvalues[location]), rel=1e-10)


def _dense_block(model):
    from topogrow.nn.blocks import DenseBlock

    return DenseBlock(model.width, model.new_activation())


# ------------------------------------------------------------- 5. the finite-difference ratio
def test_finite_difference_ratio():
    """J(eps) - J(0) = -(eps^2/2) mu + O(eps^3) under a real insertion: the ratio tends to 1 like eps."""
    model, x, y = small_problem()
    td = topological_derivative(model, (x, y), "mse")
    location = td.best_location
    deviations = []
    for epsilon in (1e-1, 1e-2, 1e-3, 1e-4):
        weight, bias = td.layer(location, epsilon)
        grown = copy.deepcopy(model)
        grown.insert_layer(location, weight, bias)
        actual = full_loss(grown, x, y, "mse") - full_loss(model, x, y, "mse")
        deviations.append(abs(actual / td.predicted_change(location, epsilon) - 1))
    print("finite-difference |ratio - 1| at eps = 1e-1..1e-4:", ", ".join(f"{d:.2e}" for d in deviations))
    assert deviations[2] < 1e-2
    for coarse, fine in zip(deviations, deviations[1:], strict=False):
        assert fine < 0.2 * coarse  # first order in eps: a tenfold smaller eps, about tenfold smaller error


def test_first_order_block_finite_difference():
    """A block with d g / d theta != 0 at zero (an output bias) is first order:
    J(eps d) - J(0) = -eps |G| + O(eps^2)."""
    model, x, y = small_problem()
    location = model.depth

    def block():
        return GeluMLP(model.width, 3, output_bias=True)

    mf = matrix_free_topological_derivative(model, (x, y), "mse", block, k=1, locations=[location])
    assert location in mf.first_order_locations
    direction = mf.direction(location)
    deviations = []
    for epsilon in (1e-3, 1e-4):
        grown = copy.deepcopy(model)
        inserted = block().to(DTYPE)
        torch.nn.utils.vector_to_parameters(epsilon * direction, inserted.parameters())
        from topogrow.nn.blocks import ResidualBlock

        grown.insert_block(location, ResidualBlock(inserted))
        actual = full_loss(grown, x, y, "mse") - full_loss(model, x, y, "mse")
        deviations.append(abs(actual / mf.predicted_change(location, epsilon) - 1))
    print("first-order block |ratio - 1| at eps = 1e-3, 1e-4:", ", ".join(f"{d:.2e}" for d in deviations))
    assert deviations[-1] < 1e-2 and deviations[1] < 0.2 * deviations[0]


# -------------------------------------------------------- 6. the linear flow near zero, dead rows
def test_linear_flow_near_zero_and_dead_rows():
    """dJ/dw_r = -B_r w_r + O(|w_r|^2) for an inserted layer with small rows; a zero row has zero gradient."""
    model, x, y = small_problem()
    location = 1
    measure = StateMeasure.of(model, x, y, "mse", location)
    g = torch.Generator().manual_seed(5)
    rows = 1e-5 * torch.randn(model.width, model.width + 1, generator=g, dtype=DTYPE)
    rows[2] = 0.0  # a dead row
    grown = copy.deepcopy(model)
    layer = grown.insert_layer(location, rows[:, :-1], rows[:, -1])
    LOSS_FNS["mse"](grown(x), y).backward()
    gradient = torch.cat([layer.affine.weight.grad, layer.affine.bias.grad[:, None]], dim=1)
    flow = -torch.einsum("rij,rj->ri", measure.blocks, rows)
    live = [0, 1, 3]
    error = float((gradient[live] - flow[live]).norm() / flow[live].norm())
    print(f"linear flow: relative error of -B_r w_r at |w| ~ 1e-5: {error:.1e}")
    assert error < 1e-3
    assert torch.equal(gradient[2], torch.zeros_like(gradient[2]))


# ------------------------------------------------------------------- 7. the transport view
def test_transport_first_variation_is_the_topological_derivative():
    """-sum_s p_s . g(x_s) (the first variation of J along T = id + g) against the real change and
    against -(eps^2/2) phi^T Q phi, for a two-neuron layer."""
    model, x, y = small_problem()
    td = topological_derivative(model, (x, y), "mse")
    location = td.best_location
    measure = StateMeasure.of(model, x, y, "mse", location)
    rows = td.direction(location, k=2)
    for epsilon in (1e-2, 1e-3):
        displacement = measure.displacement(rows, epsilon)
        first_variation = -float((measure.adjoints * displacement).sum())
        grown = copy.deepcopy(model)
        grown.insert_layer(location, epsilon * rows[:, :-1], epsilon * rows[:, -1])
        actual = full_loss(grown, x, y, "mse") - full_loss(model, x, y, "mse")
        assert measure.change(rows, epsilon) == pytest.approx(actual, rel=1e-9)  # the same insertion
        predicted = -0.5 * epsilon**2 * measure.quadratic_form(rows)
        print(
            f"transport eps={epsilon:g}: first variation / predicted = {first_variation / predicted:.6f}, "
            f"real / predicted = {actual / predicted:.6f}"
        )
        assert abs(first_variation / predicted - 1) < 3 * epsilon
        assert abs(actual / predicted - 1) < 3 * epsilon


@pytest.mark.parametrize("p", [1, 2])
def test_wasserstein_distance_of_an_insertion(p):
    """W_p(mu, T#mu) (exact, POT) = ||g||_{L^p(mu)} (the identity coupling is optimal for small moves)
    = eps^2 C_p(phi) (1 + O(eps))."""
    model, x, y = small_problem()
    td = topological_derivative(model, (x, y), "mse")
    location = td.best_location
    measure = StateMeasure.of(model, x, y, "mse", location)
    rows = td.direction(location, k=2)
    d_min = float(torch.pdist(measure.states).min())
    deviations = []
    for epsilon in (1e-1, 3e-2, 1e-2):
        move = measure.displacement(rows, epsilon).norm(dim=1)
        assert float(move.max()) <= d_min / 2  # the condition under which the identity coupling is optimal
        exact = measure.wasserstein(rows, epsilon, p)
        identity_coupling = float(move.pow(p).mean() ** (1 / p))
        assert exact == pytest.approx(identity_coupling, rel=1e-9)
        deviations.append(abs(exact / (epsilon**2 * measure.transport_constant(rows, p)) - 1))
    print(f"W_{p} / (eps^2 C_{p}) - 1 at eps = 0.1, 0.03, 0.01:", ", ".join(f"{d:.2e}" for d in deviations))
    assert deviations[-1] < 0.02
    assert deviations[2] < deviations[1] < deviations[0]


def test_w1_budget_with_whitened_states_gives_the_td_eigenvector():
    """With E[u u^T] = I and the l1 ground cost, W_1 = eps^2 |sigma''(0)|/2 |phi|^2 + O(eps^3): the
    W_1-budget problem is the eigenproblem of Q, its best layer the leading eigenvector, and its
    value mu_l / |sigma''(0)| per unit of W_1."""
    model, x, y = small_problem()
    raw = StateMeasure.of(model, x, y, "mse", 1)
    measure = StateMeasure(model, y, "mse", 1, whitened(raw.states))
    second_moment = measure.patches.T @ measure.patches / measure.n_samples
    assert torch.allclose(second_moment, torch.eye(model.width + 1, dtype=DTYPE), atol=1e-12)
    r, mu, vector = measure.top_block()
    best = measure.single_row(r, vector)
    # any layer: C_1 with the l1 ground cost is |sigma''(0)|/2 |phi|^2 exactly
    g = torch.Generator().manual_seed(3)
    for rows in (best, torch.randn(model.width, model.width + 1, generator=g, dtype=DTYPE)):
        rows = rows / rows.norm()
        assert measure.transport_constant(rows, 1, "l1") == pytest.approx(0.5 * abs(measure.curvature), rel=1e-12)
        assert ratio(measure, rows, 1, "l1") <= mu / abs(measure.curvature) * (1 + 1e-12)
    assert ratio(measure, best, 1, "l1") == pytest.approx(mu / abs(measure.curvature), rel=1e-12)
    delta = 1e-5
    epsilon, measured, change = at_budget(measure, best, delta, 1, "l1")
    print(
        f"W_1 budget, whitened states: W_1 measured / budget = {measured / delta:.6f}, "
        f"real decrease / (budget mu/|sigma''|) = {-change / (delta * mu / abs(measure.curvature)):.6f} "
        f"(eps={epsilon:.3g})"
    )
    assert measured == pytest.approx(delta, rel=0.05)
    assert -change == pytest.approx(delta * mu / abs(measure.curvature), rel=0.05)


def test_w1_budget_counterexample_without_whitening():
    """Without whitening the W_1 budget gives the generalised eigenproblem B_r w = nu M w, M = E[u u^T]:
    at the same exact W_1, its leading vector lowers the real loss more than the TD eigenvector."""
    model, x, y = small_problem()
    measure = StateMeasure.of(model, x, y, "mse", 1)
    second_moment = measure.patches.T @ measure.patches / measure.n_samples
    chol = torch.linalg.cholesky(second_moment)
    best = None
    for r in range(model.width):
        inner = torch.linalg.solve_triangular(chol, measure.blocks[r], upper=False)
        values, vectors = torch.linalg.eigh(torch.linalg.solve_triangular(chol, inner.T, upper=False))
        if best is None or values[-1] > best[0]:
            best = (float(values[-1]), r, torch.linalg.solve_triangular(chol.T, vectors[:, -1:], upper=True)[:, 0])
    nu, r_gen, w_gen = best
    r, mu, vector = measure.top_block()
    td_rows, gen_rows = measure.single_row(r, vector), measure.single_row(r_gen, w_gen)
    curvature = abs(measure.curvature)
    assert ratio(measure, gen_rows, 1) == pytest.approx(nu / curvature, rel=1e-10)
    delta = 1e-5
    _, w_td, change_td = at_budget(measure, td_rows, delta, 1)
    _, w_gen_measured, change_gen = at_budget(measure, gen_rows, delta, 1)
    print(
        f"W_1 counterexample: predicted decrease per unit W_1: TD {ratio(measure, td_rows, 1):.4f}, "
        f"generalised {nu / curvature:.4f}; measured at W_1 = {w_td:.4e} / {w_gen_measured:.4e}: "
        f"real change TD {change_td:.4e}, generalised {change_gen:.4e}"
    )
    assert w_td == pytest.approx(delta, rel=0.05) and w_gen_measured == pytest.approx(delta, rel=0.05)
    cosine = abs(float((gen_rows * td_rows).sum()))
    print(f"W_1 counterexample: cosine between the two layers {cosine:.3f}")
    assert change_gen < 1.5 * change_td < 0  # at least 1.5 times the decrease for the same transport


def test_w2_budget_counterexample():
    """For p = 2 the budget problem's denominator is quartic in phi, sqrt(E sum_r (w_r . u)^4): not a
    Rayleigh quotient. Its maximiser (found numerically) is not the TD eigenvector and lowers the
    real loss more at the same exact W_2."""
    model, x, y = small_problem()
    measure = StateMeasure.of(model, x, y, "mse", 1)
    r, mu, vector = measure.top_block()
    td_rows = measure.single_row(r, vector)
    mask = torch.zeros_like(td_rows)
    mask[r] = 1.0
    opt_rows, value = maximise_ratio(measure, 2, td_rows, mask)
    cosine = abs(float((opt_rows * td_rows).sum()))
    delta = 1e-5
    _, w_td, change_td = at_budget(measure, td_rows, delta, 2)
    _, w_opt, change_opt = at_budget(measure, opt_rows, delta, 2)
    print(
        f"W_2 counterexample (one neuron): R_2 TD {ratio(measure, td_rows, 2):.4f}, maximiser {value:.4f}, "
        f"cosine {cosine:.3f}; real change at W_2 = {w_td:.4e} / {w_opt:.4e}: TD {change_td:.4e}, "
        f"maximiser {change_opt:.4e}"
    )
    block = measure.blocks[r]
    w = opt_rows[r]
    not_eigen = float((block @ w - (w @ block @ w) * w).norm() / torch.linalg.eigvalsh(block).abs().max())
    assert cosine < 0.9 and not_eigen > 0.1  # the maximiser is no eigenvector of its block
    assert w_td == pytest.approx(delta, rel=0.05) and w_opt == pytest.approx(delta, rel=0.05)
    gain = change_opt / change_td
    assert gain > 1.02
    assert gain == pytest.approx(value / ratio(measure, td_rows, 2), rel=0.01)


def four_isotropic_states(width=2, n_origin=60, n_circle=12):
    """States in R^2 with E[(w . u)^4] = |w|^4 for every w in R^3 (u = [x; 1]): 5/6 of the mass at
    the origin, 1/6 spread evenly on the circle of radius 2 (a 12-gon is an exact 4-design)."""
    assert width == 2 and n_circle == n_origin // 5
    angles = 2 * math.pi * torch.arange(n_circle, dtype=DTYPE) / n_circle
    circle = 2.0 * torch.stack([angles.cos(), angles.sin()], dim=1)
    return torch.cat([torch.zeros(n_origin, 2, dtype=DTYPE), circle])


def test_w2_budget_with_isotropic_states_weights_every_positive_block():
    """Under E[(w . u)^4] = |w|^4, C_2(phi) = |sigma''(0)|/2 (sum_r |w_r|^4)^(1/2): the W_2 budget keeps
    the blocks' eigenvectors but activates every positive block, |w_r|^2 proportional to lambda_r,
    with value |lambda_+|_2 / |sigma''(0)| (more than the single TD neuron's mu / |sigma''(0)|)."""
    states = four_isotropic_states()
    model = make_model(2, 1, "mse", seed=1)
    g = torch.Generator().manual_seed(4)
    y = torch.randn(states.shape[0], 2, generator=g, dtype=DTYPE)
    measure = StateMeasure(model, y, "mse", 0, states)
    curvature = abs(measure.curvature)
    rng = torch.Generator().manual_seed(0)
    for _ in range(5):  # the fourth moments are isotropic: C_2 depends on the row norms only
        rows = torch.randn(2, 3, generator=rng, dtype=DTYPE)
        expected = 0.5 * curvature * float(rows.norm(dim=1).pow(4).sum().sqrt())
        assert measure.transport_constant(rows, 2) == pytest.approx(expected, rel=1e-12)
    values, vectors = torch.linalg.eigh(measure.blocks)
    lam = values[:, -1]
    assert (lam > 0).all(), "both blocks need a positive eigenvalue for this check"
    weighted = torch.stack([lam[r].sqrt() * vectors[r, :, -1] for r in range(2)])
    weighted = weighted / weighted.norm()
    predicted = float(lam.norm()) / curvature
    r, mu, vector = measure.top_block()
    td_rows = measure.single_row(r, vector)
    _, found = maximise_ratio(measure, 2, td_rows + 0.1 * weighted)
    assert ratio(measure, weighted, 2) == pytest.approx(predicted, rel=1e-12)
    assert found == pytest.approx(predicted, rel=1e-6)
    assert ratio(measure, td_rows, 2) == pytest.approx(mu / curvature, rel=1e-12)
    delta = 1e-5
    _, w_td, change_td = at_budget(measure, td_rows, delta, 2)
    _, w_all, change_all = at_budget(measure, weighted, delta, 2)
    print(
        f"W_2 budget, 4-isotropic states: value |lambda+|_2/|s''| = {predicted:.4f} (numerical max {found:.4f}), "
        f"TD neuron {mu / curvature:.4f}; real change at W_2 = {w_td:.4e} / {w_all:.4e}: TD {change_td:.4e}, "
        f"every block {change_all:.4e} (predicted ratio {predicted * curvature / mu:.4f}, "
        f"measured {change_all / change_td:.4f})"
    )
    assert w_td == pytest.approx(delta, rel=0.05) and w_all == pytest.approx(delta, rel=0.05)
    assert change_all / change_td == pytest.approx(predicted * curvature / mu, rel=0.05)
