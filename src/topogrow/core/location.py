"""Where to insert, within a budget: the leading eigenvalue of every block from a few products.

A strategy that takes only the *location* from the topological derivative (``small-where``,
``td-where``) needs ``mu_l = max_c lambda_max(B_c)`` at every location l, not the eigenvectors
and not the spectra. Forming the blocks costs ``2 S P n m^2`` per location, many epochs of a
narrow network on small data. Here every block is only ever multiplied by a vector, all ``n``
blocks of a location at once (:func:`~topogrow.core.eigen.weighted_gram_matvec`, two matrix
products, ``4 S P n m`` flops)::

    B_c v = sigma''(0) / S * sum_{s, pos} p_{s, c} (u . v) u

and a Lanczos iteration of :data:`LOCATION_STEPS` steps runs on all blocks from the start

    v_c = sum_{s, pos} max(p_{s, c}, 0) u        (``2 S P n m`` flops)

the centroid of the patches that block c would reward (``v_c^T B_c v_c > 0`` where the block
has positive curvature along it). The top Ritz value of each block is a lower bound of its leading
eigenvalue that reaches it in a few steps on the paper's networks (measured against ``eigh`` of the
dense blocks: ``tests/core/test_location.py``, ``topogrow bench --sections location_cost``).

The pass reads the samples in a random order and stops at a number of samples that keeps its
FLOPs within ``budget`` epochs of the network (an epoch being :data:`EPOCH_FORWARDS` forward
passes per training sample); its :attr:`~topogrow.core.topological_derivative.TopologicalDerivative.flops`
say what it spent: the forward and backward passes (measured by ``torch.utils.flop_counter`` on one
sample) and the products.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.flop_counter import FlopCounterMode

from topogrow._validation import check_int, check_optional_int, check_real
from topogrow.core.adjoint import StatefulModel, adjoint_batches, check_stateful, device_and_dtype, states_and_adjoints
from topogrow.core.batches import Data, sample_count
from topogrow.core.eigen import LeadingEigenpairs, lanczos_block_eigenpairs, weighted_gram_matvec
from topogrow.core.losses import Loss, resolve_loss
from topogrow.core.sampling import sample_positions, shuffled_batches
from topogrow.core.topological_derivative import TopologicalDerivative

__all__ = [
    "EPOCH_FORWARDS",
    "LOCATION_STEPS",
    "MIN_SAMPLES",
    "SampleForm",
    "block_eigenvalue_estimates",
    "location_derivative",
    "location_flops",
    "positive_start",
]

#: Lanczos steps per block (block products): 2 keeps the location of the dense blocks' ``eigh``
#: on the paper's networks, each step costing about two forward passes of one residual layer.
LOCATION_STEPS = 2
#: An epoch of training is this many forward passes per sample (forward and backward), as
#: :class:`~topogrow.growth.compute.ComputeCounter` counts it.
EPOCH_FORWARDS = 3
#: The fewest samples a budgeted pass reads (all of them on smaller data).
MIN_SAMPLES = 32


def positive_start(patches: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``(n, m)``: the start of block c, ``sum_i max(rows[i, c], 0) patches[i]``, for patches ``(N, m)``
    and adjoint rows ``(N, n)``."""
    return rows.clamp_min(0).T @ patches


def location_flops(n: int, m: int, points: int, products: int) -> float:
    """FLOPs of the estimates at one location: the start ``2 N n m`` and ``products`` block products
    of ``4 N n m`` (``N = points``, samples times positions; the Lanczos recurrences are ``O(n m)``
    per step, nothing against these)."""
    return (2.0 + 4.0 * products) * points * n * m


