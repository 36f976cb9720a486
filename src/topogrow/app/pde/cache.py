"""Where generated PDE data are cached, and how a cache file is written (atomically)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from topogrow.app.datasets import DATA_ENV


def cache_root(data_dir: str | os.PathLike | None = None) -> Path:
    """``data_dir``, else ``$TOPOGROW_DATA_DIR``, else ``~/.cache/topogrow``."""
    if data_dir is not None:
        return Path(data_dir)
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV])
    return Path.home() / ".cache" / "topogrow"


def save_npz_atomic(path: Path, **arrays: np.ndarray) -> None:
    """Write ``arrays`` to ``path`` as ``.npz`` through a temporary file in the same folder and
    ``os.replace``, so a crash never leaves a half-written cache under the real name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            np.savez(stream, **arrays)
        os.chmod(temporary, 0o644)  # mkstemp makes the file private; the cache is shared data
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
