"""The checks that a model can grow and train in the growth loop, before anything runs: one
line naming the member that is missing, the precision that would not train, or the registered
block that does not fit the model's states."""

from __future__ import annotations

import torch

from topogrow._validation import one_line
from topogrow.growth.config import GrowthConfig
from topogrow.nn.blocks import make_block

__all__ = ["check_block", "check_growable", "check_precision"]


def check_growable(model: torch.nn.Module, config: GrowthConfig) -> None:
    """Fail before training, naming the member, if ``model`` lacks what the growth loop will use
    (:data:`topogrow.nn.growable.CONTRACT`): the states, the locations, inserting (and, with
    rollback, removing) a layer, and the head (``head_modules()``, whose parameters new layers
    take their device and dtype from)."""
    name = type(model).__name__
    needed = ["forward_states", "depth", "locations", "head_modules"]
    needed += ["insert_layer", "insertion_shape"] if config.block is None else ["insert_block"]
    if config.rollback:
        needed.append("remove_layer")
    members = {}
    for member in needed:
        try:
            members[member] = getattr(model, member)
        except AttributeError as error:  # a missing attribute, or a property that reads one
            how = (
                "topogrow.nn.as_growable(model) (first module the stem, last the head, the residual blocks between)"
                if isinstance(model, torch.nn.Sequential)
                else "topogrow.nn.as_growable(stem, blocks, head), or subclass topogrow.nn.GrowableModel"
            )
            raise TypeError(
                f"{name} cannot grow: it has no {member} ({one_line(error)}); the growth loop needs "
                f"{', '.join(needed)}: make a residual network of your own growable with {how}"
            ) from None
    for member in ("forward_states", "head_modules", "insert_layer", "insert_block", "remove_layer"):
        if member in members and not callable(members[member]):
            raise TypeError(
                f"{name} cannot grow: its {member} is not a method (subclass topogrow.nn.GrowableModel, "
                "or make the network growable with topogrow.nn.as_growable)"
            )
    try:
        heads = list(model.head_modules())
        locations = len(model.locations)
        if config.block is None:
            model.insertion_shape(0)
    except (AttributeError, TypeError, ValueError, IndexError, NotImplementedError) as error:
        raise TypeError(
            f"{name} cannot grow: head_modules(), locations or insertion_shape(0) fail ({one_line(error)}); "
            "a model that renames its head overrides head_modules() to return it"
        ) from None
    if locations < 1:
        raise TypeError(f"{name} cannot grow: it has no insertion locations (len(model.locations) is 0)")
    if not all(isinstance(module, torch.nn.Module) for module in heads):
        kinds = ", ".join(type(module).__name__ for module in heads)
        raise TypeError(f"{name} cannot grow: head_modules() must return nn.Module objects, got [{kinds}]")


def check_precision(model: torch.nn.Module, device: torch.device) -> None:
    """Refuse float16 parameters: Adam's updates and the losses overflow or round to nothing in
    float16 without a gradient scaler, whatever the learning rate."""
    if not any(p.dtype == torch.float16 for p in model.parameters()):
        return
    if device.type == "cuda":
        advice = (
            "use bfloat16 (model.to(torch.bfloat16)) or float32 (float16 mixed precision needs torch.autocast "
            "and a GradScaler, which the growth loop does not use)"
        )
    else:
        advice = "on CPU use bfloat16 (model.to(torch.bfloat16)) or float32"
    raise TypeError(
        f"{type(model).__name__} has float16 parameters, which the growth loop does not train (no gradient "
        f"scaler: the loss becomes NaN whatever the learning rate); {advice}"
    )


def check_block(model: torch.nn.Module, block_name: str, x: torch.Tensor) -> None:
    """Fail before training if the registered block ``block_name`` does not fit the model's states."""
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        _, states = model.forward_states(x)
        try:
            block = make_block(block_name, model, 0).to(device=x.device, dtype=x.dtype)
            out = block(states[0])
        except (TypeError, ValueError, RuntimeError) as error:
            raise ValueError(
                f"block {block_name!r} does not fit {type(model).__name__}: on its states of shape "
                f"{tuple(states[0].shape)} it fails ({one_line(error)})"
            ) from None
    if not isinstance(out, torch.Tensor) or out.shape != states[0].shape:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"block {block_name!r} does not fit {type(model).__name__}: it maps states of shape "
            f"{tuple(states[0].shape)} to {shape}"
        )
