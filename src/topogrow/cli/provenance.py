"""What ``run.json`` and ``compare.json`` record about where their numbers came from: the
library versions, the command line, and the data file of a built-in task (path and SHA-256)."""

from __future__ import annotations

import hashlib
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch

import topogrow
from topogrow.data.datasets import file_record, find_file
from topogrow.data.tabular import is_table_path

#: The file each built-in task reads, as :func:`~topogrow.data.datasets.find_file` looks for it.
DATA_FILES: dict[str, list[str]] = {
    "california": ["california_housing/cal_housing.data", "cal_housing.data"],
}


def versions() -> dict[str, str]:
    """``{"topogrow", "torch", "numpy", "python"}`` versions of this process."""
    return {
        "topogrow": topogrow.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def sha256(path: Path) -> str:
    """The SHA-256 of the file at ``path``, in hex (read in 1 MiB pieces)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for piece in iter(lambda: file.read(1 << 20), b""):
            digest.update(piece)
    return digest.hexdigest()


def data_file(task: str, data_dir: str | Path | None = None) -> dict[str, str] | None:
    """``{"path", "sha256"}`` of the file the built-in ``task`` reads, found as the task finds it;
    ``None`` for a task without one (synthetic data) or whose data came from elsewhere (e.g.
    scikit-learn's cache)."""
    if is_table_path(task) and Path(task).is_file():  # the user's own table
        return file_record(task)
    names = DATA_FILES.get(task)
    if names is None:
        return None
    path, _ = find_file(names, data_dir)
    if path is None:
        return None
    return {"path": str(Path(path).resolve()), "sha256": sha256(path)}


def provenance(task: str, data_dir: str | Path | None, command: list[str]) -> dict[str, Any]:
    """The ``versions``, ``command`` and ``data_file`` entries of ``run.json`` and ``compare.json``."""
    return {"versions": versions(), "command": list(command), "data_file": data_file(task, data_dir)}
