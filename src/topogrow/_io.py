"""Writing files so that a crash never leaves one half-written (shared by every layer).

:func:`write_atomic` writes the bytes to a temporary file beside the target, flushes them to
disk, renames the temporary file over the target (``os.replace``, atomic on POSIX and
Windows) and flushes the folder entry: a reader sees the old file or the new one, never a
part. If anything fails, the target is left as it was and the temporary file is removed, and an
``OSError`` names the file (``<path>: No space left on device``, its ``errno`` kept).

Files get ``0666 & ~umask`` and folders ``0777 & ~umask`` (0644 and 0755 under the usual umask
022), as a plain ``open``/``mkdir`` would; :func:`umask` reads the process's umask.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

__all__ = [
    "dir_mode",
    "file_mode",
    "fsync_dir",
    "named_os_error",
    "umask",
    "write_atomic",
    "write_json_atomic",
    "write_synced",
    "write_text_atomic",
]

_UMASK_LOCK = threading.Lock()


def umask() -> int:
    """The process's umask, read without changing it (``Umask:`` of ``/proc/self/status`` on Linux;
    elsewhere set and restored under a lock, the only portable way)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    with _UMASK_LOCK:
        old = os.umask(0o022)
        os.umask(old)
    return old


def file_mode() -> int:
    """Permissions of a written file: ``0o666 & ~umask`` (0644 under umask 022), as ``open`` gives."""
    return 0o666 & ~umask()


def dir_mode() -> int:
    """Permissions of a created folder: ``0o777 & ~umask`` (0755 under umask 022), as ``mkdir`` gives."""
    return 0o777 & ~umask()


def named_os_error(error: OSError, path: str | os.PathLike, note: str = "") -> OSError:
    """``error`` as an ``OSError`` whose message starts with ``path`` (e.g. ``results/run.json: No space
    left on device``), same ``errno``; ``error`` itself if it already names ``path``."""
    text = error.strerror or str(error) or type(error).__name__
    if error.filename is not None and str(error.filename) == str(path):
        return error
    named = OSError(f"{path}: {text}{note}")  # one argument: str() is the message, no "[Errno N]" before the path
    named.errno = error.errno  # (strerror left unset: str() would become "[Errno N] <strerror>")
    return named


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


def write_atomic(path: str | os.PathLike, data: bytes, *, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path`` as a :class:`~pathlib.Path`.

    The bytes go to a hidden temporary file in the same folder (``.<name>.<random>.tmp``), are
    flushed to disk, get permissions ``mode`` (default :func:`file_mode`: ``0o666 & ~umask``), and the
    file is renamed over ``path``; then the folder is flushed. Missing parent folders are created. On any
    error (including ``KeyboardInterrupt``) the temporary file is removed and ``path`` is untouched; an
    ``OSError`` (a full disk, a read-only folder) is raised again naming ``path``, its ``errno`` kept.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise named_os_error(error, path) from error
    os.close(handle)
    try:
        write_synced(tmp, data)
        os.chmod(tmp, file_mode() if mode is None else mode)
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise named_os_error(error, path, " (nothing was written)") from error
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
