"""Checkpoints of a growth run, and grown models saved for inference: JSON and safetensors only.

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

A model saved with :func:`save` is a folder with ``model.json`` and ``model.safetensors``;
:func:`load` reads that, a checkpoint, or a checkpoint directory (its newest checkpoint).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from topogrow._io import dir_mode as _dir_mode
from topogrow._io import fsync_dir as _fsync_dir
from topogrow._io import named_os_error as _named_os_error
from topogrow._io import write_atomic as _write_atomic
from topogrow._io import write_synced as _write_bytes
from topogrow._validation import check_int
from topogrow.growth.config import GrowthConfig
from topogrow.growth.history import GrowthHistory
from topogrow.nn.adapter import GrowableNetwork
from topogrow.nn.growable import MODELS

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "Checkpointer",
    "MODEL_CLASSES",
    "find_checkpoint",
    "load",
    "read_checkpoint",
    "save",
]

CHECKPOINT_FORMAT = "topogrow-checkpoint"
MODEL_FORMAT = "topogrow-model"
VERSION = 1
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
_STATE_SEPARATOR = "::"


class CheckpointError(ValueError):
    """A checkpoint or saved model that cannot be read: the message names the file and what is wrong."""


def _model_classes() -> dict[str, type[nn.Module]]:
    """The classes registered in :data:`topogrow.nn.MODELS`, by class name (what ``model.json`` stores)."""
    return {cls.__name__: cls for cls in MODELS.values()}


class _ModelClasses(Mapping[str, type[nn.Module]]):
    """A live view of :func:`_model_classes`: a model registered later is saved and loaded too."""

    def __getitem__(self, name: str) -> type[nn.Module]:
        return _model_classes()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(_model_classes())

    def __len__(self) -> int:
        return len(_model_classes())


#: Model classes a checkpoint can rebuild from ``{"class": name, "spec": model.spec()}``:
#: every model in :data:`topogrow.nn.MODELS`, by class name.
MODEL_CLASSES: Mapping[str, type[nn.Module]] = _ModelClasses()


# ------------------------------------------------------------------ files
def _json_bytes(payload: Any) -> bytes:
    return (json.dumps(payload, indent=1, allow_nan=True) + "\n").encode()


def _digest(data: bytes) -> dict[str, Any]:
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing ({what})") from None
    except OSError as error:
        raise CheckpointError(f"{path}: cannot be read ({error.strerror or error})") from None


def _check_digest(path: Path, data: bytes, expected: Any) -> None:
    if not isinstance(expected, dict) or not isinstance(expected.get("size"), int):
        raise CheckpointError(f"{path}: no size and SHA-256 recorded for it")
    size = expected["size"]
    if len(data) < size:
        raise CheckpointError(f"{path}: truncated: {len(data)} bytes, {size} expected")
    if len(data) > size:
        raise CheckpointError(f"{path}: {len(data)} bytes, {size} expected (the file was changed after it was written)")
    if hashlib.sha256(data).hexdigest() != expected.get("sha256"):
        raise CheckpointError(f"{path}: corrupt: its SHA-256 does not match the one recorded when it was written")


def _parse_json(path: Path, data: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(data.decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(payload).__name__}")
    return payload


def _tensor_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    from safetensors.torch import save

    return save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata)


def _parse_tensors(path: Path, data: bytes) -> dict[str, torch.Tensor]:
    from safetensors.torch import load as load_tensors

    try:
        return load_tensors(data)
    except Exception as error:  # safetensors raises its own SafetensorError (and others) on bad input
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointError(f"{path}: not a valid safetensors file ({message})") from None


def _field(payload: dict[str, Any], key: str, kind: type | tuple[type, ...], path: Path) -> Any:
    if key not in payload:
        raise CheckpointError(f"{path}: no {key!r} entry")
    value = payload[key]
    if not isinstance(value, kind):
        raise CheckpointError(f"{path}: {key!r} has the wrong type ({type(value).__name__})")
    return value


# ------------------------------------------------------------------ models
def _model_record(model: nn.Module) -> dict[str, Any]:
    """``{"class", "spec", "dtype"}`` of a model a checkpoint can rebuild; raises if it cannot."""
    name = type(model).__name__
    if isinstance(model, GrowableNetwork):
        raise TypeError(
            f"cannot save a {name} (your own modules, made growable by as_growable): a checkpoint cannot rebuild "
            "them; save model.state_dict() with torch.save and load it into as_growable(...) built as before"
        )
    if MODEL_CLASSES.get(name) is not type(model) or not callable(getattr(model, "spec", None)):
        raise TypeError(f"cannot save a {name}: checkpoints rebuild {', '.join(MODEL_CLASSES)} from their spec()")
    parameter = next(model.parameters())
    spec = json.loads(json.dumps(model.spec()))
    if spec.get("activation") == "custom":
        raise TypeError(
            f"cannot save a {name} with a custom activation module: a checkpoint rebuilds the activation by "
            "name (use 'silu-tanh' or 'z-tanh')"
        )
    record = {"class": name, "spec": spec, "dtype": str(parameter.dtype).removeprefix("torch.")}
    preprocessing = getattr(model, "preprocessing", None)
    if preprocessing is not None:
        record["preprocessing"] = json.loads(json.dumps(preprocessing))
    return record


def _build(record: dict[str, Any], path: Path, device: torch.device | str | None = "cpu") -> nn.Module:
    """The model of a ``model.json`` record, freshly built (the global RNG is left untouched)."""
    name = _field(record, "class", str, path)
    spec = _field(record, "spec", dict, path)
    dtype_name = _field(record, "dtype", str, path)
    cls = MODEL_CLASSES.get(name)
    if cls is None:
        raise CheckpointError(f"{path}: unknown model class {name!r}; expected one of: {', '.join(MODEL_CLASSES)}")
    dtype = getattr(torch, dtype_name, None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise CheckpointError(f"{path}: unknown floating dtype {dtype_name!r}")
    try:
        with torch.random.fork_rng(devices=[]):
            model = cls(**spec)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: the spec does not build a {name}: {error}") from None
    preprocessing = record.get("preprocessing")
    if preprocessing is not None and not isinstance(preprocessing, dict):
        raise CheckpointError(f"{path}: preprocessing must be an object, got {type(preprocessing).__name__}")
    model.preprocessing = preprocessing
    return model.to(device=device or "cpu", dtype=dtype)


def _load_weights(model: nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """``load_state_dict(strict=True)``, with the mismatch said in one line naming ``path``."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {missing[:3]}{' ...' if len(missing) > 3 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:3]}{' ...' if len(unexpected) > 3 else ''}")
        raise CheckpointError(f"{path}: the weights do not fit the architecture ({'; '.join(parts)})")
    for key, value in tensors.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise CheckpointError(
                f"{path}: {key} has shape {tuple(value.shape)}, the architecture needs {tuple(expected[key].shape)}"
            )
    model.load_state_dict(tensors, strict=True)


