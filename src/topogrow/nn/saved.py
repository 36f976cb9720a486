"""A grown model on disk: ``model.json`` (class, spec, dtype, preprocessing, the weights' checksum) and
``model.safetensors`` (the weights). :func:`save` writes them; a checkpoint holds the same two files;
:func:`topogrow.load <topogrow.growth.load>` reads either (and a run's checkpoint directory)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from topogrow._io import write_atomic as _write_atomic
from topogrow.nn.adapter import GrowableNetwork
from topogrow.nn.growable import MODELS
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

__all__ = ["MODEL_CLASSES", "check_rebuildable", "save"]

MODEL_FORMAT = "topogrow-model"


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


def model_record(model: nn.Module) -> dict[str, Any]:
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


def build_model(record: dict[str, Any], path: Path, device: torch.device | str | None = "cpu") -> nn.Module:
    """The model of a ``model.json`` record, freshly built (the global RNG is left untouched)."""
    name = get_field(record, "class", str, path)
    spec = get_field(record, "spec", dict, path)
    dtype_name = get_field(record, "dtype", str, path)
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


def load_weights(model: nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
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
    record = model_record(model)
    rebuilt = build_model(record, Path("model.json"))
    have = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    built = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
    if have != built:
        differ = sorted(set(have) ^ set(built)) or sorted(k for k in have if have[k] != built[k])
        raise TypeError(
            f"cannot checkpoint this {record['class']}: its spec() does not describe every layer "
            f"(e.g. {differ[0]}); insert blocks as ResidualBlock(block, name=...) with a registered name"
        )
    return record


def model_files(model: nn.Module, record: dict[str, Any] | None = None) -> dict[str, bytes]:
    record = dict(record or model_record(model))
    weights = tensor_bytes(model.state_dict(), metadata={"format": MODEL_FORMAT})
    record = {"format": MODEL_FORMAT, "version": VERSION, **record, "weights": digest(weights)}
    return {"model.json": json_bytes(record), "model.safetensors": weights}


def read_model(folder: Path, files: dict[str, bytes] | None, device) -> nn.Module:
    json_path, weights_path = folder / "model.json", folder / "model.safetensors"
    record = parse_json(json_path, files["model.json"] if files else read_file(json_path, "the architecture"))
    if record.get("format") != MODEL_FORMAT:
        raise CheckpointError(f"{json_path}: not a topogrow model description (format {record.get('format')!r})")
    if record.get("version") != VERSION:
        raise CheckpointError(f"{json_path}: format version {record.get('version')!r}, this topogrow reads {VERSION}")
    weights = files["model.safetensors"] if files else read_file(weights_path, "the weights")
    check_digest(weights_path, weights, record.get("weights"))
    model = build_model(record, json_path, device)
    load_weights(model, parse_tensors(weights_path, weights), weights_path)
    return model


def save(model: nn.Module, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Save a (grown) model for inference: ``path/model.json`` (architecture, the model's
    ``preprocessing`` and the JSON-able ``metadata``, e.g. versions, command line and config) and
    ``path/model.safetensors`` (weights), each written atomically. Returns ``path``.

    Read it back with :func:`topogrow.load <topogrow.growth.load>`. The model must be of a class
    registered in :data:`topogrow.nn.MODELS` (``ResidualMLP``, ``ResidualCNN``, ``ViT``, or one added
    with ``register_model``) whose layers its ``spec()`` describes; a network of your own modules
    (:func:`topogrow.nn.as_growable`) is saved as ``model.state_dict()`` instead.
    """
    path = Path(path)
    record = check_rebuildable(model)
    if metadata is not None:
        record["metadata"] = json.loads(json.dumps(metadata))
    files = model_files(model, record)
    _write_atomic(path / "model.safetensors", files["model.safetensors"])
    _write_atomic(path / "model.json", files["model.json"])
    return path
