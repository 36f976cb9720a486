"""Where generated PDE data are cached, and how a cache file is written (atomically)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from topogrow._io import write_atomic
from topogrow.data.datasets import DATA_ENV


def cache_root(data_dir: str | os.PathLike | None = None) -> Path:
    """``data_dir``, else ``$TOPOGROW_DATA_DIR``, else ``~/.cache/topogrow``."""
    if data_dir is not None:
        return Path(data_dir)
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV])
    return Path.home() / ".cache" / "topogrow"


def save_npz_atomic(path: Path, **arrays: np.ndarray) -> None:
    """Write ``arrays`` to ``path`` as ``.npz`` atomically (:func:`topogrow._io.write_atomic`), so a
    crash never leaves a half-written cache under the real name; permissions follow the umask."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_atomic(path, buffer.getvalue())
