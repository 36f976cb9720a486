"""Output folders the command line can share safely: a lock per folder, no silent overwrite.

* **Lock.** While ``topogrow run``/``compare``/``transfer`` writes into a folder, the folder holds
  ``.topogrow.lock`` (JSON: pid, host, start time, command), created atomically
  (``O_CREAT | O_EXCL``). A second command on the same folder refuses at once, naming the process
  that holds it. A lock left by a process that no longer runs (on this host) is taken over with a
  warning. The lock is removed when the command ends, also on errors and Ctrl-C.
* **This run's folder.** ``--out`` is used as it is when it does not exist, is empty, or when
  ``run --resume`` points into it (``--resume <out>/checkpoints``: the run continues its own
  checkpoints and replaces its own results). Anything else in it (another run's ``run.json``, files
  topogrow did not write) makes the command refuse, unless ``--overwrite``: then the files this verb
  writes (:data:`OUTPUTS`; ``checkpoints/`` keeps only the new run's ``ckpt-*`` folders) are
  replaced, and every other file is left alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from topogrow._io import named_os_error

__all__ = ["LOCK_NAME", "OUTPUTS", "FolderInUse", "check_folder", "locked"]

#: The lock file's name in an output folder.
LOCK_NAME = ".topogrow.lock"

#: The files (and folders) each verb writes in its ``--out``: what ``--overwrite`` replaces.
OUTPUTS: dict[str, tuple[str, ...]] = {
    "run": ("run.json", "run.png", "model.json", "model.safetensors", "checkpoints"),
    "compare": ("compare.json", "compare.png", "compare.md"),
    "transfer": ("transfer.json", "transfer.md", "transfer.png"),
}


class FolderInUse(ValueError):
    """Another live process holds the folder's lock (the command line says so in one line, exit 2)."""


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it runs
        return True
    except OSError:
        return True  # cannot tell: assume it runs (never take over a live lock)
    return True


def _read_lock(path: Path) -> dict | None:
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _holder_text(folder: Path, holder: dict | None) -> str:
    if holder is None:
        return (
            f"{folder} is in use: its lock {folder / LOCK_NAME} cannot be read (a command starting now?); "
            "remove the file if no topogrow command writes there"
        )
    host = holder.get("host")
    on = f" on {host}" if host and host != socket.gethostname() else ""
    return (
        f"{folder} is in use by process {holder.get('pid')}{on} since {holder.get('started')} ({holder.get('command')})"
    )


def _create(path: Path, record: dict) -> bool:
    """Create the lock file ``path`` holding ``record``; ``False`` if it exists already."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)  # 0666 & ~umask
    except FileExistsError:
        return False
    except OSError as error:
        raise named_os_error(error, path) from error
    try:
        os.write(fd, json.dumps(record).encode())
        os.fsync(fd)
    except OSError as error:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise named_os_error(error, path) from error
    os.close(fd)
    return True


def acquire(folder: Path, command: str) -> tuple[Path, str, bool]:
    """Lock ``folder`` (created if missing) for ``command``; returns the lock file, this lock's token and
    whether the folder was created.
    Raises :class:`FolderInUse` if a live process holds it; takes over a dead process's lock (warning)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder}: not a folder")
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise named_os_error(error, folder) from error
    path = folder / LOCK_NAME
    token = secrets.token_hex(8)
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": command,
        "token": token,
    }
    if _create(path, record):
        return path, token, created
    holder = _read_lock(path)
    stale = (
        holder is not None
        and holder.get("host") == socket.gethostname()
        and isinstance(holder.get("pid"), int)
        and not _alive(holder["pid"])
    )
    if not stale:
        raise FolderInUse(_holder_text(folder, holder))
    print(
        f"topogrow: warning: taking over the lock of {folder} left by process {holder['pid']}, which no longer "
        f"runs (since {holder.get('started')}: {holder.get('command')})",
        file=sys.stderr,
    )
    # Move the stale lock aside first: of two commands taking it over at once, one renames it, the other fails.
    aside = path.with_name(f"{LOCK_NAME}.{token}.stale")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        pass  # another command took it over (its lock is checked below)
    else:
        aside.unlink(missing_ok=True)
    if _create(path, record):
        return path, token, created
    raise FolderInUse(_holder_text(folder, _read_lock(path)))


def release(path: Path, token: str, created: bool = False) -> None:
    """Remove the lock file ``path`` if it is still this command's (``token``), and its folder if this
    command ``created`` it and left it empty (a command that failed before writing anything)."""
    holder = _read_lock(path)
    if holder is not None and holder.get("token") == token:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        if created:
            with contextlib.suppress(OSError):  # not empty: results were written
                path.parent.rmdir()


@contextlib.contextmanager
def locked(*folders: Path, command: str) -> Iterator[None]:
    """Hold the lock of each of ``folders`` (duplicates once) while the block runs; released in any case."""
    held: list[tuple[Path, str, bool]] = []
    seen: set[Path] = set()
    try:
        for folder in folders:
            key = Path(os.path.abspath(folder))
            if key in seen:
                continue
            seen.add(key)
            held.append(acquire(folder, command))
        yield
    finally:
        for path, token, created in reversed(held):
            release(path, token, created)


def check_folder(folder: Path, verb: str, *, overwrite: bool, own: bool = False) -> None:
    """Refuse to write ``verb``'s results into a non-empty ``folder`` that is not this run's (``own``)
    unless ``overwrite``; with ``overwrite``, remove the files ``verb`` writes (:data:`OUTPUTS`, but
    ``checkpoints/``, whose old ``ckpt-*`` the new run replaces itself) and keep every other file."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    entries = sorted(p.name for p in folder.iterdir() if p.name != LOCK_NAME)
    if not entries or own:
        return
    if not overwrite:
        ours = [name for name in entries if any(name in names for names in OUTPUTS.values())]
        foreign = [name for name in entries if name not in ours]
        shown = ", ".join((ours + foreign)[:5]) + (", ..." if len(entries) > 5 else "")
        what = "another run's results" if ours else "files topogrow did not write"
        raise ValueError(
            f"{folder} is not empty: it holds {what} ({shown}); give --overwrite to replace the files topogrow "
            "writes there (other files are kept), or choose another --out"
        )
    for name in OUTPUTS[verb]:
        target = folder / name
        if name != "checkpoints" and target.is_file():
            try:
                target.unlink()
            except OSError as error:
                raise named_os_error(error, target) from error
