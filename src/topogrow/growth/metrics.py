"""Metrics of a growth run and what its stop rules watch: the metrics given to the
:class:`~topogrow.growth.grower.Grower` (callables or torchmetrics), checked, and the monitored
value of a record (``config.monitor``)."""

from __future__ import annotations

from collections.abc import Mapping

from topogrow.growth.config import GrowthConfig
from topogrow.growth.history import EpochRecord, StageRecord
from topogrow.training.epochs import Metric, is_stateful_metric

__all__ = ["check_metrics", "monitored"]


def check_metrics(metrics: Mapping[str, Metric] | None, config: GrowthConfig) -> dict[str, Metric]:
    """The metrics as a dict of callables or torchmetrics; the monitor names one of them or a loss."""
    metrics = dict(metrics or {})
    for name, metric in metrics.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"metric names must be non-empty strings, got {name!r}")
        if not (callable(metric) or is_stateful_metric(metric)):
            raise TypeError(
                f"metric {name!r}: expected a callable (prediction, target) -> float or a torchmetrics.Metric, "
                f"got {type(metric).__name__}"
            )
    monitor = config.monitor
    if monitor not in ("val_loss", "train_loss") and monitor.removeprefix("val_") not in metrics:
        names = ", ".join(["val_loss", "train_loss", *(f"val_{name}" for name in metrics)])
        raise ValueError(f"monitor {monitor!r} is not a loss or a metric given to the Grower; choose from {names}")
    return metrics


def monitored(config: GrowthConfig, record: EpochRecord | StageRecord) -> float:
    """The value of ``config.monitor`` in ``record``."""
    if config.monitor in ("val_loss", "train_loss"):
        return getattr(record, config.monitor)
    return (record.metrics or {})[config.monitor]
