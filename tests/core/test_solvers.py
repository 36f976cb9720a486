"""The iterative (batched Lanczos) solver against the explicit blocks."""

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from topogrow import ResidualMLP, topological_derivative
from topogrow.core.eigen import iterative_block_eigenpairs, leading_block_eigenpairs, weighted_gram_matvec
from topogrow.core.hamiltonian import hamiltonian_blocks, quadratic_form
from topogrow.core.layer_kinds import Conv2d
from topogrow.core.topological_derivative import choose_solver, solver_costs
from topogrow.nn.cnn import ResidualCNN

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


def regression_data(n_samples: int, in_features: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_samples, in_features, generator=g, dtype=torch.float64)
    y = torch.randn(n_samples, 2, generator=g, dtype=torch.float64)
    return x, y


def assert_same_leading_pairs(exact, iterative, blocks):
    """Each block's leading eigenvalue to 1e-6 of the block's scale, each location's to 1e-9 relative,
    and unit vectors whose Rayleigh quotients are those values."""
    for l, block in enumerate(blocks):
        scale = torch.linalg.eigvalsh(block).abs().amax(dim=1)
        error = (exact.block_eigenvalues[l] - iterative.block_eigenvalues[l]).abs() / scale
        assert float(error.max()) < 1e-6
        top = float(exact.eigenvalues[l])
        assert float(iterative.eigenvalues[l]) == pytest.approx(top, rel=1e-9)
        vectors = iterative.block_eigenvectors[l]
        assert torch.allclose(vectors.norm(dim=1), torch.ones(vectors.shape[0], dtype=vectors.dtype), atol=1e-12)
        rayleigh = torch.einsum("ci,cij,cj->c", vectors, block, vectors)
        assert float(((rayleigh - iterative.block_eigenvalues[l]).abs() / scale).max()) < 1e-6


@pytest.mark.parametrize(("width", "depth", "n_samples"), [(6, 1, 200), (24, 2, 300), (40, 0, 30)])
def test_iterative_solver_gives_the_leading_eigenpairs_of_the_blocks(width, depth, n_samples):
    # (40, 0, 30): fewer samples than the block size, so every block is singular
    x, y = regression_data(n_samples)
    torch.manual_seed(width)
    model = ResidualMLP(3, width, depth, 2).double()
    exact = topological_derivative(model, (x, y), keep_blocks=True, solver="blocks")
    iterative = topological_derivative(model, (x, y), solver="iterative", batch_size=64)
    assert exact.solvers == ("blocks",) * (depth + 1) and iterative.solvers == ("iterative",) * (depth + 1)
    assert all(p > 0 for p in iterative.products) and exact.products == (0,) * (depth + 1)
    assert iterative.loss == pytest.approx(exact.loss, rel=1e-12) and iterative.n_samples == n_samples
    assert iterative.best_location == exact.best_location
    assert_same_leading_pairs(exact, iterative, exact.blocks)
    # the layer it proposes lowers the second-order model by the same amount
    rows = iterative.rows(iterative.best_location, 1.0, k=None, rel_threshold=0.1)
    predicted = iterative.predicted_change(iterative.best_location, 1.0, k=None, rel_threshold=0.1)
    assert -0.5 * float(quadratic_form(exact.blocks[exact.best_location], rows)) == pytest.approx(predicted, rel=1e-6)


def test_iterative_solver_on_convolutions_and_dataloaders():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(24, 1, 8, 8, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (24,), generator=g)
    torch.manual_seed(0)
    model = ResidualCNN(1, (2, 3), (1, 0), 3).double()
    exact = topological_derivative(model, (x, y), "cross_entropy", keep_blocks=True, solver="blocks")
    loader = DataLoader(TensorDataset(x, y), batch_size=10)
    iterative = topological_derivative(model, loader, "cross_entropy", solver="iterative")
    assert iterative.n_samples == 24
    assert_same_leading_pairs(exact, iterative, exact.blocks)


def test_weighted_gram_matvec_applies_every_block():
    g = torch.Generator().manual_seed(1)
    states = torch.randn(5, 2, 4, 4, generator=g, dtype=torch.float64)
    adjoints = torch.randn(5, 2, 4, 4, generator=g, dtype=torch.float64)
    kind = Conv2d(3)
    patches, rows = kind.patches(states), kind.adjoint_rows(adjoints)
    blocks = hamiltonian_blocks(patches, rows, 0.5)
    vectors = torch.randn(2, 19, generator=g, dtype=torch.float64)
    chunks = [(patches[:2], rows[:2]), (patches[2:], rows[2:])]
    for source in (chunks, lambda: iter(chunks)):  # a list of chunks, or a callable making them
        matvec = weighted_gram_matvec(source, 0.5)
        assert torch.allclose(matvec(vectors, torch.arange(2)), torch.einsum("cij,cj->ci", blocks, vectors))
        # a subset of the blocks, in any order
        assert torch.allclose(matvec(vectors[:1], torch.tensor([1])), blocks[1] @ vectors[0])
        swapped = matvec(vectors, torch.tensor([1, 0]))
        assert torch.allclose(swapped, torch.stack([blocks[1] @ vectors[0], blocks[0] @ vectors[1]]))


def test_iterative_eigenpairs_exact_for_small_blocks_and_zero_blocks():
    g = torch.Generator().manual_seed(2)
    u = torch.randn(50, 7, generator=g, dtype=torch.float64)
    p = torch.randn(50, 4, generator=g, dtype=torch.float64)
    p[:, 2] = 0  # an output channel no sample cares about: B = 0
    blocks = torch.einsum("sr,si,sj->rij", p, u, u)
    pairs = iterative_block_eigenpairs(weighted_gram_matvec([(u, p)]), 4, 7, tol=1e-12)
    exact = leading_block_eigenpairs(blocks)
    assert torch.allclose(pairs.values, exact.values, rtol=0, atol=1e-10)
    assert pairs.values[2] == 0 and torch.isfinite(pairs.vectors).all()
    assert pairs.products <= 7  # a 7 x 7 block is exact after 7 steps
    with pytest.raises(ValueError, match="n_blocks"):
        iterative_block_eigenpairs(weighted_gram_matvec([(u, p)]), 0, 7)
    with pytest.raises(ValueError, match="tol"):
        iterative_block_eigenpairs(weighted_gram_matvec([(u, p)]), 4, 7, tol=0)


def test_auto_picks_blocks_for_narrow_and_iterative_for_wide_layers():
    assert choose_solver(64, 65, 1, 13210) == "blocks"
    assert choose_solver(1024, 1025, 1, 2048) == "iterative"
    assert choose_solver(1024, 1025, 1, 2048, keep_blocks=True) == "blocks"
    costs = solver_costs(1024, 1025, 1, 2048)
    assert costs["iterative"] < costs["blocks"] / 10
    x, y = regression_data(40)
    model = ResidualMLP(3, 4, 1, 2).double()
    assert topological_derivative(model, (x, y)).solvers == ("blocks", "blocks")
    with pytest.raises(ValueError, match="keep_blocks"):
        topological_derivative(model, (x, y), keep_blocks=True, solver="iterative")
    with pytest.raises(ValueError, match="iterative"):
        topological_derivative(model, (x, y), solver="iterativ")
    with pytest.raises(ValueError, match="tol"):
        topological_derivative(model, (x, y), solver="iterative", tol=-1.0)
