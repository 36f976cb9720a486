"""Put a proposed layer into the model at the epsilon a line search picks (METHOD.md section 3)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from topogrow._validation import unknown_name_error
from topogrow.growth.context import Proposal
from topogrow.growth.line_search import LINE_SEARCHES, LineSearchResult, line_search, model_line_search
from topogrow.nn.blocks import ResidualBlock, make_block


def insert_proposal(
    model: nn.Module,
    proposal: Proposal,
    loss: Callable[[], float],
    epsilons: Sequence[float],
    block: str | None = None,
    generator: torch.Generator | None = None,
    search: str = "grid",
    probe_loss: Callable[[], float] | None = None,
) -> tuple[nn.Module, LineSearchResult]:
    """Insert ``proposal`` into ``model`` and set its epsilon; returns the layer and the search.

    The layer is the model's closed-form layer, or a zero :class:`ResidualBlock` of the
    registered block ``proposal.block`` (else ``block``; its default initialisation drawn from
    ``generator`` before it is zeroed). ``loss()`` evaluates the training loss of the model as
    it is on the line-search set, ``probe_loss()`` on its probe subset (``None``: the probe is the
    whole set). The ``search`` (``"grid"``: :func:`line_search` over ``epsilons``; ``"model"``:
    :func:`model_line_search` in their range) never accepts an increase (epsilon = 0 then). A
    proposal with its own ``epsilon`` is inserted at it.
    """
    if search not in LINE_SEARCHES:
        raise unknown_name_error("line search", search, LINE_SEARCHES)
    reference = next(model.parameters())
    direction = proposal.direction.to(device=reference.device, dtype=reference.dtype)
    name = proposal.block if proposal.block is not None else block
    if name is None:
        layer = model.insert_layer(proposal.location)
    else:
        module = make_block(name, model, proposal.location, generator=generator)
        layer = model.insert_block(proposal.location, ResidualBlock(module, name=name).zero_())

    def evaluate(epsilon: float, on: Callable[[], float] = loss) -> float:
        layer.load_direction(epsilon * direction)
        return on()

    before = evaluate(0.0)
    if proposal.epsilon is not None:
        after = evaluate(proposal.epsilon)
        result = LineSearchResult(proposal.epsilon, before, after, ((proposal.epsilon, after),))
    elif search == "grid":
        result = line_search(evaluate, before, epsilons)
    else:
        probe = (lambda eps: evaluate(eps, probe_loss)) if probe_loss is not None else evaluate
        full = evaluate if probe_loss is not None else None
        result = model_line_search(probe, full, before, proposal.curvature, proposal.slope, epsilons)
    layer.load_direction(result.epsilon * direction)
    return layer, result
