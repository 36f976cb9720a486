"""Add parameters to a live optimiser and its learning-rate scheduler, and take them out again.

After an insertion the new layer's parameters join the optimiser as a group of their own that
copies every hyper-parameter of an existing group as it is *now*: the current learning rate, and
every key a scheduler put there (``initial_lr``, ``max_lr``, ``min_lr``, momenta). The
scheduler's per-group lists (``base_lrs``, ``lr_lambdas``, ``min_lrs``, ...) are extended with
that group's entry, in nested schedulers too (``SequentialLR``, ``ChainedScheduler``), so the new
group follows the same schedule from the same point: nothing restarts, and the old parameters
keep their optimiser state. :func:`remove_parameters` undoes it (a rollback); :func:`snapshot`
and :func:`restore` keep and put back the network and its optimiser state around a trial.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch

__all__ = ["add_parameters", "parameters_outside", "remove_parameters", "restore", "snapshot"]

#: The scheduler attributes that hold one entry per parameter group (torch.optim.lr_scheduler).
PER_GROUP = ("base_lrs", "_last_lr", "lr_lambdas", "min_lrs", "max_lrs", "base_momentums", "max_momentums")


def _schedulers(scheduler: Any) -> list[Any]:
    """``scheduler`` and the schedulers it chains (``SequentialLR``, ``ChainedScheduler``)."""
    if scheduler is None:
        return []
    nested = [s for child in getattr(scheduler, "_schedulers", []) for s in _schedulers(child)]
    return [scheduler, *nested]


def add_parameters(
    optimizer: torch.optim.Optimizer,
    parameters: Iterable[torch.nn.Parameter],
    scheduler: Any = None,
    like: int = 0,
) -> int:
    """Add ``parameters`` to ``optimizer`` as a new group with group ``like``'s current
    hyper-parameters, and extend ``scheduler``'s per-group lists with its entries; returns the
    new group's index. Parameters the optimiser already holds are refused (``ValueError``)."""
    parameters = list(parameters)
    groups = optimizer.param_groups
    if not -len(groups) <= like < len(groups):
        raise ValueError(f"like={like}: the optimiser has {len(groups)} parameter groups")
    held = {id(p) for group in groups for p in group["params"]}
    if any(id(p) in held for p in parameters):
        raise ValueError("some of the parameters are already in the optimiser")
    template = {key: copy.deepcopy(value) for key, value in groups[like].items() if key != "params"}
    n_before = len(groups)
    optimizer.add_param_group({**template, "params": parameters})
    for child in _schedulers(scheduler):
        for name in PER_GROUP:
            values = getattr(child, name, None)
            if isinstance(values, list) and len(values) == n_before:
                values.append(copy.copy(values[like]))
    return len(groups) - 1


def remove_parameters(
    optimizer: torch.optim.Optimizer, parameters: Iterable[torch.nn.Parameter], scheduler: Any = None
) -> None:
    """Take ``parameters`` out of ``optimizer`` (their state too), dropping groups left empty and
    their entries in ``scheduler``'s per-group lists."""
    gone = {id(p) for p in parameters}
    n_before = len(optimizer.param_groups)
    emptied = []
    for index, group in enumerate(optimizer.param_groups):
        for p in group["params"]:
            if id(p) in gone:
                optimizer.state.pop(p, None)
        group["params"] = [p for p in group["params"] if id(p) not in gone]
        if not group["params"]:
            emptied.append(index)
    for index in reversed(emptied):
        del optimizer.param_groups[index]
        for child in _schedulers(scheduler):
            for name in PER_GROUP:
                values = getattr(child, name, None)
                if isinstance(values, list) and len(values) == n_before:
                    del values[index]
        n_before -= 1


def snapshot(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Copies of the model's weights, the optimiser's state of each parameter (by name) and which
    parameters train (:func:`restore` puts them back on a model of the same architecture)."""
    names = {id(p): name for name, p in model.named_parameters()}
    return {
        "weights": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "optimizer": {names[id(p)]: copy.deepcopy(state) for p, state in optimizer.state.items() if id(p) in names},
        "trainable": [name for name, p in model.named_parameters() if p.requires_grad],
    }


def restore(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, kept: dict[str, Any]) -> None:
    """Put a :func:`snapshot` back: weights, which parameters train, and each parameter's optimiser
    state. The optimiser and the scheduler stay live: parameters the model no longer has leave them
    (a removed layer's group goes), and every group keeps its current rate."""
    model.load_state_dict(kept["weights"])
    trainable = set(kept["trainable"])
    parameters = dict(model.named_parameters())
    for name, parameter in parameters.items():
        parameter.requires_grad_(name in trainable)
    alive = {id(p) for p in parameters.values()}
    held = [p for group in optimizer.param_groups for p in group["params"]]
    remove_parameters(optimizer, [p for p in held if id(p) not in alive], scheduler)
    for name, parameter in parameters.items():
        state = kept["optimizer"].get(name)
        if state is None:
            optimizer.state.pop(parameter, None)
        else:
            optimizer.state[parameter] = copy.deepcopy(state)


def parameters_outside(optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The model's trainable parameters, by name, that are in no group of ``optimizer`` (they would never train)."""
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad and id(p) not in held]
