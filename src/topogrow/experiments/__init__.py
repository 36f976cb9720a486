"""Experiments on the tasks of :mod:`topogrow.data`: runs, comparisons, the paper's rows, benchmarks.

* :mod:`topogrow.experiments.experiment` — :func:`run` one strategy, :func:`compare` several over
  seeds, the reference depth search;
* :mod:`topogrow.experiments.paired` and :mod:`topogrow.experiments.quality` — paired statistics
  across seeds, compute to quality;
* :mod:`topogrow.experiments.report` — tables and plots of a comparison;
* :mod:`topogrow.experiments.paper_runner` — the rows of the paper's table (``paper/*.json``);
* :mod:`topogrow.experiments.transfer` — the transfer-learning benchmarks;
* :mod:`topogrow.experiments.bench` — what the topological derivative costs, one file per section.

This layer imports :mod:`topogrow.data` and the layers below it, never :mod:`topogrow.cli`.
"""

from topogrow.experiments.experiment import (
    DEPTH_SEARCH,
    Comparison,
    ModelConfig,
    RunResult,
    build_model,
    compare,
    depth_search,
    run,
)

__all__ = ["DEPTH_SEARCH", "Comparison", "ModelConfig", "RunResult", "build_model", "compare", "depth_search", "run"]
