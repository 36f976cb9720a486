"""Put a proposed layer into the model at the epsilon a line search picks (METHOD.md section 3)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace

import torch
from torch import nn

from topogrow._validation import unknown_name_error
from topogrow.growth.config import GrowthConfig
from topogrow.growth.context import Proposal
from topogrow.growth.history import StageRecord
from topogrow.growth.line_search import (
    LINE_SEARCHES,
    PROBE_SAMPLES,
    LineSearchResult,
    line_search,
    model_line_search,
    record_samples,
)
from topogrow.nn.blocks import ResidualBlock, make_block
from topogrow.training.data import count_samples, first_samples, regroup
from topogrow.training.distributed import world_size
from topogrow.training.epochs import Reduce, evaluate_loss


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


def insert_searched(
    model: nn.Module,
    proposal: Proposal,
    data: list | object,
    loss,
    config: GrowthConfig,
    generator: torch.Generator | None = None,
    reduce: Reduce | None = None,
) -> tuple[nn.Module, LineSearchResult]:
    """Insert ``proposal`` as the growth loop does: the line search of ``config`` on ``data``
    (batches ``(x, y)``, this process's share in a distributed run: ``reduce`` sums over the
    processes), the model search's probe on its first samples, a proposal with its own epsilon
    evaluated on :func:`~topogrow.growth.line_search.record_samples` of them. The result counts
    the samples over every process."""
    if config.line_search == "model" and isinstance(data, list):  # evaluated many times: larger batches
        data = regroup(data, config.validation_batch_size)
    if not proposal.line_search:  # inserted at its own epsilon: the change is only recorded
        data, _ = first_samples(data, record_samples(count_samples(data)))
    probe, whole = data, True
    if config.line_search == "model" and proposal.line_search:  # the first samples of each process's share
        probe, whole = first_samples(data, math.ceil(PROBE_SAMPLES / world_size()))
    sizes = [max(count_samples(data), 0), max(count_samples(probe), 0), whole]
    if reduce is not None:  # every process must take the same path (and the counts are over all)
        sizes = [int(v) for v in reduce(torch.tensor(sizes, dtype=torch.float64)).tolist()]
    whole = sizes[2] == world_size()
    layer, search = insert_proposal(
        model,
        proposal,
        lambda: evaluate_loss(model, data, loss, reduce),
        config.epsilons,
        block=config.block,
        generator=generator,
        search=config.line_search,
        probe_loss=None if whole else lambda: evaluate_loss(model, probe, loss, reduce),
    )
    return layer, replace(search, samples=sizes[0], probe_samples=sizes[0] if whole else sizes[1])


def record_insertion(record: StageRecord, proposal: Proposal, search: LineSearchResult) -> None:
    """Fill a stage's record with its insertion: location, epsilon, the actual and predicted change."""
    record.location = proposal.location
    record.epsilon = search.epsilon
    record.actual_change = search.change
    if proposal.curvature is not None:
        record.predicted_change = proposal.predicted_change(search.epsilon)
