"""A user's own table as a :class:`~topogrow.data.task.Task`: CSV, NumPy ``.npz`` or Parquet (with
``pyarrow``), one target column, numeric features.

::

    table = read_table("houses.csv")                   # columns by name, the file's SHA-256
    task = table_task(table, "price", seed=0)          # seeded split, standardised, task.preprocessing
    task = tabular_task("houses.csv", "price")         # both in one

The split is seeded (:func:`~topogrow.data.task.split_and_standardise`: ``test_fraction`` of the rows
for the test set, ``val_fraction`` for validation, the rest for training). Inputs are standardised
with the training mean and std. A regression target is standardised the same way: the network
trains on ``(y - y_mean) / y_std`` (training and validation losses are on that scale), and the
test MSE of :meth:`TabularTask.score` is in the table's units. A classification target is encoded
as the int64 index of its label in the sorted unique labels (``preprocessing["classes"]``). What
was done is recorded in ``task.preprocessing`` (layout in :class:`~topogrow.data.task.Task`).
"""

from __future__ import annotations

import csv
import difflib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from topogrow.data.datasets import file_record
from topogrow.data.task import Task, split_and_standardise

__all__ = [
    "MAX_INFERRED_CLASSES",
    "TABLE_SUFFIXES",
    "Table",
    "TabularTask",
    "infer_task_type",
    "is_table_path",
    "read_table",
    "table_task",
    "tabular_task",
]

#: File endings read as tables.
TABLE_SUFFIXES = (".csv", ".npz", ".parquet")
#: A target of integer values with at most this many distinct values is inferred to be classification.
MAX_INFERRED_CLASSES = 20
_MISSING = {"", "na", "nan", "n/a", "null", "none"}


def is_table_path(text: str | Path) -> bool:
    """Whether a task argument names a table: it ends with .csv/.npz/.parquet or is an existing file."""
    path = Path(text)
    return path.suffix.lower() in TABLE_SUFFIXES or path.is_file()


@dataclass
class Table:
    """A table read from a file: column names in order, one 1-D array per column.

    A column is float64 (missing cells NaN) when every filled cell is a number, else an object
    array of strings (missing cells ``None``).
    """

    path: str
    names: list[str]
    columns: dict[str, np.ndarray]
    sha256: str

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def _column(cells: list[str | None]) -> np.ndarray:
    """Numbers as float64 (missing: NaN) if every filled cell is one, else strings (missing: None)."""
    values = []
    for cell in cells:
        if cell is None or cell.strip().lower() in _MISSING:
            values.append(math.nan)
            continue
        number = _number(cell)
        if number is None:
            return np.array([None if c is None or c.strip().lower() in _MISSING else c.strip() for c in cells], object)
        values.append(number)
    return np.asarray(values, dtype=np.float64)


def _check_names(path: Path, names: list[str]) -> list[str]:
    names = [str(name).strip() for name in names]
    if not names or not any(names):
        raise ValueError(f"{path}: no header row with column names")
    empty = [i + 1 for i, name in enumerate(names) if not name]
    if empty:
        raise ValueError(f"{path}: column {empty[0]} of the header has no name")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"{path}: duplicate column names: {', '.join(map(repr, duplicates))}")
    return names


