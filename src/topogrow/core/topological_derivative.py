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

One idea: the closed-form pass over every location and the :class:`TopologicalDerivative` it
returns, kept in one file because the private accumulators below (per location: blocks or the
iterative solver's cache, the sampled pass's monitor) fill exactly that result's layout, and the
choice between the solvers is part of the pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from topogrow._validation import unknown_name_error
from topogrow.core.adjoint import StatefulModel, adjoint_batches, check_stateful, device_and_dtype
from topogrow.core.batches import Data, sample_count
from topogrow.core.eigen import (
    LeadingEigenpairs,
    iterative_block_eigenpairs,
    leading_block_eigenpairs,
    leading_block_eigenvalues,
    select_leading,
    top_block_eigenpair,
    weighted_gram_matvec,
)
from topogrow.core.hamiltonian import hamiltonian_blocks, quadratic_form
from topogrow.core.losses import Loss, resolve_loss
from topogrow.core.sampling import (
    CHECK_GROWTH,
    RunningValues,
    Sampling,
    per_sample_values,
    sample_positions,
    settled,
    shuffled_batches,
)

PATCH_BUDGET = 1 << 22  # state numbers per chunk when forming patches (about 16 MB in float32)
SOLVERS = ("auto", "blocks", "iterative")
# Cost model of "auto", in flop-equivalents (calibrated on a 2-core Xeon, see topogrow/experiments/bench/):
EIGH_COST = 20.0  # a batched eigh of m x m blocks costs about this times m^3 per block
ITERATIVE_STEPS = 40  # Lanczos steps assumed (20 to 60 at tol 1e-6 on California and MNIST)
FLOAT64_COST = 2.0  # a float64 product against the float32 block accumulation
MERGED_ROWS = 1 << 14  # the iterative solver's products run over pieces of at least this many rows
SAMPLED_TOL = 1e-3  # the iterative solver's relative residual in a sampled pass (its statistical error is ~10 %)
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
        standard_errors: ``(L,)`` estimated standard errors of the leading eigenvalues when the
            pass sampled (:mod:`topogrow.core.sampling`), else ``None``.
        flops: the FLOPs the pass spent, when it counted them (the location-only pass of
            :func:`~topogrow.core.location.location_derivative`), else ``None``.
        forms: ``forms[l](rows)`` is ``phi^T Q_l phi`` from the samples a pass kept
            (:class:`~topogrow.core.location.SampleForm`), else ``None``.
    """

    block_eigenvalues: tuple[torch.Tensor, ...]
    block_eigenvectors: Sequence[torch.Tensor]
    loss: float
    n_samples: int
    blocks: tuple[torch.Tensor, ...] | None = None
    solvers: tuple[str, ...] = ()
    products: tuple[int, ...] = ()
    standard_errors: tuple[float, ...] | None = None
    flops: float | None = None
    forms: tuple[Callable[[torch.Tensor], float], ...] | None = None

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
        """``phi^T Q_l phi`` for a layer with parameters ``rows`` ``(n, m)`` (needs ``keep_blocks``,
        or the samples a location-only pass kept)."""
        self._check_location(location)
        if self.blocks is None and self.forms is not None:
            return self.forms[location](rows)
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
    sampling: Sampling | None = None,
    generator: torch.Generator | None = None,
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
        batch_size: mini-batch size when ``data`` is a pair (a sampled pass streams
            ``sampling.batch_size`` instead).
        keep_blocks: also return the blocks (memory ``n m^2`` per location; implies
            the blocks solver).
        solver: ``"auto"`` (the cheaper by :func:`solver_costs`, per location),
            ``"blocks"`` or ``"iterative"`` (see the module docstring). The iterative
            solver keeps the location's states and adjoints: memory grows with S.
        tol: relative residual at which the iterative solver stops (eigenvalue error
            about ``tol^2``, at most ``tol``, times the block's largest eigenvalue in magnitude).
        reduce: for data split over processes, a function that sums a float64 tensor over
            them (e.g. :func:`topogrow.training.distributed.all_reduce_sum`). It is applied
            to the sample count and loss sum, to each location's summed blocks before they
            are divided and diagonalised, and to each block product of the iterative
            solver, so every process gets the topological derivative of all the data.
            Every process must call this with the same arguments and at least one sample.
        sampling: read the samples in a random order and stop when the decision is settled
            (:class:`~topogrow.core.sampling.Sampling`: the location, its mu and its direction
            known to a relative error, within a floor and a cap of samples; convolution and
            token positions drawn too); ``None`` reads every sample and position. The result's
            ``n_samples`` and ``standard_errors`` say what the pass read and how well it knows mu.
        generator: draws the sample order and positions under ``sampling``.
    """
    check_stateful(model)
    if solver not in SOLVERS:
        raise unknown_name_error("solver", solver, SOLVERS)
    if keep_blocks and solver == "iterative":
        raise ValueError("keep_blocks=True needs the blocks: use solver='blocks' or 'auto'")
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol!r}")
    if sampling is not None and reduce is not None:
        raise ValueError("sampling stops one process's pass on its own: use sampling=None with reduce")
    loss_fn = resolve_loss(loss)
    device, _ = device_and_dtype(model)
    expected_samples = sample_count(data)
    positions = None if sampling is None else sampling.positions
    monitor = None if sampling is None else _Monitor(sampling)
    stream = data if sampling is None else shuffled_batches(data, sampling.batch_size, generator)

    locations: list[_Location] = []
    total, loss_sum = 0, 0.0
    for batch in adjoint_batches(model, stream, loss_fn, batch_size):
        states, adjoints = batch.states, batch.adjoints
        if not locations:  # first batch: choose each location's solver from its shapes
            samples = expected_samples or batch.size
            if sampling is not None:  # the samples the pass expects to read
                samples = min(samples, sampling.max_samples or samples, 4 * sampling.min_samples)
            if reduce is not None and solver == "auto":  # the same choice in every process
                samples = int(reduce(torch.tensor(float(samples), dtype=torch.float64, device=device)).item())
            locations = [
                _Location.open(model, location, state, adjoint, solver, samples, positions, keep_blocks, sampling)
                for location, (state, adjoint) in enumerate(zip(states, adjoints, strict=True))
            ]
        values = [
            place.add(state, adjoint, positions, generator, None if monitor is None else monitor.probe(location))
            for location, (place, state, adjoint) in enumerate(zip(locations, states, adjoints, strict=True))
        ]
        if monitor is not None:
            monitor.record(values)
        total += batch.size
        loss_sum += batch.loss * batch.size
        if monitor is not None and monitor.due(total) and monitor.check(locations, total, device, tol):
            break
    assert locations  # iter_batches raises on empty data
    if reduce is not None:
        counts = reduce(torch.tensor([float(total), loss_sum], dtype=torch.float64, device=device))
        total, loss_sum = round(counts[0].item()), counts[1].item()
    if monitor is None:
        pairs = [place.eigenpairs(total, device, tol, reduce, seed=i) for i, place in enumerate(locations)]
        values, vectors = tuple(p.values for p in pairs), tuple(p.vectors for p in pairs)
        products = tuple(p.products for p in pairs)
    else:  # the eigenvalues everywhere, the eigenvectors of a location when it is asked for
        solved = [place.sampled_eigenpairs(total, device, tol, seed=i) for i, place in enumerate(locations)]
        values, vectors = tuple(v for v, _, _ in solved), LazyVectors([f for _, f, _ in solved])
        products = tuple(p for _, _, p in solved)
    blocks = [place.mean_blocks for place in locations]
    return TopologicalDerivative(
        block_eigenvalues=values,
        block_eigenvectors=vectors,
        loss=loss_sum / total,
        n_samples=total,
        blocks=tuple(blocks) if keep_blocks else None,
        solvers=tuple("iterative" if place.iterative else "blocks" for place in locations),
        products=products,
        standard_errors=None if monitor is None else monitor.standard_errors(total),
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


class LazyVectors(Sequence):
    """``vectors[l]``: a location's eigenvectors ``(n, m)``, computed on first access (by a function
    given for it) and kept; a sampled pass needs the eigenvectors of the chosen location only."""

    def __init__(self, entries: list[torch.Tensor | Callable[[], torch.Tensor]]) -> None:
        self._entries = list(entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, location):
        if isinstance(location, slice):
            return [self[i] for i in range(len(self))[location]]
        entry = self._entries[location]
        if callable(entry):
            entry = self._entries[location] = entry()
        return entry


class _Location:
    """One location's pass: the summed blocks, or the samples the iterative solver keeps."""

    def __init__(self, kind, n: int, m: int, positions: int, curvature: float, iterative: bool, sampled: bool) -> None:
        self.kind, self.n, self.m, self.positions, self.curvature = kind, n, m, positions, curvature
        self.iterative, self.sampled = iterative, sampled
        self.cache = _Cache(kind, n, m, positions) if iterative else None
        self.sum: torch.Tensor | None = None
        self.mean_blocks: torch.Tensor | None = None
        self.checked: tuple[int, torch.Tensor, LeadingEigenpairs | None] | None = None  # the last check's

    @classmethod
    def open(cls, model, location, state, adjoint, solver, samples, positions, keep_blocks, sampling) -> _Location:
        """Location ``location`` of ``model``, its solver chosen from the first batch's shapes."""
        kind = model.insertion_kind(location)
        n, m, all_positions = _block_shape(kind, state, adjoint)
        if solver == "auto":
            used = all_positions if positions is None else min(all_positions, positions)
            solver = choose_solver(n, m, used, samples, keep_blocks=keep_blocks)
        curvature = float(model.activation_curvature)
        return cls(kind, n, m, all_positions, curvature, solver == "iterative", sampling is not None)

    def add(self, state, adjoint, positions: int | None, generator, probe: _Probe | None) -> torch.Tensor | None:
        """Add a mini-batch ``(B, ...)``. A sampled pass draws ``positions`` positions per sample
        (:func:`~topogrow.core.sampling.sample_positions`); with a ``probe``, returns each
        sample's contribution ``q_s`` ``(B,)`` to the probe's quadratic form."""
        # Patches (unfolded convolutions) can be many times the state: a few samples at a time.
        step = max(1, PATCH_BUDGET // max(state[0].numel(), 1))
        if not self.sampled:
            if self.cache is not None:
                self.cache.add(state, adjoint)
                return None
            kind = self.kind
            block = sum(
                hamiltonian_blocks(
                    kind.patches(state[i : i + step]), kind.adjoint_rows(adjoint[i : i + step]), self.curvature
                ).double()
                for i in range(0, state.shape[0], step)
            )
            self.sum = block if self.sum is None else self.sum + block
            return None
        values = []
        for i in range(0, state.shape[0], step):
            patches, rows = sample_positions(
                self.kind, state[i : i + step], adjoint[i : i + step], positions, generator
            )
            if probe is not None:
                values.append(per_sample_values(patches, rows, probe.channel, probe.direction, self.curvature))
            if self.cache is not None:
                self.cache.unfold = False
                self.cache.pairs.append((patches.reshape(-1, self.m).double(), rows.reshape(-1, self.n).double()))
                continue
            block = hamiltonian_blocks(patches, rows, self.curvature).double()
            self.sum = block if self.sum is None else self.sum + block
        return torch.cat(values) if values else None

    def top(self, total: int, device, tol: float, seed: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        """``(values (n,), c, v (m,))``: the blocks' leading eigenvalues over ``total`` samples,
        the block with the largest and its eigenvector (a check: eigenvalues alone where they are cheaper)."""
        if self.cache is None:
            values, channel, vector = top_block_eigenpair(self.sum / total)
            self.checked = (total, values, None)
            return values, channel, vector
        # the statistical error of a sampled pass is far above SAMPLED_TOL; the last check's
        # eigenvectors start the Lanczos iteration
        start = self.checked[2].vectors if self.checked is not None else None
        pairs = self.eigenpairs(total, device, max(tol, SAMPLED_TOL), None, seed, release=False, start=start)
        self.checked = (total, pairs.values, pairs)
        channel = int(pairs.values.argmax())
        return pairs.values, channel, pairs.vectors[channel]

    def sampled_eigenpairs(self, total: int, device, tol: float, seed: int):
        """``(values (n,), vectors, products)`` at the end of a sampled pass: the last check's when it
        saw the same samples; the blocks' eigenvectors as a function computing them when asked for."""
        checked = self.checked if self.checked is not None and self.checked[0] == total else None
        if self.cache is not None:
            start = self.checked[2].vectors if self.checked is not None else None
            pairs = checked[2] if checked is not None else self.eigenpairs(total, device, tol, None, seed, start=start)
            self.cache = None
            return pairs.values, pairs.vectors, pairs.products
        self.mean_blocks = mean = self.sum / total
        values = checked[1] if checked is not None else leading_block_eigenvalues(mean)
        return values, lambda: leading_block_eigenpairs(mean).vectors, 0

    def eigenpairs(
        self, total: int, device, tol: float, reduce, seed: int, release: bool = True, start=None
    ) -> LeadingEigenpairs:
        """Leading eigenpairs of the mean blocks over ``total`` samples; ``release`` frees the
        iterative solver's samples afterwards, ``start`` starts its iteration."""
        if self.cache is None:
            self.mean_blocks = (self.sum if reduce is None else reduce(self.sum)) / total
            return leading_block_eigenpairs(self.mean_blocks)
        cache = self.cache
        matvec = weighted_gram_matvec(cache.chunks if cache.unfold else cache.merged(), self.curvature / total)
        if reduce is not None:
            matvec = _reduced(matvec, reduce)
        pairs = iterative_block_eigenpairs(matvec, self.n, self.m, device=device, tol=tol, seed=seed, start=start)
        if release:
            self.cache = None
        return pairs


@dataclass(frozen=True)
class _Probe:
    """A location's top block and its direction at the last check."""

    channel: int
    direction: torch.Tensor


class _Monitor:
    """The checks of a pass under a :class:`~topogrow.core.sampling.Sampling` rule."""

    def __init__(self, rule: Sampling) -> None:
        self.rule = rule
        self.next_check = 1  # the first mini-batch gives the first directions
        self.probes: dict[int, _Probe] = {}
        self.values = RunningValues()  # the per-sample q_s of every location since the last check
        self.covariance: torch.Tensor | None = None

    def probe(self, location: int) -> _Probe | None:
        return self.probes.get(location)

    def record(self, values: list[torch.Tensor | None]) -> None:
        if self.probes:
            self.values.add(torch.stack(values, dim=1))

    def due(self, total: int) -> bool:
        cap = self.rule.max_samples
        return total >= self.next_check or (cap is not None and total >= cap)

    def check(self, locations: list[_Location], total: int, device, tol: float) -> bool:
        """The leading eigenvalues and top directions on the samples so far; ``True`` when the pass may stop."""
        tops = [place.top(total, device, tol, seed=i) for i, place in enumerate(locations)]
        eigenvalues = torch.stack([values.max().double().cpu() for values, _, _ in tops])
        if self.values.count > 1:
            self.covariance = self.values.covariance()
        fresh = self.values
        best = int(torch.argmax(eigenvalues))
        _, channel, vector = tops[best]
        old = self.probes.get(best)
        cosine = abs(float(old.direction.double() @ vector.double())) if old and old.channel == channel else 0.0
        rule = self.rule
        done = total >= rule.min_samples and settled(eigenvalues, fresh, cosine, rule)
        done = done or (rule.max_samples is not None and total >= rule.max_samples)
        self.probes = {location: _Probe(c, v.clone()) for location, (_, c, v) in enumerate(tops)}
        self.values = RunningValues()
        self.next_check = max(total + 1, rule.min_samples, math.ceil(total * CHECK_GROWTH))
        return done

    def standard_errors(self, total: int) -> tuple[float, ...] | None:
        """``(L,)`` standard errors of the leading eigenvalues after ``total`` samples."""
        covariance = self.values.covariance() if self.values.count > 1 else self.covariance
        if covariance is None:
            return None
        return tuple(float(e) for e in torch.sqrt(covariance.diagonal().clamp_min(0.0) / total))


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