def check_rebuildable(model: nn.Module) -> dict[str, Any]:
    """The model's record, after checking that the spec rebuilds the same parameter names and shapes."""
    record = _model_record(model)
    rebuilt = _build(record, Path("model.json"))
    have = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    built = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
    if have != built:
        differ = sorted(set(have) ^ set(built)) or sorted(k for k in have if have[k] != built[k])
        raise TypeError(
            f"cannot checkpoint this {record['class']}: its spec() does not describe every layer "
            f"(e.g. {differ[0]}); insert blocks as ResidualBlock(block, name=...) with a registered name"
        )
    return record


def _model_files(model: nn.Module, record: dict[str, Any] | None = None) -> dict[str, bytes]:
    record = dict(record or _model_record(model))
    weights = _tensor_bytes(model.state_dict(), metadata={"format": MODEL_FORMAT})
    record = {"format": MODEL_FORMAT, "version": VERSION, **record, "weights": _digest(weights)}
    return {"model.json": _json_bytes(record), "model.safetensors": weights}


def _read_model(folder: Path, files: dict[str, bytes] | None, device) -> nn.Module:
    json_path, weights_path = folder / "model.json", folder / "model.safetensors"
    record = _parse_json(json_path, files["model.json"] if files else _read(json_path, "the architecture"))
    if record.get("format") != MODEL_FORMAT:
        raise CheckpointError(f"{json_path}: not a topogrow model description (format {record.get('format')!r})")
    if record.get("version") != VERSION:
        raise CheckpointError(f"{json_path}: format version {record.get('version')!r}, this topogrow reads {VERSION}")
    weights = files["model.safetensors"] if files else _read(weights_path, "the weights")
    _check_digest(weights_path, weights, record.get("weights"))
    model = _build(record, json_path, device)
    _load_weights(model, _parse_tensors(weights_path, weights), weights_path)
    return model


