"""Paired comparisons over seeds: the same seed gives every strategy the same split and initial
network, so strategies are compared seed by seed (mean difference, 95 % t-interval, wins)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats

__all__ = ["Paired", "paired", "paired_cell"]


@dataclass(frozen=True)
class Paired:
    """``reference`` against ``other`` over ``n`` seeds, in the direction "positive = the reference
    is better" (lower error, higher accuracy).

    Attributes:
        mean: the mean per-seed difference.
        low, high: its 95 % t-interval (NaN with one seed).
        wins: seeds on which the reference is strictly better.
        n: seeds compared.
    """

    mean: float
    low: float
    high: float
    wins: int
    n: int

    @property
    def verdict(self) -> str:
        """``"better"`` / ``"worse"`` when the interval excludes 0, else ``"tie"``."""
        if self.low > 0:
            return "better"
        if self.high < 0:
            return "worse"
        return "tie"


def paired(reference: Sequence[float], other: Sequence[float], higher_better: bool) -> Paired:
    """Per-seed differences ``reference - other`` (``other - reference`` when lower is better)."""
    if len(reference) != len(other) or not reference:
        raise ValueError(f"paired metrics need the same seeds on both sides, got {len(reference)} and {len(other)}")
    diffs = [(r - o) if higher_better else (o - r) for r, o in zip(reference, other, strict=True)]
    n, mean = len(diffs), statistics.fmean(diffs)
    if n < 2:
        return Paired(mean, math.nan, math.nan, sum(d > 0 for d in diffs), n)
    half = stats.t.ppf(0.975, n - 1) * statistics.stdev(diffs) / math.sqrt(n)
    return Paired(mean, mean - half, mean + half, sum(d > 0 for d in diffs), n)


def paired_cell(result: Paired) -> str:
    """``+0.0123 [+0.0050, +0.0196], 5/5`` for a table."""
    interval = "" if math.isnan(result.low) else f" [{result.low:+.4f}, {result.high:+.4f}]"
    return f"{result.mean:+.4f}{interval}, {result.wins}/{result.n}"
