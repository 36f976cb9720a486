"""Callbacks' and schedulers' ``state_dict()``s as JSON plus tensors: :func:`encode_state` and its
inverse :func:`decode_state`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from topogrow.nn.serialization import CheckpointError

__all__ = ["decode_state", "encode_state"]


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
