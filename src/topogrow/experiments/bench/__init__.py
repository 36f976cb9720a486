"""``topogrow bench``: what the topological derivative costs, measured in one run.

The measurements (sections), each a ratio or a curve taken on the same machine in the same run
(medians over ``repeats``; timings are never asserted by the tests), one file each, in the order
they run; :data:`~topogrow.experiments.bench.goals.GOALS` lists the goals:

1. ``td_vs_epoch``: the topological derivative at every location (the full pass, the growth loop's
   sampled pass, subsets) against one training epoch of the same model on the same data
   (California ResidualMLP, MNIST ResidualCNN); ``td_decisions``: the sampled pass's decisions
   against the full pass's over 5 seeds; ``line_search``: one insertion's line search against an
   epoch; ``location_cost``: the default strategy's decision per insertion, for every paper row.
2. ``block_vs_dense``: the block-diagonal solver against a naive dense ``n(n+1) x n(n+1)``
   eigendecomposition (widths 16-64), then the blocks and the iterative (batched Lanczos) solvers
   alone at widths 128-1024 for one location and S = 2048 samples, with the memory each would take.
3. ``memory``: peak resident memory of the TD pass for growing S, in a fresh process
   per measurement (``resource.getrusage``; torch's CPU allocations are invisible to
   ``tracemalloc``), for the streaming blocks solver and the caching iterative one.
4. ``growth_overhead``: whole ``td`` growth runs against ``random`` growth and against training
   their final architecture from scratch for the same epochs (:func:`compare`): wall time and
   counted FLOPs, on the README demo's, the bench's and a CNN configuration; ``wide_growth``: td
   against random growth at width 256 (time, peak memory), each in a fresh process.
5. ``matrix_free``: Hessian-vector products and time the Lanczos path of
   :mod:`topogrow.core.matrix_free` needs to match the closed-form eigenvalue to 1e-6.

Beside the sections: what they share (``config.py``: :class:`BenchConfig` and the registry;
``measure.py``: timing, load and memory), the goals (``goals.py``), the Markdown table
(``table.py``) and the run (``run.py``). Everything goes to ``results/bench.json``;
:func:`markdown_table` renders the table.
"""

# isort: off
# The sections register themselves in SECTIONS when imported: in this order, the order they run.
from topogrow.experiments.bench import td_vs_epoch, td_decisions, line_search, location_cost  # noqa: F401
from topogrow.experiments.bench import block_vs_dense, memory, growth_overhead, wide_growth, matrix_free  # noqa: F401

# isort: on
from topogrow.experiments.bench.config import SECTIONS, BenchConfig
from topogrow.experiments.bench.goals import GOALS, goals_met
from topogrow.experiments.bench.run import run_bench, write_results
from topogrow.experiments.bench.table import markdown_table

__all__ = ["GOALS", "SECTIONS", "BenchConfig", "goals_met", "markdown_table", "run_bench", "write_results"]
