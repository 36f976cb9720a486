"""Choose epsilon for an insertion by a line search that never raises the loss.

Two searches (``GrowthConfig.line_search``): :func:`line_search` (``"grid"``) evaluates every
candidate epsilon, both signs, on the whole line-search set; :func:`model_line_search`
(``"model"``) brackets epsilon from the quadratic model ``-eps slope - eps^2 mu / 2`` and a
few evaluations on a small probe subset, then confirms it on the whole set.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

DEFAULT_EPSILONS: tuple[float, ...] = tuple(float(10 ** (-3 + 0.25 * i)) for i in range(17))  # 1e-3 .. 10

#: The line searches ``GrowthConfig.line_search`` names.
LINE_SEARCHES: tuple[str, ...] = ("model", "grid")

#: Samples of the probe subset the model search brackets epsilon on (the first ones of the line-search set).
PROBE_SAMPLES = 1024

#: A proposal inserted at its own epsilon (``small-where``, ``td-where``...) is evaluated only to record
#: the change of the loss: on this fraction of the line-search set (at most ``PROBE_SAMPLES``), so that
#: with a location-only pass of 0.75 epoch the decision stays within one epoch (two evaluations: 1/12).
RECORD_FRACTION = 1 / 8


def record_samples(samples: int) -> int:
    """The samples of a line-search set of ``samples`` on which an insertion at a given epsilon measures
    its change: ``ceil(samples * RECORD_FRACTION)``, at least 1 and at most ``PROBE_SAMPLES``."""
    return max(1, min(PROBE_SAMPLES, math.ceil(samples * RECORD_FRACTION)))


#: The model search starts where the quadratic model predicts this fraction of the loss as decrease
#: (0.02: the median, over the 458 insertions with a curvature in results/*/compare.json, of the decrease
#: the quadratic model predicts at the grid's epsilon, relative to the training loss).
START_FRACTION = 0.02

#: The model search's walk: a step is this factor on epsilon; at most ``WALK_STEPS`` steps per sign.
STEP = math.sqrt(10.0)
WALK_STEPS = 5

#: Successive cubic fits through the three bracketing points (one evaluation each).
REFINEMENTS = 2

#: Confirmations on the whole set after the first: epsilon / STEP, then / STEP again.
RETRIES = 2


@dataclass(frozen=True)
class LineSearchResult:
    """The chosen epsilon (0 if nothing lowered the loss) and the losses seen.

    ``loss_before``, ``loss_after`` and ``trials`` (``(epsilon, loss)``, in the order evaluated) are
    on the whole line-search set; ``probe_trials`` on the model search's probe subset (empty for the
    grid). ``samples`` and ``probe_samples`` are the samples one evaluation of each covers (over all
    processes; 0: not known), so that the search forwarded :attr:`evaluated_samples` samples.
    """

    epsilon: float
    loss_before: float
    loss_after: float
    trials: tuple[tuple[float, float], ...]
    probe_trials: tuple[tuple[float, float], ...] = ()
    samples: int = 0
    probe_samples: int = 0

    @property
    def change(self) -> float:
        """``loss_after - loss_before``: negative when the insertion lowered the loss."""
        return self.loss_after - self.loss_before

    @property
    def evaluated_samples(self) -> int:
        """``samples * (1 + len(trials)) + probe_samples * len(probe_trials)``: the samples the search
        forwarded, the evaluation of the loss before included."""
        return self.samples * (1 + len(self.trials)) + self.probe_samples * len(self.probe_trials)


def _lower(loss: float, than: float) -> bool:
    """Whether ``loss`` is finite and strictly below ``than`` (NaN and inf never are)."""
    return math.isfinite(loss) and loss < than


def line_search(
    evaluate: Callable[[float], float],
    loss_before: float,
    epsilons: Sequence[float] = DEFAULT_EPSILONS,
    both_signs: bool = True,
) -> LineSearchResult:
    """Evaluate the training loss at each candidate epsilon and keep the lowest.

    ``evaluate(eps)`` returns the training loss with the new layer scaled by ``eps``.
    Both signs are tried (the quadratic model is even in epsilon, the true loss is
    not). If no candidate is strictly below ``loss_before`` the result is
    epsilon = 0 with ``loss_after = loss_before``: the insertion is the identity.
    """
    if not epsilons:
        raise ValueError("line search needs at least one candidate epsilon")
    candidates = [e for eps in epsilons for e in ((eps, -eps) if both_signs else (eps,))]
    trials = tuple((eps, float(evaluate(eps))) for eps in candidates)
    finite = [t for t in trials if t[1] == t[1] and abs(t[1]) != float("inf")]
    best = min(finite, key=lambda t: t[1], default=None)
    if best is None or best[1] >= loss_before:
        return LineSearchResult(0.0, loss_before, loss_before, trials)
    return LineSearchResult(best[0], loss_before, best[1], trials)


def start_epsilon(
    loss_before: float, curvature: float | None, slope: float, epsilons: Sequence[float] = DEFAULT_EPSILONS
) -> float:
    """Where the model search starts: the epsilon > 0 at which the quadratic model predicts a
    decrease of ``START_FRACTION * loss_before``, ``|slope| eps + curvature eps^2 / 2 = START_FRACTION J``,
    clipped to the candidates' range; without a curvature > 0 (or a finite loss > 0) the range's
    geometric middle."""
    low, high = min(epsilons), max(epsilons)
    if curvature is None or not curvature > 0 or not (math.isfinite(loss_before) and loss_before > 0):
        return math.sqrt(low * high)
    decrease = START_FRACTION * loss_before
    epsilon = (math.sqrt(slope**2 + 2 * curvature * decrease) - abs(slope)) / curvature
    return min(max(epsilon, low), high)


def _cubic_minimiser(points: Sequence[tuple[float, float]], slope: float) -> float | None:
    """The minimiser in ``(e1, e3)`` of ``A - slope e + a e^2 + b e^3`` through the three
    ``(e, J)`` points ``e1 < e2 < e3``; the vertex of the parabola through them when the cubic has none."""
    (e1, j1), (e2, j2), (e3, j3) = points
    y1, y2, y3 = j1 + slope * e1, j2 + slope * e2, j3 + slope * e3  # the known linear part removed
    # y = A + a e^2 + b e^3: the divided differences of y over (e^2, e^3) give a and b
    d12 = (y2 - y1) / (e2**2 - e1**2)
    d23 = (y3 - y2) / (e3**2 - e2**2)
    b = (d23 - d12) / ((e3**3 - e2**3) / (e3**2 - e2**2) - (e2**3 - e1**3) / (e2**2 - e1**2))
    a = d12 - b * (e2**3 - e1**3) / (e2**2 - e1**2)
    # J'(e) = -slope + 2 a e + 3 b e^2 = 0 at (-a + sqrt(a^2 + 3 b slope)) / (3 b), where J'' > 0
    discriminant = a * a + 3 * b * slope
    if b != 0 and discriminant > 0:
        root = (-a + math.sqrt(discriminant)) / (3 * b)
        if e1 < root < e3:
            return root
    denominator = (e2 - e1) * (j2 - j3) - (e2 - e3) * (j2 - j1)
    if denominator == 0:
        return None
    vertex = e2 - 0.5 * ((e2 - e1) ** 2 * (j2 - j3) - (e2 - e3) ** 2 * (j2 - j1)) / denominator
    return vertex if e1 < vertex < e3 else None


def model_line_search(
    evaluate_probe: Callable[[float], float],
    evaluate: Callable[[float], float] | None,
    loss_before: float,
    curvature: float | None = None,
    slope: float = 0.0,
    epsilons: Sequence[float] = DEFAULT_EPSILONS,
) -> LineSearchResult:
    """A line search of a few evaluations that never accepts an increase of the loss.

    ``evaluate_probe(eps)`` is the training loss on the probe subset with the new layer scaled
    by ``eps``, ``evaluate(eps)`` on the whole line-search set (``None``: the probe is the
    whole set), whose loss before the insertion is ``loss_before``.

    1. Start at :func:`start_epsilon` (the quadratic model ``-eps slope - eps^2 curvature / 2``).
    2. For each sign, walk from there by the factor ``STEP`` on the probe loss: up while it keeps
       decreasing, else down while it does (``WALK_STEPS`` steps at most, within
       ``[min(epsilons), max(epsilons)]``); keep the sign whose walk ended lower (the sign better
       at the start is not always the one with the deeper minimum).
    3. Refine ``REFINEMENTS`` times: the minimiser of the cubic ``A - slope eps + a eps^2 + b eps^3``
       through the lowest probe point and its two neighbours (the measured cubic behaviour).
    4. Confirm the lowest probe point on the whole set; if it is not strictly below
       ``loss_before``, try epsilon / ``STEP`` up to ``RETRIES`` times; else epsilon = 0 (the
       identity), ``loss_after = loss_before``.

    At most ``2 (1 + WALK_STEPS) + REFINEMENTS`` = 14 probe evaluations and ``1 + RETRIES`` = 3
    on the whole set (when the probe is the whole set, the probe loss is the confirmation and the
    retries are probe evaluations: 16 at most, ``trials`` empty).
    """
    if not epsilons:
        raise ValueError("line search needs at least one candidate epsilon")
    low, high = min(epsilons), max(epsilons)
    if not low > 0:
        raise ValueError(f"the model line search walks in a range of epsilons > 0, got {tuple(epsilons)!r}")
    probed: dict[float, float] = {}  # signed epsilon -> probe loss

    def probe(epsilon: float) -> float:
        if epsilon not in probed:
            probed[epsilon] = float(evaluate_probe(epsilon))
        loss = probed[epsilon]
        return loss if math.isfinite(loss) else math.inf

    start = start_epsilon(loss_before, curvature, slope, epsilons)
    ends = {}
    for sign in (1.0, -1.0):
        best, steps = start, 0
        probe(sign * start)
        for factor in (STEP, 1 / STEP):
            moved = False
            while steps < WALK_STEPS:
                step = min(max(best * factor, low), high)
                if step == best:
                    break
                steps += 1
                if not probe(sign * step) < probe(sign * best):
                    break
                best, moved = step, True
            if moved:
                break
        ends[sign] = best
    sign = min(ends, key=lambda s: probe(s * ends[s]))

    def lowest() -> tuple[list[float], int]:
        side = sorted(abs(e) for e in probed if e * sign > 0)
        return side, min(range(len(side)), key=lambda i: probe(sign * side[i]))

    for _ in range(REFINEMENTS):
        side, i = lowest()
        if not 0 < i < len(side) - 1:
            break
        bracket = [(e, probe(sign * e)) for e in side[i - 1 : i + 2]]
        if not all(math.isfinite(j) for _, j in bracket):
            break
        refined = _cubic_minimiser(bracket, sign * slope)
        if refined is None or sign * refined in probed:
            break
        probe(sign * refined)
    side, i = lowest()
    epsilon = sign * side[i]

    trials = []
    for _ in range(1 + RETRIES):
        if evaluate is None:
            loss = float(evaluate_probe(epsilon)) if epsilon not in probed else probed[epsilon]
            probed[epsilon] = loss
        else:
            loss = float(evaluate(epsilon))
            trials.append((epsilon, loss))
        if _lower(loss, loss_before):
            return LineSearchResult(epsilon, loss_before, loss, tuple(trials), tuple(probed.items()))
        epsilon /= STEP
    return LineSearchResult(0.0, loss_before, loss_before, tuple(trials), tuple(probed.items()))
