"""``topogrow transfer``: the two transfer-learning benchmarks of :func:`~topogrow.transfer.adapt`.

Each benchmark pretrains a network on a source task, then adapts a copy of it to a
related target task from a few target samples with every strategy, and scores it on
held-out target data.

The benchmarks and their data are in ``benchmarks.py``, the run (and the rule every strategy
follows) in ``runner.py``, the table, plot and files in ``report.py``.
"""

from topogrow.experiments.transfer.benchmarks import BENCHMARKS, Benchmark, TransferData, heat_data, mnist_data
from topogrow.experiments.transfer.report import plot_transfer, transfer_table, write_transfer
from topogrow.experiments.transfer.runner import (
    STRATEGIES,
    TransferConfig,
    TransferRecord,
    TransferResults,
    pretrain,
    run_transfer,
)

__all__ = [
    "BENCHMARKS",
    "STRATEGIES",
    "Benchmark",
    "TransferConfig",
    "TransferData",
    "TransferRecord",
    "TransferResults",
    "heat_data",
    "mnist_data",
    "plot_transfer",
    "pretrain",
    "run_transfer",
    "transfer_table",
    "write_transfer",
]
