"""Loggers: callbacks that write the run's records as it goes, one line per epoch and per
insertion: JSON lines (:class:`JSONLinesLogger`), CSV (:class:`CSVLogger`) or TensorBoard
(:class:`TensorBoardLogger`, when ``tensorboard`` is installed)."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from topogrow.growth.callbacks import Callback
from topogrow.growth.history import EpochRecord

__all__ = ["CSVLogger", "JSONLinesLogger", "TensorBoardLogger"]


def _insertion_entry(grower, insertion) -> dict[str, Any]:
    """What every logger says about one insertion."""
    record = insertion.record
    eigenvalues = record.eigenvalues
    return {
        "stage": record.stage,
        "epoch": record.epoch,
        "location": insertion.location,
        "epsilon": insertion.epsilon,
        "mu": None if eigenvalues is None else eigenvalues[insertion.location],
        "predicted_change": insertion.predicted_change,
        "actual_change": insertion.actual_change,
        "depth": grower.model.depth,
    }


def _epoch_row(record: EpochRecord) -> dict[str, Any]:
    """An epoch record as flat columns (each metric its own)."""
    row = {key: value for key, value in asdict(record).items() if key != "metrics"}
    row.update(record.metrics or {})
    return row


class JSONLinesLogger(Callback):
    """Appends one JSON object per line to ``path`` as the run goes (``tail -f`` it, or read it
    with ``pandas.read_json(path, lines=True)``): ``{"event": "epoch", ...}`` after each epoch
    (an EpochRecord), ``{"event": "insert", ...}`` after each insertion (stage, location,
    epsilon, predicted and actual change, depth after it) and ``{"event": "end", ...}``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _write(self, entry: dict[str, Any]) -> None:
        with self.path.open("a") as file:
            file.write(json.dumps(entry) + "\n")

    def on_fit_start(self, grower):
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def on_epoch_end(self, grower, record):
        self._write({"event": "epoch", **asdict(record)})

    def on_insert(self, grower, insertion):
        self._write({"event": "insert", **_insertion_entry(grower, insertion)})

    def on_fit_end(self, grower):
        history = grower.history
        self._write(
            {
                "event": "end",
                "depth": grower.model.depth,
                "epochs": len(history.epochs),
                "stop_reason": history.stop_reason,
            }
        )


class CSVLogger(Callback):
    """Writes ``epochs.csv`` (one row per epoch: the :class:`~topogrow.growth.history.EpochRecord`
    with one column per metric) and ``insertions.csv`` (one row per insertion: stage, epoch,
    location, epsilon, mu of the location, predicted and actual change, depth) into ``folder``,
    flushed after every row (``pandas.read_csv`` reads them while the run goes). A resumed run
    appends."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._columns: dict[str, list[str]] = {}

    def on_fit_start(self, grower):
        self.folder.mkdir(parents=True, exist_ok=True)

    def _append(self, name: str, row: dict[str, Any]) -> None:
        path = self.folder / f"{name}.csv"
        if name not in self._columns:
            if path.exists() and path.stat().st_size:
                with path.open(newline="") as file:
                    self._columns[name] = next(csv.reader(file))
            else:
                self._columns[name] = list(row)
                with path.open("w", newline="") as file:
                    csv.writer(file).writerow(self._columns[name])
        with path.open("a", newline="") as file:
            csv.DictWriter(file, self._columns[name], extrasaction="ignore").writerow(row)

    def on_epoch_end(self, grower, record):
        self._append("epochs", _epoch_row(record))

    def on_insert(self, grower, insertion):
        self._append("insertions", _insertion_entry(grower, insertion))


class TensorBoardLogger(Callback):
    """Writes TensorBoard scalars into ``log_dir`` (``tensorboard --logdir``): per epoch the losses,
    the learning rate, the depth and the metrics; per insertion its location, epsilon and mu
    (at the epoch it followed). Needs the ``tensorboard`` package (``torch.utils.tensorboard``)."""

    def __init__(self, log_dir: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ImportError(
                "TensorBoardLogger needs the tensorboard package: pip install tensorboard "
                "(or use CSVLogger / JSONLinesLogger)"
            ) from None
        self.log_dir = Path(log_dir)
        self._writer_class = SummaryWriter
        self.writer = None

    def on_fit_start(self, grower):
        self.writer = self._writer_class(log_dir=str(self.log_dir))

    def on_epoch_end(self, grower, record):
        for key, value in _epoch_row(record).items():
            if key not in ("epoch", "stage", "wall_time") and isinstance(value, (int, float)):
                self.writer.add_scalar(key, value, record.epoch)
        self.writer.flush()

    def on_insert(self, grower, insertion):
        entry = _insertion_entry(grower, insertion)
        for key in ("location", "epsilon", "mu", "actual_change"):
            if entry[key] is not None:
                self.writer.add_scalar(f"insertion/{key}", entry[key], entry["epoch"])
        self.writer.flush()

    def on_fit_end(self, grower):
        if self.writer is not None:
            self.writer.close()