def block_eigenvalue_estimates(
    patches: torch.Tensor,
    rows: torch.Tensor,
    curvature: float,
    steps: int = LOCATION_STEPS,
    generator: torch.Generator | None = None,
) -> LeadingEigenpairs:
    """The leading eigenvalue of every block ``B_c = curvature * sum_i rows[i, c] u_i u_i^T`` by
    ``steps`` Lanczos steps from :func:`positive_start`, without forming a block.

    Args:
        patches: ``(N, m)`` augmented patches ``u_i``.
        rows: ``(N, n)`` adjoint rows, one column per block.
        curvature: the blocks' factor (``sigma''(0) / S`` for the mean over S samples).
        steps: block products (at most m: then the values are exact).
        generator: draws the start of a block whose rows are nowhere positive.

    Returns:
        :class:`~topogrow.core.eigen.LeadingEigenpairs`: ``values`` ``(n,)``, the top Ritz values
        (lower bounds of the leading eigenvalues), ``vectors`` ``(n, m)`` their unit Ritz vectors,
        ``products`` the block products taken.
    """
    check_int("steps", steps, minimum=1)
    if patches.ndim != 2 or rows.ndim != 2 or patches.shape[0] != rows.shape[0]:
        raise ValueError(
            f"expected patches (N, m) and rows (N, n) with the same N, got {tuple(patches.shape)} and "
            f"{tuple(rows.shape)}"
        )
    start = positive_start(patches, rows)
    empty = start.norm(dim=1) == 0
    if empty.any():  # no sample with a positive adjoint: any start will do
        drawn = torch.randn(int(empty.sum()), start.shape[1], generator=generator, dtype=start.dtype)
        start[empty] = drawn.to(start.device)
    matvec = weighted_gram_matvec([(patches, rows)], curvature, dtype=patches.dtype)
    return lanczos_block_eigenpairs(matvec, start, steps)


class SampleForm:
    """``phi^T Q phi`` of one location from the samples a pass kept, for rows ``phi`` ``(n, m)``:
    ``curvature * sum_i sum_c rows[i, c] (phi_c . u_i)^2`` (one product, no block)."""

    def __init__(self, patches: torch.Tensor, rows: torch.Tensor, curvature: float) -> None:
        self.patches, self.rows, self.curvature = patches, rows, curvature

    def __call__(self, phi: torch.Tensor) -> float:
        projections = self.patches @ phi.to(self.patches).T  # (N, n)
        return float(self.curvature * (self.rows * projections.square()).sum())


def _one_sample(
    model: StatefulModel, x: torch.Tensor, y: torch.Tensor, loss: Loss, positions: int | None
) -> tuple[float, float, list[tuple[int, int, int]]]:
    """``(forward, adjoint pass, shapes)`` from one sample ``x`` ``(1, ...)``: the FLOPs of the model's
    forward pass and of the forward and backward pass that gives the states and adjoints, and
    ``(n, m, points per sample)`` at every location (in eval mode, as the pass runs)."""
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
        forward = float(counter.get_total_flops())
        with FlopCounterMode(display=False) as counter:
            _, states, adjoints = states_and_adjoints(model, x, y, loss)
        adjoint_pass = float(counter.get_total_flops())
    finally:
        model.train(was_training)
    shapes = []
    for location, (state, adjoint) in enumerate(zip(states, adjoints, strict=True)):
        kind = model.insertion_kind(location)
        patches, rows = kind.patches(state), kind.adjoint_rows(adjoint)
        points = patches.shape[1] if positions is None else min(patches.shape[1], positions)
        shapes.append((int(rows.shape[-1]), int(patches.shape[-1]), int(points)))
    return forward, adjoint_pass, shapes


