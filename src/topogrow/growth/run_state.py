"""What a run checkpoint holds besides the network: :class:`Checkpoint` (all of it, read back), and the
optimiser's and the random generators' states as payloads (tensors for safetensors, the rest as JSON)
and back into a live run."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from topogrow.growth.config import GrowthConfig
from topogrow.growth.history import GrowthHistory
from topogrow.nn.serialization import CheckpointError

__all__ = ["Checkpoint", "load_optimizer_state", "optimizer_payload", "restore_rng", "rng_payload"]

#: Between a parameter's name and its state key in ``optimizer.safetensors``: ``"<parameter>::exp_avg"``.
STATE_SEPARATOR = "::"


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
                    tensors[f"{names[id(p)]}{STATE_SEPARATOR}{key}"] = value
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