def _read_csv(path: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        sample = handle.read(65536)
        handle.seek(0)
        try:
            dialect = csv.Sniffer().sniff(sample, delimiters=",;\t")
        except csv.Error:
            dialect = csv.excel
        rows = [row for row in csv.reader(handle, dialect) if any(cell.strip() for cell in row)]
    if not rows:
        raise ValueError(f"{path}: the file is empty")
    names = _check_names(path, rows[0])
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(names):
            raise ValueError(f"{path}: row {number} has {len(row)} cells, the header {len(names)}")
    return names, {name: _column([row[i] for row in rows[1:]]) for i, name in enumerate(names)}


def _as_column(path: Path, name: str, array: np.ndarray) -> np.ndarray:
    if array.dtype.kind in "biuf":
        return array.astype(np.float64)
    if array.dtype.kind in "US":
        return _column([str(value) for value in array.tolist()])
    raise ValueError(f"{path}: column {name!r} has unsupported dtype {array.dtype}")


def _read_npz(path: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except ValueError as error:  # object arrays need pickling: refused
        raise ValueError(f"{path}: cannot read ({' '.join(str(error).split())})") from None
    if "X" in arrays and "y" in arrays:  # a feature matrix and a target
        X, y = arrays["X"], arrays["y"]
        X = X.reshape(len(X), -1) if X.ndim != 1 else X[:, None]
        if y.ndim > 1 and y.shape[1:] != (1,):
            raise ValueError(f"{path}: y must be one column, got shape {y.shape}")
        y = y.reshape(len(y))
        if len(X) != len(y):
            raise ValueError(f"{path}: X has {len(X)} rows, y {len(y)}")
        given = arrays.get("feature_names")
        names = [str(n) for n in given.tolist()] if given is not None else [f"x{i}" for i in range(X.shape[1])]
        if len(names) != X.shape[1]:
            raise ValueError(f"{path}: {len(names)} feature_names for {X.shape[1]} columns of X")
        names = _check_names(path, [*names, "y"])
        columns = {name: _as_column(path, name, X[:, i]) for i, name in enumerate(names[:-1])}
        columns["y"] = _as_column(path, "y", y)
        return names, columns
    not_1d = [f"{name} {array.shape}" for name, array in arrays.items() if array.ndim != 1]
    if not arrays or not_1d:
        raise ValueError(
            f"{path}: expected arrays 'X' and 'y', or one 1-D array per column"
            + (f"; not 1-D: {', '.join(not_1d)}" if not_1d else "; the file holds none")
        )
    lengths = {len(array) for array in arrays.values()}
    if len(lengths) > 1:
        sizes = ", ".join(f"{name} {len(array)}" for name, array in arrays.items())
        raise ValueError(f"{path}: columns of different lengths: {sizes}")
    names = _check_names(path, list(arrays))
    return names, {name: _as_column(path, name, arrays[name]) for name in names}


def _read_parquet(path: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow); or save it as CSV") from None
    table = pq.read_table(path)
    names = _check_names(path, list(table.column_names))
    columns = {}
    for name in names:
        values = table.column(name).to_pylist()
        if all(value is None or isinstance(value, (int, float, bool)) for value in values):
            columns[name] = np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)
        else:
            columns[name] = _column([None if v is None else str(v) for v in values])
    return names, columns


def read_table(path: str | Path) -> Table:
    """Read a CSV (header row; comma, semicolon or tab), ``.npz`` (arrays ``X`` and ``y``, with
    optional ``feature_names``; or one 1-D array per column) or Parquet file (needs ``pyarrow``)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        names, columns = _read_npz(path)
    elif suffix == ".parquet":
        names, columns = _read_parquet(path)
    else:
        try:
            names, columns = _read_csv(path)
        except UnicodeDecodeError:
            raise ValueError(f"{path}: not a UTF-8 text table (CSV, .npz or .parquet expected)") from None
        except csv.Error as error:
            raise ValueError(f"{path}: not a readable CSV file ({error})") from None
    return Table(str(path), names, columns, file_record(path)["sha256"])


def _integer_like(values: np.ndarray) -> bool:
    return values.dtype == np.float64 and bool(np.all(np.isfinite(values))) and bool(np.all(values == np.round(values)))


def infer_task_type(y: np.ndarray) -> str:
    """``"classification"`` for labels that are strings, or integer values with 2 to
    :data:`MAX_INFERRED_CLASSES` distinct values; else ``"regression"``."""
    y = np.asarray(y)
    if y.dtype.kind not in "biuf":
        return "classification"
    distinct = len(np.unique(y))
    if _integer_like(y.astype(np.float64)) and 2 <= distinct <= MAX_INFERRED_CLASSES:
        return "classification"
    return "regression"


def _missing(column: np.ndarray) -> np.ndarray:
    if column.dtype == object:
        return np.array([value is None for value in column], dtype=bool)
    return ~np.isfinite(column)


@dataclass
class TabularTask(Task):
    """A task from a table: its regression test MSE is in the table's units (the network predicts
    the standardised target, which :meth:`score` maps back with ``preprocessing``'s ``y_mean``/``y_std``)."""

    @torch.no_grad()
    def score(self, model: torch.nn.Module, batch_size: int = 2048) -> float:
        if self.kind != "regression" or not self.preprocessing or self.preprocessing.get("y_std") is None:
            return super().score(model, batch_size)
        scale = torch.tensor(self.preprocessing["y_std"], dtype=torch.float64)
        error = (self.predict_test(model, batch_size) - self.y_test.double()) * scale
        return float((error**2).mean())


def table_task(
    table: Table,
    target: str,
    task_type: str | None = None,
    seed: int = 0,
    val_fraction: float = 0.16,
    test_fraction: float = 0.2,
    dropna: bool = False,
    n_train: int | None = None,
) -> TabularTask:
    """The :class:`TabularTask` learning column ``target`` from the other columns of ``table``.

    ``task_type`` is ``"regression"``, ``"classification"`` or ``None`` (inferred by
    :func:`infer_task_type`; the task's ``kind`` says which). Rows with a missing, NaN or infinite
    cell are an error, or dropped with ``dropna=True``. The same ``seed`` gives the same split.
    """
    path = table.path
    if target not in table.columns:
        close = difflib.get_close_matches(target, table.names, n=1, cutoff=0.5)
        if not close:
            close = [name for name in table.names if name.lower() == target.lower()]
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"{path}: no target column {target!r}; the columns are {', '.join(table.names)}{hint}")
    if task_type not in (None, "regression", "classification"):
        raise ValueError(f"task type must be 'regression' or 'classification', got {task_type!r}")
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 < value < 1:
            raise ValueError(f"{name} must be between 0 and 1 (exclusive), got {value}")
    if val_fraction + test_fraction >= 1:
        raise ValueError(f"val_fraction + test_fraction must be below 1, got {val_fraction} + {test_fraction}")
    features = [name for name in table.names if name != target]
    if not features:
        raise ValueError(f"{path}: no feature columns besides the target {target!r}")
    text = [name for name in features if table.columns[name].dtype == object]
    if text:
        examples = [f"{name!r} (e.g. {next(v for v in table.columns[name] if v is not None)!r})" for name in text]
        raise ValueError(
            f"{path}: non-numeric feature columns: {', '.join(examples)}; encode them as numbers or drop them"
        )
    y_raw = table.columns[target]
    if task_type == "regression" and y_raw.dtype == object:
        example = next(v for v in y_raw if v is not None)
        raise ValueError(f"{path}: target {target!r} is not numeric (e.g. {example!r}): it cannot be a regression")
    bad = np.zeros(len(table), dtype=bool)
    for name in (*features, target):
        bad |= _missing(table.columns[name])
    if bad.any() and not dropna:
        first = int(np.flatnonzero(bad)[0])
        column = next(name for name in (*features, target) if _missing(table.columns[name])[first])
        raise ValueError(
            f"{path}: {int(bad.sum())} of {len(table)} rows have empty, NaN or infinite cells (the first: data "
            f"row {first + 1}, column {column!r}); drop them with --dropna (dropna=True) or fill them"
        )
    keep = ~bad
    X = np.stack([table.columns[name][keep] for name in features], axis=1).astype(np.float64)
    y_raw = y_raw[keep]
    n_test, n_val = int(round(test_fraction * len(X))), int(round(val_fraction * len(X)))
    if len(X) < 10 or n_test < 1 or n_val < 1 or len(X) - n_test - n_val < 2:
        dropped = f" ({int(bad.sum())} dropped for missing values)" if bad.any() else ""
        raise ValueError(
            f"{path}: too few rows for a train/validation/test split: {len(X)}{dropped}; need at least 10, with at "
            f"least one each for validation ({val_fraction}) and test ({test_fraction}) and 2 for training"
        )
    if len(np.unique(y_raw)) < 2:
        raise ValueError(f"{path}: target {target!r} has a single value ({y_raw[:1].tolist()[0]!r}): nothing to learn")
    kind = task_type or infer_task_type(y_raw)
    if kind == "classification":
        classes, y = np.unique(y_raw, return_inverse=True)
        class_list = [int(c) if isinstance(c, float) and c.is_integer() else c for c in classes.tolist()]
        y = y.astype(np.int64)
    else:
        y = y_raw.astype(np.float64).reshape(-1, 1)
        class_list = None
    *parts, x_mean, x_std = split_and_standardise(X, y, seed, n_train, val_fraction, test_fraction, return_stats=True)
    X_train, y_train, X_val, y_val, X_test, y_test = parts
    y_mean = y_std = None
    if kind == "regression":
        y_mean, y_std = y_train.mean(axis=0), y_train.std(axis=0)
        y_std[y_std == 0] = 1.0
        y_train, y_val, y_test = ((a - y_mean) / y_std for a in (y_train, y_val, y_test))
    target_dtype = torch.float32 if kind == "regression" else torch.int64
    preprocessing = {
        "kind": kind,
        "feature_names": list(features),
        "target": target,
        "x_mean": np.asarray(x_mean, dtype=np.float64).tolist(),
        "x_std": np.asarray(x_std, dtype=np.float64).tolist(),
        "y_mean": None if y_mean is None else np.asarray(y_mean, dtype=np.float64).tolist(),
        "y_std": None if y_std is None else np.asarray(y_std, dtype=np.float64).tolist(),
        "classes": class_list,
        "data": {"path": str(Path(path).resolve()), "sha256": table.sha256},
    }
    return TabularTask(
        Path(path).stem,
        kind,
        torch.as_tensor(X_train, dtype=torch.float32),
        torch.as_tensor(y_train, dtype=target_dtype),
        torch.as_tensor(X_val, dtype=torch.float32),
        torch.as_tensor(y_val, dtype=target_dtype),
        torch.as_tensor(X_test, dtype=torch.float32),
        torch.as_tensor(y_test, dtype=target_dtype),
        out_features=1 if kind == "regression" else len(class_list),
        preprocessing=preprocessing,
    )


def tabular_task(path: str | Path, target: str, **options) -> TabularTask:
    """:func:`read_table` then :func:`table_task` (same keyword options)."""
    return table_task(read_table(path), target, **options)
