"""Learning tasks as tensors: the registry of tasks, the data loaders and the PDE generators.

:func:`load` makes a registered task by name: a :class:`Task` holding the split tensors
``X_train, y_train, X_val, y_val, X_test, y_test``, the training loss and the test metric::

    from topogrow import data

    task = data.load("california", seed=0)   # 8 features -> house value, scored by test MSE
    task.X_train.shape, task.metric_name

* :mod:`topogrow.data.task` — what a task is (:class:`Task`, the seeded split, the relative L2 error);
* :mod:`topogrow.data.tasks` — the registry (:data:`TASKS`, :func:`register_task`, :func:`load`);
* :mod:`topogrow.data.datasets`, :mod:`topogrow.data.images` — finding and reading data files
  (California housing, MNIST, scikit-learn's digits);
* :mod:`topogrow.data.tabular` — a user's own CSV, ``.npz`` or Parquet table as a task;
* :mod:`topogrow.data.pde` — the heat-conduction and Navier–Stokes generators (loaded when used).

This layer imports :mod:`topogrow.core`, :mod:`topogrow.nn`, :mod:`topogrow.training` and
:mod:`topogrow.growth` at most, never :mod:`topogrow.experiments` or :mod:`topogrow.cli`.
"""

from topogrow.data.datasets import DATA_ENV, load_california
from topogrow.data.images import load_digits, load_mnist5k, load_mnist_idx
from topogrow.data.tabular import TabularTask, read_table, table_task, tabular_task
from topogrow.data.task import RelativeL2Task, Task, relative_l2_error, split_and_standardise
from topogrow.data.tasks import TASKS, load, register_task

__all__ = [
    "DATA_ENV",
    "TASKS",
    "RelativeL2Task",
    "TabularTask",
    "Task",
    "load",
    "load_california",
    "load_digits",
    "load_mnist5k",
    "load_mnist_idx",
    "read_table",
    "register_task",
    "relative_l2_error",
    "split_and_standardise",
    "table_task",
    "tabular_task",
]
