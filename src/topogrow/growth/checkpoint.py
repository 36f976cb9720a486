"""Checkpoints of a growth run (one folder each, numbered, written atomically), and :func:`load`.

Nothing here unpickles: architectures are JSON specs (``model.spec()``), tensors are
safetensors files, everything else is JSON. Every file is written to a temporary
name and renamed, so a run killed at any moment (``kill -9`` during a write
included) leaves either the previous checkpoint or the new one, never half of one.

A checkpoint directory (``Grower.fit(checkpoint_dir=...)``, ``topogrow run``'s
``<out>/checkpoints``)::

    DIR/
      ckpt-000007/               one complete checkpoint, written as .ckpt-000007.*.tmp/ and renamed
        manifest.json            format, epoch/stage/phase, and the size and SHA-256 of each file below
        model.json               the architecture: model class, spec, dtype (and the weights' checksum)
        model.safetensors        the weights (``state_dict``; loads with strict key matching)
        optimizer.safetensors    Adam's state per parameter: "<parameter>::exp_avg", "::exp_avg_sq", "::step"
        rng.safetensors          torch's CPU (and CUDA) RNG, the grower's and the data shuffler's generators
        trainer.json             config, loss, progress within the run (phase, stage, epochs of the stage,
                                 best validation loss, stale stages), optimiser parameter groups and
                                 hyper-parameters, the learning-rate scheduler's state, callbacks'
                                 states, numpy/python RNG states, the history, caller's metadata
      ckpt-000008/
      (the newest ``keep`` checkpoints are kept; leftovers of interrupted writes are removed)

A model saved with :func:`~topogrow.nn.saved.save` is a folder with ``model.json`` and
``model.safetensors`` (:mod:`topogrow.nn.saved`); :func:`load` reads that, a checkpoint, or a
checkpoint directory (its newest checkpoint). Beside this module: the bytes and checksums
(:mod:`~topogrow.nn.serialization`), what a checkpoint holds besides the network
(:mod:`~topogrow.growth.run_state`) and the callbacks' states as JSON (:mod:`~topogrow.growth.state_encoding`).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from topogrow._io import dir_mode as _dir_mode
from topogrow._io import fsync_dir as _fsync_dir
from topogrow._io import named_os_error as _named_os_error
from topogrow._io import write_synced as _write_bytes
from topogrow._validation import check_int
from topogrow.growth.config import GrowthConfig
from topogrow.growth.history import GrowthHistory
from topogrow.growth.run_state import STATE_SEPARATOR, Checkpoint, optimizer_payload, rng_payload
from topogrow.growth.state_encoding import decode_state
from topogrow.nn.saved import model_files, read_model
from topogrow.nn.serialization import (
    VERSION,
    CheckpointError,
    check_digest,
    digest,
    get_field,
    json_bytes,
    parse_json,
    parse_tensors,
    read_file,
    tensor_bytes,
)

__all__ = ["Checkpointer", "find_checkpoint", "load", "read_checkpoint"]

CHECKPOINT_FORMAT = "topogrow-checkpoint"
MANIFEST = "manifest.json"
CHECKPOINT_FILES = (
    "model.json",
    "model.safetensors",
    "optimizer.safetensors",
    "rng.safetensors",
    "callbacks.safetensors",
    "trainer.json",
)
_NAME = re.compile(r"ckpt-(\d{6,})")


def load(path: str | Path, device: str | torch.device | None = "cpu") -> nn.Module:
    """Rebuild a grown model, with its weights, in eval mode.

    ``path`` is a folder written by :func:`save` (or its ``model.json``), one
    checkpoint folder (``.../ckpt-000007``), a checkpoint directory (its newest
    checkpoint is used) or a ``topogrow run`` output folder. Only JSON and
    safetensors are read (nothing is unpickled); a missing, truncated or corrupt
    file raises :class:`CheckpointError` naming it.
    """
    path = Path(path)
    if path.is_file():
        if path.name not in ("model.json", "model.safetensors"):
            raise CheckpointError(f"{path}: expected a folder, its model.json or its model.safetensors")
        path = path.parent
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if (path / "model.json").is_file() and not (path / MANIFEST).exists():
        return read_model(path, None, device).eval()
    checkpoint = find_checkpoint(path)
    if checkpoint is None:
        raise FileNotFoundError(f"{path}: no model.json and no checkpoint (ckpt-NNNNNN folder) in it")
    files = _read_checkpoint_files(checkpoint)
    return read_model(checkpoint, files, device).eval()


def _index(path: Path) -> int | None:
    match = _NAME.fullmatch(path.name)
    return int(match.group(1)) if match else None


def _complete(root: Path) -> list[Path]:
    """The checkpoint folders in ``root`` (``ckpt-N``; only complete ones ever get that name), oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _index(p) is not None]
    return sorted(found, key=lambda p: _index(p))


