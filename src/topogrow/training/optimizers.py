"""Optimisers by name (one registry: ``"adam"``, ``"adamw"``, ``"sgd"``, or one added with
:func:`register_optimizer`), the factory a run builds its optimiser with, and the optimiser rebuilt
over a changed parameter set with the state of the parameters it already had."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from topogrow._registry import Registry

__all__ = ["OPTIMIZERS", "OptimizerFactory", "optimizer_factory", "rebuild_optimizer", "register_optimizer"]

#: Optimisers by name: ``factory(params, lr, weight_decay) -> torch.optim.Optimizer``.
OPTIMIZERS: Registry = Registry("optimizer")
register_optimizer = OPTIMIZERS.register

OptimizerFactory = Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer]


register_optimizer("adam", torch.optim.Adam, help="Adam (torch.optim.Adam)")
register_optimizer("adamw", torch.optim.AdamW, help="Adam with decoupled weight decay (torch.optim.AdamW)")
register_optimizer("sgd", torch.optim.SGD, help="stochastic gradient descent (torch.optim.SGD)")


def optimizer_factory(
    optimizer: str | OptimizerFactory, lr: float = 1e-3, weight_decay: float = 0.0
) -> OptimizerFactory:
    """``params -> Optimizer``: the registered optimiser ``optimizer`` with ``lr`` and
    ``weight_decay``, or ``optimizer`` itself when it is a callable."""
    if callable(optimizer):
        return optimizer
    build = OPTIMIZERS[optimizer]
    return lambda parameters: build(parameters, lr=lr, weight_decay=weight_decay)


def rebuild_optimizer(
    old: torch.optim.Optimizer | None, parameters: Iterable[torch.nn.Parameter], factory: OptimizerFactory
) -> torch.optim.Optimizer:
    """A new optimiser over ``parameters`` (from ``factory``) that keeps the state (e.g. Adam's
    moments and step) of the parameters the old one already had; new parameters start fresh.
    Needed after every insertion, since the parameter set changed."""
    optimizer = factory(list(parameters))
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"the optimizer factory must return a torch.optim.Optimizer, got {type(optimizer).__name__}")
    if old is not None:
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p in old.state:
                    optimizer.state[p] = old.state[p]
    return optimizer
