"""How many samples a topological-derivative pass reads: stop when the decision is settled.

The blocks are means over samples, ``B_c = (1/S) sum_s q_s``, so their leading eigenvalues
are sample means too. For the leading eigenvector ``v`` of location l's top block ``c``,
first-order perturbation theory gives the error of ``mu_l`` as ``v^T (B_hat - B) v``: the
mean of the per-sample values ``q_s = sigma''(0) sum_pos p_c (v . u)^2`` minus its
expectation. Its standard error is the standard deviation of ``q_s`` over ``sqrt(S)``.

A pass under a :class:`Sampling` rule streams the samples in a random order and, each time
the count has grown by :data:`CHECK_GROWTH`, solves the eigenproblems of the samples so far.
The per-sample values ``q_s`` of the samples read since the previous check (with that check's
``v`` and ``c``, at every location) are fresh, unbiased estimates of each location's quadratic
form, paired between locations. The pass stops at the first check, after ``min_samples``,
where (:func:`settled`):

- the fresh estimates and the eigenvalues pick the same location, and no other location's
  fresh estimate exceeds it by more than ``rel_error`` times it (``z`` paired standard errors
  of the difference),
- the best location's direction moved by less than ``rel_error`` since the previous check
  (``|cos| >= 1 - rel_error``),

or when it reaches ``max_samples`` (or the end of the data). The standard errors of each
``mu_l`` are returned with the result. For convolutions and tokens,
``positions`` positions per sample are drawn at random (an unbiased estimate of the sum over
all positions, scaled by ``P / positions``), and only their patches are formed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from topogrow._validation import check_int, check_optional_int, check_real
from topogrow.core.batches import Data, iter_batches

CHECK_GROWTH = 2.0  # the samples read grow by this factor between checks


@dataclass(frozen=True)
class Sampling:
    """When a topological-derivative pass may stop reading samples.

    Attributes:
        rel_error: the relative accuracy the decision needs (see the module docstring).
        min_samples: never stop before this many samples (the floor).
        max_samples: never read more than this many (``None``: all of them).
        positions: positions drawn per sample for convolutions and tokens (``None``: all).
        batch_size: samples per streamed mini-batch (checks fall between mini-batches).
        z: standard errors of the confidence bounds (2: about 95 %).
    """

    rel_error: float = 0.1
    min_samples: int = 1024
    max_samples: int | None = None
    positions: int | None = 16
    batch_size: int = 256
    z: float = 2.0

    def __post_init__(self) -> None:
        check_real("rel_error", self.rel_error, positive=True)
        check_int("min_samples", self.min_samples, minimum=1)
        check_optional_int("max_samples", self.max_samples, minimum=1)
        check_optional_int("positions", self.positions, minimum=1)
        check_int("batch_size", self.batch_size, minimum=1)
        check_real("z", self.z, positive=True)


def shuffled_batches(
    data: Data, batch_size: int, generator: torch.Generator | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Mini-batches of ``data`` in a random order: an ``(X, y)`` pair is permuted by
    ``generator`` (without copying it), a DataLoader is read as it comes (shuffle it yourself)."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        x, y = data
        order = torch.randperm(x.shape[0], generator=generator).to(x.device)
        for start in range(0, x.shape[0], batch_size):
            index = order[start : start + batch_size]
            yield x.index_select(0, index), y.index_select(0, index.to(y.device))
        return
    yield from iter_batches(data, batch_size)


def sample_positions(
    kind, state: torch.Tensor, adjoint: torch.Tensor, positions: int | None, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The patches ``(B, k, m)`` and adjoint rows ``(B, k, n)`` of a layer kind at ``positions`` of
    the ``P`` positions of every sample, drawn uniformly (with replacement), the rows scaled by
    ``P / k`` so that sums over positions stay unbiased; all positions when ``positions`` is
    ``None`` or ``>= P``. A kind with ``patches_at`` forms the drawn patches only."""
    rows = kind.adjoint_rows(adjoint)
    b, p, n = rows.shape
    if positions is None or positions >= p:
        return kind.patches(state), rows
    index = torch.randint(p, (b, positions), generator=generator).to(rows.device)
    weights = rows.gather(1, index[:, :, None].expand(-1, -1, n)) * (p / positions)
    if callable(getattr(kind, "patches_at", None)):
        return kind.patches_at(state, index), weights
    patches = kind.patches(state)
    return patches.gather(1, index[:, :, None].expand(-1, -1, patches.shape[-1])), weights


def per_sample_values(
    patches: torch.Tensor, rows: torch.Tensor, channel: int, direction: torch.Tensor, curvature: float
) -> torch.Tensor:
    """``(B,)``: ``q_s = curvature * sum_pos rows[s, pos, channel] (direction . u_{s, pos})^2``,
    the contribution of each sample to ``v^T B_channel v`` (patches ``(B, P, m)``, rows ``(B, P, n)``)."""
    projections = patches.double() @ direction.to(device=patches.device, dtype=torch.float64)  # (B, P)
    return curvature * (rows[..., channel].double() * projections.square()).sum(dim=1)


class RunningValues:
    """Running mean ``(L,)`` and co-moment ``(L, L)`` of per-sample values of L locations
    (Welford's update, merged one mini-batch at a time)."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: torch.Tensor | None = None
        self.comoment: torch.Tensor | None = None

    def add(self, values: torch.Tensor) -> None:
        """``values`` ``(B, L)``: one row per sample."""
        values = values.detach().double().cpu()
        k = values.shape[0]
        if k == 0:
            return
        batch_mean = values.mean(dim=0)
        centred = values - batch_mean
        batch_comoment = centred.T @ centred
        if self.mean is None:
            self.count, self.mean, self.comoment = k, batch_mean, batch_comoment
            return
        total = self.count + k
        delta = batch_mean - self.mean
        self.comoment = self.comoment + batch_comoment + torch.outer(delta, delta) * (self.count * k / total)
        self.mean = self.mean + delta * (k / total)
        self.count = total

    def covariance(self) -> torch.Tensor | None:
        """The sample covariance ``(L, L)`` (``None`` with fewer than two samples)."""
        if self.count < 2 or self.comoment is None:
            return None
        return self.comoment / (self.count - 1)


def settled(eigenvalues: torch.Tensor, fresh: RunningValues, cosine: float, rule: Sampling) -> bool:
    """Whether the location and its direction are known well enough (module docstring).

    ``eigenvalues`` ``(L,)`` are the leading eigenvalues of the samples read so far; ``fresh``
    holds the per-sample values ``q_s`` ``(L,)`` of the samples read since the previous check,
    with that check's directions: unbiased estimates of their quadratic forms (the eigenvalues,
    maxima over noisy blocks, are biased upwards when few samples are read), paired between
    locations. ``cosine`` is ``|cos|`` between the best location's direction now and at the
    previous check. Settled when both estimates pick the same location, no other location's
    quadratic form exceeds it by more than ``rel_error`` times it (``z`` paired standard errors),
    and the direction moved by less than ``rel_error``.
    """
    covariance = fresh.covariance()
    if covariance is None or cosine < 1.0 - rule.rel_error:
        return False
    means = fresh.mean
    best = int(torch.argmax(means))
    if best != int(torch.argmax(eigenvalues)):
        return False
    variances = covariance.diagonal() + covariance[best, best] - 2.0 * covariance[best]
    margins = means - means[best] + rule.z * torch.sqrt(variances.clamp_min(0.0) / fresh.count)
    margins[best] = -math.inf
    return bool((margins <= rule.rel_error * abs(float(means[best]))).all())
