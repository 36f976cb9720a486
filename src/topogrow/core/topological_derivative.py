"""The topological derivative at every insertion location (METHOD.md section 2).

Inserting ``x_l -> x_l + sigma(eps W x_l + eps b)`` changes the loss by
``-(eps^2 / 2) phi^T Q_l phi + O(eps^3)``. The leading eigenvalue ``mu_l`` of
``Q_l`` says *where* to insert (the largest) and its eigenvector *how*.

Two solvers give the same leading eigenpairs (to the iterative tolerance):

- ``"blocks"`` forms every block ``B_r`` (``O(S P n m^2)`` flops, streamed over
  mini-batches, memory ``n m^2`` per location whatever S is) and diagonalises it
  (``O(n m^3)``);
- ``"iterative"`` keeps the location's patches and adjoint rows (memory ``S P (n + m)``,
  or the states and adjoints when patches are larger, e.g. convolutions) and runs a
  Lanczos iteration on all blocks at once from block products ``B_r v``, ``O(S P n m)``
  each (:func:`~topogrow.core.eigen.iterative_block_eigenpairs`).

``"auto"`` picks the cheaper by :func:`solver_costs`: blocks for narrow layers,
the iterative solver once ``m`` is a few hundred (its memory is ``S P (n + m)``, not
the ``n m^2`` of the blocks: megabytes instead of 8.6 GB at width 1024).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from topogrow._validation import unknown_name_error
from topogrow.core.adjoint import StatefulModel, adjoint_batches, device_and_dtype
from topogrow.core.batches import Data
from topogrow.core.eigen import (
    LeadingEigenpairs,
    iterative_block_eigenpairs,
    leading_block_eigenpairs,
    select_leading,
    weighted_gram_matvec,
)
from topogrow.core.hamiltonian import hamiltonian_blocks, quadratic_form
from topogrow.core.losses import Loss, resolve_loss

PATCH_BUDGET = 1 << 22  # state numbers per chunk when forming patches (about 16 MB in float32)
SOLVERS = ("auto", "blocks", "iterative")
# Cost model of "auto", in flop-equivalents (calibrated on a 2-core Xeon, see app/bench.py):
EIGH_COST = 20.0  # a batched eigh of m x m blocks costs about this times m^3 per block
ITERATIVE_STEPS = 40  # Lanczos steps assumed (20 to 60 at tol 1e-6 on California and MNIST)
FLOAT64_COST = 2.0  # a float64 product against the float32 block accumulation
MERGED_ROWS = 1 << 14  # the iterative solver's products run over pieces of at least this many rows
STEP_OVERHEAD = 2e7  # per Lanczos step: reorthogonalisation, Ritz values, Python (about 1 ms)


@dataclass(frozen=True)
class TopologicalDerivative:
    """Leading eigenpairs of the Hamiltonian-Hessian blocks at every location.

    Satisfies :class:`~topogrow.core.result.TopologicalDerivativeResult`; always second
    order (slope and linear form 0). Locations may differ in width (e.g. CNN stages), so per-location tensors are
    kept in tuples indexed by location l:

    Attributes:
        block_eigenvalues: ``block_eigenvalues[l]`` is ``(n_l,)``, the leading eigenvalue
            of the block of each output neuron/channel.
        block_eigenvectors: ``block_eigenvectors[l]`` is ``(n_l, m_l)``, the unit
            eigenvectors, each a row ``[w_c; b_c]`` of the new layer.
        loss: the loss J of the network as it is, over the data used.
        n_samples: S, the number of samples summed over.
        blocks: ``blocks[l]`` is ``(n_l, m_l, m_l)`` if asked for, else ``None``.
        solvers: ``solvers[l]``, the solver used at location l (``"blocks"`` or ``"iterative"``).
        products: ``products[l]``, the block products the iterative solver took (0 for blocks).
    """

    block_eigenvalues: tuple[torch.Tensor, ...]
    block_eigenvectors: tuple[torch.Tensor, ...]
    loss: float
    n_samples: int
    blocks: tuple[torch.Tensor, ...] | None = None
    solvers: tuple[str, ...] = ()
    products: tuple[int, ...] = ()

    @property
    def eigenvalues(self) -> torch.Tensor:
        """``(L,)``: the leading eigenvalue mu_l of Q_l at each location l = 0..T."""
        return torch.stack([values.max() for values in self.block_eigenvalues])

    @property
    def best_location(self) -> int:
        """The location with the largest leading eigenvalue: where to insert."""
        return int(torch.argmax(self.eigenvalues))

    @property
    def n_locations(self) -> int:
        """L, the number of insertion locations."""
        return len(self.block_eigenvalues)

    def improvable(self, tolerance: float = 0.0) -> bool:
        """Whether some insertion lowers the loss: some mu_l > ``tolerance``."""
        return float(self.eigenvalues.max()) > tolerance

    def _check_location(self, location: int) -> None:
        if not 0 <= location < self.n_locations:
            raise ValueError(f"location must be in 0..{self.n_locations - 1}, got {location}")

    def neurons(self, location: int, k: int | None = 1, rel_threshold: float | None = None) -> torch.Tensor:
        """Indices of the neurons (blocks) to activate, largest eigenvalue first.

        Either the top ``k`` blocks, or (``k=None``) every block whose eigenvalue is
        positive and at least ``rel_threshold`` times the largest one (at least one).
        """
        self._check_location(location)
        return select_leading(self.block_eigenvalues[location], k, rel_threshold)

    def rows(
        self, location: int, epsilon: float, k: int | None = 1, rel_threshold: float | None = None
    ) -> torch.Tensor:
        """``(n, m)`` parameters ``[W | b]`` of the new layer: top eigenvectors times epsilon.

        Each chosen neuron c gets row ``epsilon * v_c``; the other rows are zero.
        The predicted loss change is ``-(epsilon^2 / 2) * sum of their mu``.
        """
        chosen = self.neurons(location, k, rel_threshold)
        vectors = self.block_eigenvectors[location]
        rows = torch.zeros_like(vectors)
        rows[chosen] = epsilon * vectors[chosen]
        return rows

    def layer(
        self, location: int, epsilon: float, k: int | None = 1, rel_threshold: float | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(weight (n, m - 1), bias (n,))`` of the new layer (see :meth:`rows`).

        For a dense layer the weight is ``(n, n)``; for a convolution reshape it to
        ``(C, C, k, k)`` (``insert_layer`` accepts either).
        """
        rows = self.rows(location, epsilon, k, rel_threshold)
        return rows[:, :-1].clone(), rows[:, -1].clone()

    def direction(self, location: int, k: int | None = 1, rel_threshold: float | None = None) -> torch.Tensor:
        """``(n, m)`` rows ``[W | b]`` of the new layer at epsilon = 1: ``rows(location, 1.0, k, rel_threshold)``."""
        return self.rows(location, 1.0, k, rel_threshold)

    def slope(self, location: int) -> float:
        """The first-order rate of decrease: 0 (the closed form is second order)."""
        self._check_location(location)
        return 0.0

    def curvature(self, location: int, k: int | None = 1, rel_threshold: float | None = None) -> float:
        """``phi^T Q_l phi = sum of the chosen mu`` for ``phi = direction(location, k, rel_threshold)``."""
        chosen = self.neurons(location, k, rel_threshold)
        return float(self.block_eigenvalues[location][chosen].sum())

    def quadratic_form(self, location: int, rows: torch.Tensor) -> float:
        """``phi^T Q_l phi`` for a layer with parameters ``rows`` ``(n, m)`` (needs ``keep_blocks``)."""
        self._check_location(location)
        if self.blocks is None:
            raise ValueError("quadratic_form needs the blocks: call topological_derivative(..., keep_blocks=True)")
        blocks = self.blocks[location]
        return float(quadratic_form(blocks, rows.to(blocks.dtype)))

    def linear_form(self, location: int, direction: torch.Tensor) -> float:
        """``G_l . phi``: 0 for every direction (the closed form is second order)."""
        self._check_location(location)
        return 0.0

    def predicted_change(
        self, location: int, epsilon: float, k: int | None = 1, rel_threshold: float | None = None
    ) -> float:
        """Second-order model of the loss change ``J(eps) - J(0) = -(eps^2/2) sum mu``."""
        chosen = self.neurons(location, k, rel_threshold)
        return float(-0.5 * epsilon**2 * self.block_eigenvalues[location][chosen].sum())


