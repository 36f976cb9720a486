"""Choose epsilon for an insertion by a line search that never raises the loss."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

DEFAULT_EPSILONS: tuple[float, ...] = tuple(float(10 ** (-3 + 0.25 * i)) for i in range(17))  # 1e-3 .. 10


@dataclass(frozen=True)
class LineSearchResult:
    """The chosen epsilon (0 if nothing lowered the loss) and the losses seen."""

    epsilon: float
    loss_before: float
    loss_after: float
    trials: tuple[tuple[float, float], ...]

    @property
    def change(self) -> float:
        """``loss_after - loss_before``: negative when the insertion lowered the loss."""
        return self.loss_after - self.loss_before


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
