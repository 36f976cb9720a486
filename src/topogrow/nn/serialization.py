"""The bytes of checkpoints and saved models: JSON and safetensors (nothing is unpickled), each file's
size and SHA-256, and :class:`CheckpointError`, which names the file and what is wrong with it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

__all__ = ["VERSION", "CheckpointError"]

#: The format version checkpoints and saved models are written in, and the only one read.
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint or saved model that cannot be read: the message names the file and what is wrong."""


def json_bytes(payload: Any) -> bytes:
    return (json.dumps(payload, indent=1, allow_nan=True) + "\n").encode()


def digest(data: bytes) -> dict[str, Any]:
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def read_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing ({what})") from None
    except OSError as error:
        raise CheckpointError(f"{path}: cannot be read ({error.strerror or error})") from None


def check_digest(path: Path, data: bytes, expected: Any) -> None:
    if not isinstance(expected, dict) or not isinstance(expected.get("size"), int):
        raise CheckpointError(f"{path}: no size and SHA-256 recorded for it")
    size = expected["size"]
    if len(data) < size:
        raise CheckpointError(f"{path}: truncated: {len(data)} bytes, {size} expected")
    if len(data) > size:
        raise CheckpointError(f"{path}: {len(data)} bytes, {size} expected (the file was changed after it was written)")
    if hashlib.sha256(data).hexdigest() != expected.get("sha256"):
        raise CheckpointError(f"{path}: corrupt: its SHA-256 does not match the one recorded when it was written")


def parse_json(path: Path, data: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(data.decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(payload).__name__}")
    return payload


def tensor_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    from safetensors.torch import save

    return save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata)


def parse_tensors(path: Path, data: bytes) -> dict[str, torch.Tensor]:
    from safetensors.torch import load as load_tensors

    try:
        return load_tensors(data)
    except Exception as error:  # safetensors raises its own SafetensorError (and others) on bad input
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointError(f"{path}: not a valid safetensors file ({message})") from None


def get_field(payload: dict[str, Any], key: str, kind: type | tuple[type, ...], path: Path) -> Any:
    if key not in payload:
        raise CheckpointError(f"{path}: no {key!r} entry")
    value = payload[key]
    if not isinstance(value, kind):
        raise CheckpointError(f"{path}: {key!r} has the wrong type ({type(value).__name__})")
    return value