def _cut(stream: Iterator, samples: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The batches of ``stream`` up to ``samples`` samples (the last one cut)."""
    total = 0
    for x, y in stream:
        if total >= samples:
            return
        keep = min(x.shape[0], samples - total)
        total += keep
        yield x[:keep], y[:keep]


def location_derivative(
    model: StatefulModel,
    data: Data,
    loss: str | Loss = "mse",
    *,
    budget: float | None = None,
    max_samples: int | None = None,
    steps: int = LOCATION_STEPS,
    positions: int | None = None,
    batch_size: int = 256,
    generator: torch.Generator | None = None,
    keep_samples: bool = False,
) -> TopologicalDerivative:
    """The leading eigenvalue of every block at every location from ``steps`` block products
    (module docstring), on a random subset of ``data`` sized by ``budget``.

    Args:
        model: a growable model (:class:`~topogrow.core.adjoint.StatefulModel`).
        data: an ``(X, y)`` pair (read in a random order) or a DataLoader (read as it comes).
        loss: ``"mse"``, ``"cross_entropy"`` or a callable returning the batch mean.
        budget: FLOPs the pass may spend, in epochs of ``model`` on ``data``
            (``EPOCH_FORWARDS * forward * S``); it reads as many samples as fit, at least
            ``MIN_SAMPLES`` (or all). ``None``: no budget.
        max_samples: read at most this many samples (``None``: all that fit the budget).
        steps: Lanczos steps (block products) per block.
        positions: positions drawn per sample for convolutions and tokens (``None``: all).
        batch_size: samples per streamed mini-batch.
        generator: draws the sample order, the positions and empty starts.
        keep_samples: keep each location's patches and rows, so that the result's
            ``quadratic_form`` works (memory ``N (n + m)`` per location).

    Returns:
        a :class:`~topogrow.core.topological_derivative.TopologicalDerivative` whose
        ``block_eigenvalues`` are the estimates ``(n_l,)``, ``block_eigenvectors`` the Ritz vectors
        ``(n_l, m_l)`` (approximate: for the location, not for the paper's eigenvector layer),
        ``solvers`` ``"lanczos"``, ``products`` the products per location, ``standard_errors``
        those of each ``mu_l`` over the samples read, and ``flops`` the FLOPs it spent.
    """
    check_stateful(model)
    if budget is not None:
        check_real("budget", budget, positive=True)
    check_optional_int("max_samples", max_samples, minimum=1)
    check_int("steps", steps, minimum=1)
    check_optional_int("positions", positions, minimum=1)
    check_int("batch_size", batch_size, minimum=1)
    loss_fn = resolve_loss(loss)
    device, dtype = device_and_dtype(model)
    available = sample_count(data)
    stream = shuffled_batches(data, batch_size, generator)
    first = next(stream, None)
    if first is None:
        raise ValueError("the data is empty: the topological derivative needs at least one sample")
    x1 = first[0][:1].to(device=device, dtype=dtype)
    y1 = first[1][:1].to(device=device, dtype=dtype if first[1].is_floating_point() else first[1].dtype)
    forward, adjoint_pass, shapes = _one_sample(model, x1, y1, loss_fn, positions)
    per_sample = adjoint_pass + sum(location_flops(n, m, points, steps) for n, m, points in shapes)
    samples = available or math.inf
    if max_samples is not None:
        samples = min(samples, max_samples)
    if budget is not None and available:
        affordable = math.floor(budget * EPOCH_FORWARDS * forward * available / per_sample)
        samples = min(samples, max(affordable, min(MIN_SAMPLES, available)))

    def batches():
        yield first
        yield from stream

    pieces: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in shapes]
    total, loss_sum, curvature = 0, 0.0, float(model.activation_curvature)
    chosen = batches() if samples == math.inf else _cut(batches(), int(samples))
    for batch in adjoint_batches(model, chosen, loss_fn, batch_size):
        for location, (state, adjoint) in enumerate(zip(batch.states, batch.adjoints, strict=True)):
            patches, rows = sample_positions(model.insertion_kind(location), state, adjoint, positions, generator)
            pieces[location].append((patches.double(), rows.double()))
        total += batch.size
        loss_sum += batch.loss * batch.size
    values, vectors, products, errors, forms = [], [], [], [], []
    flops = adjoint_pass * total
    for location, kept in enumerate(pieces):
        patches = torch.cat([p for p, _ in kept])  # (N, k, m)
        rows = torch.cat([r for _, r in kept])  # (N, k, n)
        flat_patches, flat_rows = patches.reshape(-1, patches.shape[-1]), rows.reshape(-1, rows.shape[-1])
        pieces[location] = []
        pairs = block_eigenvalue_estimates(flat_patches, flat_rows, curvature / total, steps, generator)
        n, m = flat_rows.shape[1], flat_patches.shape[1]
        flops += location_flops(n, m, flat_patches.shape[0], pairs.products)
        values.append(pairs.values)
        vectors.append(pairs.vectors)
        products.append(pairs.products)
        errors.append(_standard_error(patches, rows, pairs, curvature))
        flops += 2.0 * flat_patches.shape[0] * m
        if keep_samples:
            forms.append(SampleForm(flat_patches, flat_rows, curvature / total))
    return TopologicalDerivative(
        block_eigenvalues=tuple(values),
        block_eigenvectors=tuple(vectors),
        loss=loss_sum / total,
        n_samples=total,
        solvers=("lanczos",) * len(values),
        products=tuple(products),
        standard_errors=tuple(errors),
        flops=flops,
        forms=tuple(forms) if keep_samples else None,
    )


def _standard_error(patches: torch.Tensor, rows: torch.Tensor, pairs: LeadingEigenpairs, curvature: float) -> float:
    """The standard error of ``mu_l`` over the samples: that of the per-sample values
    ``q_s = curvature * sum_pos rows[s, pos, c] (v . u_{s, pos})^2`` of the top block c and its Ritz
    vector v (patches ``(N, k, m)``, rows ``(N, k, n)``)."""
    channel = int(pairs.values.argmax())
    values = curvature * (rows[..., channel] * (patches @ pairs.vectors[channel]).square()).sum(dim=1)
    if values.shape[0] < 2:
        return math.nan
    return float(values.std() / math.sqrt(values.shape[0]))
