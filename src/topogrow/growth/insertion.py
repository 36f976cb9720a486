"""Put a proposed layer into the model at the epsilon a line search picks (METHOD.md section 3)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from topogrow.growth.context import Proposal
from topogrow.growth.line_search import LineSearchResult, line_search
from topogrow.nn.blocks import ResidualBlock, make_block


def insert_proposal(
    model: nn.Module,
    proposal: Proposal,
    loss: Callable[[], float],
    epsilons: Sequence[float],
    block: str | None = None,
    generator: torch.Generator | None = None,
) -> tuple[nn.Module, LineSearchResult]:
    """Insert ``proposal`` into ``model`` and set its epsilon; returns the layer and the search.

    The layer is the model's closed-form layer, or a zero :class:`ResidualBlock` of the
    registered block ``proposal.block`` (else ``block``; its default initialisation drawn from
    ``generator`` before it is zeroed). ``loss()`` evaluates the training loss of the model as
    it is; the line search tries ``epsilons`` (both signs) and never accepts an increase
    (epsilon = 0 then). A proposal with its own ``epsilon`` is inserted at it.
    """
    reference = next(model.parameters())
    direction = proposal.direction.to(device=reference.device, dtype=reference.dtype)
    name = proposal.block if proposal.block is not None else block
    if name is None:
        layer = model.insert_layer(proposal.location)
    else:
        module = make_block(name, model, proposal.location, generator=generator)
        layer = model.insert_block(proposal.location, ResidualBlock(module, name=name).zero_())

    def evaluate(epsilon: float) -> float:
        layer.load_direction(epsilon * direction)
        return loss()

    before = evaluate(0.0)
    if proposal.epsilon is None:
        search = line_search(evaluate, before, epsilons)
    else:
        search = LineSearchResult(proposal.epsilon, before, evaluate(proposal.epsilon), ())
    evaluate(search.epsilon)
    return layer, search
