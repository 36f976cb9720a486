"""What ``topogrow bench`` measures and how (:class:`BenchConfig`), and the registry of its sections."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from topogrow._registry import Registry
from topogrow._validation import check_int, check_optional_int

TD_BATCH = 1024  # GrowthConfig.td_batch_size
#: The measurements by name (``topogrow bench --sections``), in the order they run:
#: functions ``(BenchConfig) -> JSON-able results``.
SECTIONS: Registry[Callable[[BenchConfig], Any]] = Registry("bench section")


@dataclass(frozen=True)
class BenchConfig:
    """What to measure and how.

    Attributes:
        quick: small sizes and one repeat: a smoke run of every section (seconds).
        repeats: timings are the median of this many runs (fewer when one run is slow).
        threads: torch CPU threads (``None``: torch's choice).
        device: ``"cpu"``, ``"cuda"``...; ``None``: CUDA when available.
        data_dir: where the data files are (see :func:`topogrow.data.load`).
        sections: the sections to run (default all).
    """

    quick: bool = False
    repeats: int = 3
    threads: int | None = 2
    device: str | None = None
    data_dir: str | None = None
    sections: tuple[str, ...] = field(default_factory=lambda: tuple(SECTIONS))

    def __post_init__(self) -> None:
        check_int("repeats", self.repeats, minimum=1)
        check_optional_int("threads", self.threads, minimum=1)
        for name in self.sections:
            SECTIONS[name]  # an unknown name: "did you mean"

    @property
    def runs(self) -> int:
        """Repeats of each timing: one in a quick run."""
        return 1 if self.quick else self.repeats

    @property
    def torch_device(self) -> torch.device:
        """``device`` as a ``torch.device`` (CUDA when available and none is named)."""
        return torch.device(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))