def find_checkpoint(path: str | Path) -> Path | None:
    """The checkpoint folder ``path`` means, or ``None`` if there is none yet.

    ``path`` may be one checkpoint (``ckpt-NNNNNN``), a checkpoint directory (its newest
    checkpoint) or a run's output folder holding ``checkpoints/``. Leftovers of
    interrupted writes (``.ckpt-*.tmp``) are never chosen.
    """
    path = Path(path)
    if not path.exists():
        return None
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a checkpoint folder")
    if _index(path) is not None or (path / MANIFEST).exists():
        return path
    for root in (path, path / "checkpoints"):
        found = _complete(root)
        if found:
            return found[-1]
    return None


def _read_checkpoint_files(folder: Path) -> dict[str, bytes]:
    """Every file of a checkpoint, checked against the manifest's sizes and checksums."""
    manifest_path = folder / MANIFEST
    manifest = parse_json(manifest_path, read_file(manifest_path, "the checkpoint is incomplete"))
    if manifest.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{manifest_path}: not a topogrow checkpoint (format {manifest.get('format')!r})")
    if manifest.get("version") != VERSION:
        raise CheckpointError(
            f"{manifest_path}: checkpoint format version {manifest.get('version')!r}, this topogrow reads {VERSION}"
        )
    listed = get_field(manifest, "files", dict, manifest_path)
    files = {}
    for name in CHECKPOINT_FILES:
        if name not in listed:
            raise CheckpointError(f"{manifest_path}: does not list {name}")
        data = read_file(folder / name, "the checkpoint is incomplete")
        check_digest(folder / name, data, listed[name])
        files[name] = data
    return files


def read_checkpoint(path: str | Path, device: str | torch.device | None = "cpu") -> Checkpoint:
    """Read and check one checkpoint (or the newest in a checkpoint directory).

    Raises :class:`CheckpointError` naming the file when one is missing, truncated,
    corrupt or inconsistent, and ``FileNotFoundError`` when there is no checkpoint.
    """
    folder = find_checkpoint(path)
    if folder is None:
        raise FileNotFoundError(f"{path}: no checkpoint (ckpt-NNNNNN folder) in it")
    files = _read_checkpoint_files(folder)
    model = read_model(folder, files, device)
    trainer_path = folder / "trainer.json"
    trainer = parse_json(trainer_path, files["trainer.json"])
    try:
        config = GrowthConfig.from_saved(get_field(trainer, "config", dict, trainer_path))
        history = GrowthHistory.from_dict(get_field(trainer, "history", dict, trainer_path))
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{trainer_path}: {error}") from None
    loss = trainer.get("loss")
    progress = get_field(trainer, "progress", dict, trainer_path)
    _check_progress(progress, trainer_path)
    optimizer_json = get_field(trainer, "optimizer", dict, trainer_path)
    state_path = folder / "optimizer.safetensors"
    state: dict[str, dict[str, Any]] = {}
    for key, tensor in parse_tensors(state_path, files["optimizer.safetensors"]).items():
        name, sep, item = key.rpartition(STATE_SEPARATOR)
        if not sep:
            raise CheckpointError(f"{state_path}: unexpected entry {key!r} (expected '<parameter>::<state>')")
        state.setdefault(name, {})[item] = tensor
    for name, values in get_field(optimizer_json, "scalars", dict, trainer_path).items():
        state.setdefault(name, {}).update(values)
    callback_path = folder / "callbacks.safetensors"
    callback_tensors = parse_tensors(callback_path, files["callbacks.safetensors"])
    rng_path = folder / "rng.safetensors"
    generators = parse_tensors(rng_path, files["rng.safetensors"])
    for name, tensor in generators.items():
        if tensor.dtype != torch.uint8 or tensor.ndim != 1:
            raise CheckpointError(f"{rng_path}: {name} is not a generator state (uint8 vector)")
    return Checkpoint(
        path=folder,
        model=model,
        config=config,
        loss=loss if isinstance(loss, str) else None,
        progress=progress,
        history=history,
        callbacks=decode_state(get_field(trainer, "callbacks", dict, trainer_path), callback_tensors, callback_path),
        scheduler=decode_state(trainer.get("scheduler"), callback_tensors, callback_path),
        optimizer={"groups": get_field(optimizer_json, "groups", list, trainer_path), "state": state},
        generators=generators,
        numpy_state=trainer.get("numpy_rng"),
        python_state=trainer.get("python_rng"),
        metadata=trainer.get("metadata") or {},
    )