def topological_derivative(
    model: StatefulModel,
    data: Data,
    loss: str | Loss = "mse",
    *,
    batch_size: int = 1024,
    keep_blocks: bool = False,
    solver: str = "auto",
    tol: float = 1e-6,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> TopologicalDerivative:
    """Topological derivative of ``model`` at every location, streamed over ``data``.

    One forward and one backward pass per mini-batch give the states and adjoints;
    each batch adds its contribution to the blocks of every location and is then
    dropped, so memory does not grow with the number of samples. Blocks are
    accumulated and diagonalised in float64.

    Args:
        model: a growable model (see :class:`StatefulModel`), e.g. ``ResidualMLP``.
        data: a DataLoader of ``(x, y)`` batches, or an ``(X, y)`` pair of tensors.
        loss: ``"mse"``, ``"cross_entropy"`` or a callable returning the batch mean.
        batch_size: mini-batch size when ``data`` is a pair.
        keep_blocks: also return the blocks (memory ``n m^2`` per location; implies
            the blocks solver).
        solver: ``"auto"`` (the cheaper by :func:`solver_costs`, per location),
            ``"blocks"`` or ``"iterative"`` (see the module docstring). The iterative
            solver keeps the location's states and adjoints: memory grows with S.
        tol: relative residual at which the iterative solver stops (eigenvalue error
            about ``tol^2``, at most ``tol``, times the block's largest eigenvalue in magnitude).
        reduce: for data split over processes, a function that sums a float64 tensor over
            them (e.g. :func:`topogrow.growth.distributed.all_reduce_sum`). It is applied
            to the sample count and loss sum, to each location's summed blocks before they
            are divided and diagonalised, and to each block product of the iterative
            solver, so every process gets the topological derivative of all the data.
            Every process must call this with the same arguments and at least one sample.
    """
    if not isinstance(model, StatefulModel):
        raise TypeError(
            f"expected a growable model with forward_states(), insertion_kind() and activation_curvature, "
            f"got {type(model).__name__}"
        )
    if solver not in SOLVERS:
        raise unknown_name_error("solver", solver, SOLVERS)
    if keep_blocks and solver == "iterative":
        raise ValueError("keep_blocks=True needs the blocks: use solver='blocks' or 'auto'")
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol!r}")
    loss_fn = resolve_loss(loss)
    device, _ = device_and_dtype(model)
    curvature = float(model.activation_curvature)
    expected_samples = _sample_count(data)

    blocks: list[torch.Tensor | None] = []
    caches: list[_Cache | None] = []
    total, loss_sum = 0, 0.0
    for batch in adjoint_batches(model, data, loss_fn, batch_size):
        states, adjoints = batch.states, batch.adjoints
        if not caches:  # first batch: choose each location's solver from its shapes
            samples = expected_samples or batch.size
            if reduce is not None and solver == "auto":  # the same choice in every process
                samples = int(reduce(torch.tensor(float(samples), dtype=torch.float64, device=device)).item())
            for location, (state, adjoint) in enumerate(zip(states, adjoints, strict=True)):
                kind = model.insertion_kind(location)
                n, m, positions = _block_shape(kind, state, adjoint)
                chosen = solver
                if solver == "auto":
                    chosen = choose_solver(n, m, positions, samples, keep_blocks=keep_blocks)
                caches.append(_Cache(kind, n, m, positions) if chosen == "iterative" else None)
                blocks.append(None)
        for location, (state, adjoint) in enumerate(zip(states, adjoints, strict=True)):
            cache = caches[location]
            if cache is not None:
                cache.add(state, adjoint)
                continue
            kind = model.insertion_kind(location)
            # Patches (unfolded convolutions) can be many times the state: a few samples at a time.
            step = max(1, PATCH_BUDGET // max(state[0].numel(), 1))
            block = sum(
                hamiltonian_blocks(
                    kind.patches(state[i : i + step]), kind.adjoint_rows(adjoint[i : i + step]), curvature
                ).double()
                for i in range(0, state.shape[0], step)
            )
            blocks[location] = block if blocks[location] is None else blocks[location] + block
        total += batch.size
        loss_sum += batch.loss * batch.size
    assert caches  # iter_batches raises on empty data
    if reduce is not None:
        counts = reduce(torch.tensor([float(total), loss_sum], dtype=torch.float64, device=device))
        total, loss_sum = round(counts[0].item()), counts[1].item()
    pairs: list[LeadingEigenpairs] = []
    for location, (block, cache) in enumerate(zip(blocks, caches, strict=True)):
        if cache is None:
            blocks[location] = (block if reduce is None else reduce(block)) / total
            pairs.append(leading_block_eigenpairs(blocks[location]))
        else:
            matvec = weighted_gram_matvec(cache.chunks if cache.unfold else cache.merged(), curvature / total)
            if reduce is not None:
                matvec = _reduced(matvec, reduce)
            pairs.append(iterative_block_eigenpairs(matvec, cache.n, cache.m, device=device, tol=tol, seed=location))
            caches[location] = None  # free the cached states now
    return TopologicalDerivative(
        block_eigenvalues=tuple(p.values for p in pairs),
        block_eigenvectors=tuple(p.vectors for p in pairs),
        loss=loss_sum / total,
        n_samples=total,
        blocks=tuple(blocks) if keep_blocks else None,
        solvers=tuple("blocks" if b is not None else "iterative" for b in blocks),
        products=tuple(p.products for p in pairs),
    )


def solver_costs(n: int, m: int, positions: int, samples: int) -> dict[str, float]:
    """Estimated cost (flop-equivalents) of each solver at one location.

    ``n`` blocks of size ``m`` (output channels and patch length + 1), ``positions``
    per sample (1 for a dense layer, pixels for a convolution, tokens), ``samples`` S.
    Blocks: accumulate ``2 S P n m^2`` plus diagonalise ``EIGH_COST n m^3``.
    Iterative: ``ITERATIVE_STEPS`` products of ``4 S P n m`` (at most ``m`` steps),
    in float64, plus a fixed overhead per step. Both are about linear in S, so the
    choice mostly depends on m: blocks up to width ~100, iterative beyond.
    """
    points = samples * positions
    steps = min(ITERATIVE_STEPS, m)
    return {
        "blocks": 2.0 * points * n * m * m + EIGH_COST * n * m**3,
        "iterative": steps * (FLOAT64_COST * 4.0 * points * n * m + STEP_OVERHEAD),
    }


def choose_solver(n: int, m: int, positions: int, samples: int, *, keep_blocks: bool = False) -> str:
    """``"blocks"`` or ``"iterative"``, whichever :func:`solver_costs` says is cheaper
    (always ``"blocks"`` when the blocks are to be kept)."""
    if keep_blocks:
        return "blocks"
    costs = solver_costs(n, m, positions, samples)
    return "iterative" if costs["iterative"] < costs["blocks"] else "blocks"


def _block_shape(kind, state: torch.Tensor, adjoint: torch.Tensor) -> tuple[int, int, int]:
    """``(n, m, positions)`` of the blocks of a location, from one sample."""
    patches = kind.patches(state[:1])
    rows = kind.adjoint_rows(adjoint[:1])
    return int(rows.shape[-1]), int(patches.shape[-1]), int(patches.shape[1])


def _reduced(matvec, reduce: Callable[[torch.Tensor], torch.Tensor]):
    """``matvec`` summed over processes by ``reduce``."""
    return lambda vectors, index: reduce(matvec(vectors, index))


def _sample_count(data: Data) -> int | None:
    """S if it can be known before iterating (a pair, or a DataLoader over a sized dataset)."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        return int(data[0].shape[0])
    dataset = getattr(data, "dataset", None)
    try:
        return len(dataset) if dataset is not None else None
    except TypeError:
        return None


class _Cache:
    """A location's data for the iterative solver: patches and adjoint rows in float64
    when they are about the size of the state (dense, token), else the states and
    adjoints themselves, unfolded again at every product (convolutions)."""

    def __init__(self, kind, n: int, m: int, positions: int) -> None:
        self.kind, self.n, self.m, self.positions = kind, n, m, positions
        self.pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.unfold = None

    def add(self, state: torch.Tensor, adjoint: torch.Tensor) -> None:
        if self.unfold is None:
            self.unfold = self.positions * self.m > 2 * state[0].numel()
        if self.unfold:
            self.pairs.append((state, adjoint))
        else:
            patches = self.kind.patches(state).reshape(-1, self.m).double()
            self.pairs.append((patches, self.kind.adjoint_rows(adjoint).reshape(-1, self.n).double()))

    def merged(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The kept patches and rows in pieces of at least ``MERGED_ROWS`` rows (fewer, larger
        products), dropping the mini-batch pieces as it goes."""
        merged, pending = [], []
        while self.pairs:
            pending.append(self.pairs.pop(0))
            if sum(p.shape[0] for p, _ in pending) >= MERGED_ROWS or not self.pairs:
                merged.append((torch.cat([p for p, _ in pending]), torch.cat([r for _, r in pending])))
                pending = []
        self.pairs = merged
        return merged

    def chunks(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if not self.unfold:
            yield from self.pairs
            return
        for state, adjoint in self.pairs:
            step = max(1, PATCH_BUDGET // max(self.positions * self.m, 1))
            for i in range(0, state.shape[0], step):
                yield self.kind.patches(state[i : i + step]), self.kind.adjoint_rows(adjoint[i : i + step])