def save(model: nn.Module, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Save a (grown) model for inference: ``path/model.json`` (architecture, the model's
    ``preprocessing`` and the JSON-able ``metadata``, e.g. versions, command line and config) and
    ``path/model.safetensors`` (weights), each written atomically. Returns ``path``.

    Read it back with :func:`load`. The model must be of a class registered in
    :data:`topogrow.nn.MODELS` (``ResidualMLP``, ``ResidualCNN``, ``ViT``, or one added
    with ``register_model``) whose layers its ``spec()`` describes; a network of your own modules
    (:func:`topogrow.nn.as_growable`) is saved as ``model.state_dict()`` instead.
    """
    path = Path(path)
    record = check_rebuildable(model)
    if metadata is not None:
        record["metadata"] = json.loads(json.dumps(metadata))
    files = _model_files(model, record)
    _write_atomic(path / "model.safetensors", files["model.safetensors"])
    _write_atomic(path / "model.json", files["model.json"])
    return path


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
        return _read_model(path, None, device).eval()
    checkpoint = find_checkpoint(path)
    if checkpoint is None:
        raise FileNotFoundError(f"{path}: no model.json and no checkpoint (ckpt-NNNNNN folder) in it")
    files = _read_checkpoint_files(checkpoint)
    return _read_model(checkpoint, files, device).eval()


# ------------------------------------------------------------- checkpoints
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
    manifest = _parse_json(manifest_path, _read(manifest_path, "the checkpoint is incomplete"))
    if manifest.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{manifest_path}: not a topogrow checkpoint (format {manifest.get('format')!r})")
    if manifest.get("version") != VERSION:
        raise CheckpointError(
            f"{manifest_path}: checkpoint format version {manifest.get('version')!r}, this topogrow reads {VERSION}"
        )
    listed = _field(manifest, "files", dict, manifest_path)
    files = {}
    for name in CHECKPOINT_FILES:
        if name not in listed:
            raise CheckpointError(f"{manifest_path}: does not list {name}")
        data = _read(folder / name, "the checkpoint is incomplete")
        _check_digest(folder / name, data, listed[name])
        files[name] = data
    return files


@dataclass
class Checkpoint:
    """Everything read back from one checkpoint folder (see :func:`read_checkpoint`)."""

    path: Path
    model: nn.Module
    config: GrowthConfig
    loss: str | None
    progress: dict[str, Any]
    history: GrowthHistory
    callbacks: dict[str, dict[str, Any]]  # each stateful callback's state_dict(), by key (tensors decoded)
    optimizer: dict[str, Any]  # {"groups": [...], "state": {param name: {key: tensor or number}}}
    generators: dict[str, torch.Tensor]  # generator states by name ("torch", "grower", "train", "cuda:0", ...)
    numpy_state: dict[str, Any] | None = None
    python_state: list[Any] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    scheduler: dict[str, Any] | None = None  # the learning-rate scheduler's state_dict() (None: constant rate)


def read_checkpoint(path: str | Path, device: str | torch.device | None = "cpu") -> Checkpoint:
    """Read and check one checkpoint (or the newest in a checkpoint directory).

    Raises :class:`CheckpointError` naming the file when one is missing, truncated,
    corrupt or inconsistent, and ``FileNotFoundError`` when there is no checkpoint.
    """
    folder = find_checkpoint(path)
    if folder is None:
        raise FileNotFoundError(f"{path}: no checkpoint (ckpt-NNNNNN folder) in it")
    files = _read_checkpoint_files(folder)
    model = _read_model(folder, files, device)
    trainer_path = folder / "trainer.json"
    trainer = _parse_json(trainer_path, files["trainer.json"])
    try:
        config = GrowthConfig.from_saved(_field(trainer, "config", dict, trainer_path))
        history = GrowthHistory.from_dict(_field(trainer, "history", dict, trainer_path))
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{trainer_path}: {error}") from None
    loss = trainer.get("loss")
    progress = _field(trainer, "progress", dict, trainer_path)
    _check_progress(progress, trainer_path)
    optimizer_json = _field(trainer, "optimizer", dict, trainer_path)
    state_path = folder / "optimizer.safetensors"
    state: dict[str, dict[str, Any]] = {}
    for key, tensor in _parse_tensors(state_path, files["optimizer.safetensors"]).items():
        name, sep, item = key.rpartition(_STATE_SEPARATOR)
        if not sep:
            raise CheckpointError(f"{state_path}: unexpected entry {key!r} (expected '<parameter>::<state>')")
        state.setdefault(name, {})[item] = tensor
    for name, values in _field(optimizer_json, "scalars", dict, trainer_path).items():
        state.setdefault(name, {}).update(values)
    callback_path = folder / "callbacks.safetensors"
    callback_tensors = _parse_tensors(callback_path, files["callbacks.safetensors"])
    rng_path = folder / "rng.safetensors"
    generators = _parse_tensors(rng_path, files["rng.safetensors"])
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
        callbacks=decode_state(_field(trainer, "callbacks", dict, trainer_path), callback_tensors, callback_path),
        scheduler=decode_state(trainer.get("scheduler"), callback_tensors, callback_path),
        optimizer={"groups": _field(optimizer_json, "groups", list, trainer_path), "state": state},
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
        value = _field(progress, key, kind, path)
        if isinstance(value, bool):
            raise CheckpointError(f"{path}: progress {key!r} has the wrong type (bool)")
    if progress["phase"] not in ("grow", "final", "done"):
        raise CheckpointError(f"{path}: unknown phase {progress['phase']!r}")


def optimizer_payload(optimizer: torch.optim.Optimizer, model: nn.Module) -> tuple[dict[str, torch.Tensor], dict]:
    """The optimiser's state as tensors keyed ``"<parameter name>::<key>"`` plus a JSON part
    (hyper-parameters of each group with parameter names, non-tensor state values)."""
    names = {id(p): name for name, p in model.named_parameters()}
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    groups = []
    for group in optimizer.param_groups:
        missing = [p for p in group["params"] if id(p) not in names]
        if missing:
            raise ValueError("the optimiser holds parameters that are not the model's")
        hyper = {k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items() if k != "params"}
        groups.append({**hyper, "params": [names[id(p)] for p in group["params"]]})
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                if isinstance(value, torch.Tensor):
                    tensors[f"{names[id(p)]}{_STATE_SEPARATOR}{key}"] = value
                else:
                    scalars.setdefault(names[id(p)], {})[key] = value
    return tensors, {"type": type(optimizer).__name__, "groups": groups, "scalars": scalars}


def load_optimizer_state(
    optimizer: torch.optim.Optimizer, model: nn.Module, saved: dict[str, Any], where: Path
) -> None:
    """Put a checkpoint's optimiser state (see :func:`optimizer_payload`) into ``optimizer``,
    whose parameter groups must hold the same parameters, in the same order."""
    names = {id(p): name for name, p in model.named_parameters()}
    groups = saved["groups"]
    if len(groups) != len(optimizer.param_groups):
        raise CheckpointError(
            f"{where}: {len(groups)} optimiser parameter groups, the run has {len(optimizer.param_groups)}"
        )
    index, state_dict = 0, {"state": {}, "param_groups": []}
    seen: set[str] = set()
    for saved_group, group in zip(groups, optimizer.param_groups, strict=True):
        have = [names[id(p)] for p in group["params"]]
        if not isinstance(saved_group, dict) or saved_group.get("params") != have:
            raise CheckpointError(f"{where}: the optimiser's parameters do not match the model's")
        hyper = {k: (tuple(v) if isinstance(v, list) else v) for k, v in saved_group.items() if k != "params"}
        indices = []
        for name in have:
            if name in saved["state"]:
                state_dict["state"][index] = dict(saved["state"][name])
                seen.add(name)
            indices.append(index)
            index += 1
        state_dict["param_groups"].append({**group, **hyper, "params": indices})
    unknown = sorted(set(saved["state"]) - seen)
    if unknown:
        raise CheckpointError(f"{where}: optimiser state for unknown parameters {unknown[:3]}")
    optimizer.load_state_dict(state_dict)


def rng_payload(generators: dict[str, torch.Generator]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Generator states as tensors (torch's global CPU RNG as ``"torch"``, CUDA's as ``"cuda:<i>"``,
    plus ``generators``), and numpy's and python's global states as JSON."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda:{i}"] = state
    for name, generator in generators.items():
        tensors[name] = generator.get_state()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return tensors, {
        "numpy_rng": {
            "kind": kind,
            "keys": [int(k) for k in keys],
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python_rng": [version, list(internal), gauss_next],
    }


def restore_rng(checkpoint: Checkpoint, generators: dict[str, torch.Generator]) -> None:
    """Set torch's, numpy's and python's global RNGs and ``generators`` to the checkpoint's states."""
    where = checkpoint.path / "rng.safetensors"
    states = checkpoint.generators
    try:
        torch.set_rng_state(states["torch"])
        for name, generator in generators.items():
            if name in states:
                generator.set_state(states[name])
        cuda = sorted(k for k in states if k.startswith("cuda:"))
        if cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([states[k] for k in cuda[: torch.cuda.device_count()]])
    except (KeyError, RuntimeError) as error:
        raise CheckpointError(f"{where}: a generator state cannot be restored ({error})") from None
    trainer = checkpoint.path / "trainer.json"
    try:
        if checkpoint.numpy_state is not None:
            s = checkpoint.numpy_state
            np.random.set_state(
                (s["kind"], np.asarray(s["keys"], dtype=np.uint32), s["pos"], s["has_gauss"], s["cached"])
            )
        if checkpoint.python_state is not None:
            version, internal, gauss_next = checkpoint.python_state
            random.setstate((version, tuple(internal), gauss_next))
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{trainer}: numpy/python RNG state cannot be restored ({error})") from None


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
        files = _model_files(model)
        opt_tensors, opt_json = optimizer_payload(optimizer, model)
        rng_tensors, rng_json = rng_payload(generators)
        trainer = {**trainer, "optimizer": opt_json, **rng_json}
        files["optimizer.safetensors"] = _tensor_bytes(opt_tensors)
        files["rng.safetensors"] = _tensor_bytes(rng_tensors)
        files["callbacks.safetensors"] = _tensor_bytes(tensors or {})
        files["trainer.json"] = _json_bytes(trainer)
        name = f"ckpt-{self.next_index:06d}"
        manifest = {
            "format": CHECKPOINT_FORMAT,
            "version": VERSION,
            "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **summary,
            "files": {k: _digest(v) for k, v in files.items()},
        }
        final = self.directory / name
        try:
            tmp = Path(tempfile.mkdtemp(dir=self.directory, prefix=f".{name}.", suffix=".tmp"))
        except OSError as error:
            raise _named_os_error(error, final, " (the checkpoint was not written)") from error
        current = final
        try:
            os.chmod(tmp, _dir_mode())  # mkdtemp's folder is private (0700): follow the umask as mkdir does
            for file_name, data in (*files.items(), (MANIFEST, _json_bytes(manifest))):
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


def encode_state(state: Any, tensors: dict[str, torch.Tensor], path: str = "") -> Any:
    """``state`` (e.g. callbacks' ``state_dict()``s) as JSON: each tensor moves into ``tensors``
    (under its path) and is replaced by ``{"__tensor__": path}``; dicts with non-string keys
    (an optimiser's state), tuples and non-finite floats are spelled out. :func:`decode_state`
    is the inverse."""
    if isinstance(state, torch.Tensor):
        tensors[path] = state.detach().cpu().contiguous().clone()
        return {"__tensor__": path}
    if isinstance(state, dict):
        if all(isinstance(key, str) and not key.startswith("__") for key in state):
            return {key: encode_state(value, tensors, f"{path}/{key}") for key, value in state.items()}
        return {"__items__": [[key, encode_state(v, tensors, f"{path}/{key}")] for key, v in state.items()]}
    if isinstance(state, (list, tuple)):
        items = [encode_state(value, tensors, f"{path}/{index}") for index, value in enumerate(state)]
        return {"__tuple__": items} if isinstance(state, tuple) else items
    if isinstance(state, float) and not math.isfinite(state):
        return {"__float__": repr(state)}
    return state


def decode_state(state: Any, tensors: dict[str, torch.Tensor], where: Path) -> Any:
    """The inverse of :func:`encode_state` (a missing tensor is a :class:`CheckpointError` naming ``where``)."""
    if isinstance(state, list):
        return [decode_state(value, tensors, where) for value in state]
    if not isinstance(state, dict):
        return state
    if set(state) == {"__tensor__"}:
        if state["__tensor__"] not in tensors:
            raise CheckpointError(f"{where}: has no tensor {state['__tensor__']!r}")
        return tensors[state["__tensor__"]]
    if set(state) == {"__items__"}:
        return {key: decode_state(value, tensors, where) for key, value in state["__items__"]}
    if set(state) == {"__tuple__"}:
        return tuple(decode_state(value, tensors, where) for value in state["__tuple__"])
    if set(state) == {"__float__"}:
        return float(state["__float__"])
    return {key: decode_state(value, tensors, where) for key, value in state.items()}