_PROGRESS = {
    "phase": str,
    "stage": int,
    "curve": list,
    "faults": int,
    "final_done": int,
    "elapsed": (float, int),
}


def _check_progress(progress: dict[str, Any], path: Path) -> None:
    for key, kind in _PROGRESS.items():
        value = get_field(progress, key, kind, path)
        if isinstance(value, bool):
            raise CheckpointError(f"{path}: progress {key!r} has the wrong type (bool)")
    if progress["phase"] not in ("grow", "final", "done"):
        raise CheckpointError(f"{path}: unknown phase {progress['phase']!r}")


class Checkpointer:
    """Writes numbered checkpoints into a directory, keeping the newest ``keep``.

    On creation it removes leftovers of interrupted writes and the checkpoints of
    another run: for a fresh run (``resumed_from=None``) every ``ckpt-*`` there; for a
    run that continues ``resumed_from`` (a checkpoint in this directory), those newer
    than it (an abandoned continuation).
    """

    def __init__(self, directory: str | Path, keep: int = 2, resumed_from: Path | None = None) -> None:
        check_int("keep", keep, minimum=1)
        self.directory = Path(directory)
        if self.directory.exists() and not self.directory.is_dir():
            raise ValueError(f"{self.directory}: the checkpoint directory is a file")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        for leftover in self.directory.glob(".ckpt-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        existing = _complete(self.directory)
        same = resumed_from is not None and resumed_from.parent.resolve() == self.directory.resolve()
        limit = _index(resumed_from) if same else None
        for stale in existing:
            if limit is None or _index(stale) > limit:  # another run's, or an abandoned continuation
                self._remove(stale)
        existing = _complete(self.directory)
        self.last: Path | None = existing[-1] if existing else None
        self.next_index = (_index(existing[-1]) + 1) if existing else 1

    def _remove(self, folder: Path) -> None:
        trash = folder.with_name(f".{folder.name}.trash")
        os.rename(folder, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def save(
        self,
        *,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        trainer: dict[str, Any],
        generators: dict[str, torch.Generator],
        summary: dict[str, Any],
        tensors: dict[str, torch.Tensor] | None = None,
    ) -> Path:
        """Write one checkpoint; returns its folder. Refuses non-finite weights (FloatingPointError)."""
        for name, value in model.state_dict().items():
            if value.is_floating_point() and not torch.isfinite(value).all():
                raise FloatingPointError(f"refusing to checkpoint non-finite weights ({name})")
        files = model_files(model)
        opt_tensors, opt_json = optimizer_payload(optimizer, model)
        rng_tensors, rng_json = rng_payload(generators)
        trainer = {**trainer, "optimizer": opt_json, **rng_json}
        files["optimizer.safetensors"] = tensor_bytes(opt_tensors)
        files["rng.safetensors"] = tensor_bytes(rng_tensors)
        files["callbacks.safetensors"] = tensor_bytes(tensors or {})
        files["trainer.json"] = json_bytes(trainer)
        name = f"ckpt-{self.next_index:06d}"
        manifest = {
            "format": CHECKPOINT_FORMAT,
            "version": VERSION,
            "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **summary,
            "files": {k: digest(v) for k, v in files.items()},
        }
        final = self.directory / name
        try:
            tmp = Path(tempfile.mkdtemp(dir=self.directory, prefix=f".{name}.", suffix=".tmp"))
        except OSError as error:
            raise _named_os_error(error, final, " (the checkpoint was not written)") from error
        current = final
        try:
            os.chmod(tmp, _dir_mode())  # mkdtemp's folder is private (0700): follow the umask as mkdir does
            for file_name, data in (*files.items(), (MANIFEST, json_bytes(manifest))):
                current = final / file_name  # named by where it goes: the temporary folder is removed
                _write_bytes(tmp / file_name, data)
            current = final
            _fsync_dir(tmp)
            os.rename(tmp, final)
        except BaseException as error:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(error, OSError):
                raise _named_os_error(
                    error, current, " (the checkpoint was not written; nothing half-written is left)"
                ) from error
            raise
        _fsync_dir(self.directory)
        self.next_index += 1
        self.last = final
        for old in _complete(self.directory)[: -self.keep]:
            self._remove(old)
        return final
