"""Writing files so that a crash never leaves one half-written (shared by every layer).

:func:`write_atomic` writes the bytes to a temporary file beside the target, flushes them to
disk, renames the temporary file over the target (``os.replace``, atomic on POSIX and
Windows) and flushes the folder entry: a reader sees the old file or the new one, never a
part. If anything fails, the target is left as it was and the temporary file is removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["fsync_dir", "write_atomic", "write_json_atomic", "write_synced", "write_text_atomic"]

#: Permissions of a written file: read-write for the owner, readable by everyone (the mode a
#: plain ``open(path, "w")`` gives under the usual umask 022; a temporary file is private).
FILE_MODE = 0o644


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename in it) to disk; a no-op where folders cannot be opened."""
    with contextlib.suppress(OSError):  # not every file system (or OS) lets a folder be opened
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_synced(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` and flush it to disk (not atomic: for a file in a temporary folder
    that is renamed as a whole afterwards)."""
    with open(path, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


def write_atomic(path: str | os.PathLike, data: bytes, *, mode: int = FILE_MODE) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path`` as a :class:`~pathlib.Path`.

    The bytes go to a hidden temporary file in the same folder (``.<name>.<random>.tmp``), are
    flushed to disk, get permissions ``mode``, and the file is renamed over ``path``; then the
    folder is flushed. Missing parent folders are created. On any error (including
    ``KeyboardInterrupt``) the temporary file is removed and ``path`` is untouched.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write_synced(tmp, data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def write_text_atomic(path: str | os.PathLike, text: str, *, encoding: str = "utf-8") -> Path:
    """:func:`write_atomic` for text."""
    return write_atomic(path, text.encode(encoding))


def write_json_atomic(path: str | os.PathLike, payload: Any, *, indent: int | None = 1) -> Path:
    """:func:`write_atomic` for JSON (``NaN`` and ``inf`` written as JavaScript literals, as
    :func:`json.dump` does by default)."""
    return write_text_atomic(path, json.dumps(payload, indent=indent, allow_nan=True))
