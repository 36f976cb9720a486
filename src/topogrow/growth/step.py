"""One growth step for a training loop of your own: :func:`grow` decides where and how to insert
a layer, inserts it as the end of a :class:`~topogrow.growth.grower.Grower` stage does, and hands
its parameters to your optimiser and scheduler (:func:`~topogrow.training.live_optimizer.add_parameters`);
:meth:`GrowthStep.undo` takes it out again."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from topogrow.core.losses import Loss, resolve_loss
from topogrow.growth.callbacks import Insertion
from topogrow.growth.config import GrowthConfig
from topogrow.growth.context import StageContext, StopGrowth
from topogrow.growth.history import StageRecord
from topogrow.growth.insertion import insert_searched, record_insertion
from topogrow.growth.model_check import check_growable
from topogrow.growth.strategies import make_strategy
from topogrow.training.data import DataSource
from topogrow.training.live_optimizer import add_parameters, remove_parameters

__all__ = ["GrowthStep", "grow"]


@dataclass(frozen=True)
class GrowthStep(Insertion):
    """What :func:`grow` did: an :class:`~topogrow.growth.callbacks.Insertion` (the layer at
    ``location``, a location of the model before it, with ``epsilon``; the ``proposal``, the line
    ``search`` and the stage ``record``: the eigenvalues mu_l when the strategy computed them, the
    predicted and actual change) and the model, optimiser and scheduler it went into."""

    model: nn.Module | None = None
    optimizer: torch.optim.Optimizer | None = None
    scheduler: Any = None

    def undo(self) -> None:
        """Remove the layer from the model, and its parameters (their group, their state) from the
        optimiser and the scheduler's per-group lists."""
        if self.optimizer is not None:
            remove_parameters(self.optimizer, list(self.layer.parameters()), self.scheduler)
        self.model.remove_layer(self.location)


def grow(
    model: nn.Module,
    data,
    loss: str | Loss = "mse",
    *,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    config: GrowthConfig | None = None,
    generator: torch.Generator | None = None,
    line_search_data=None,
    batch_transform=None,
    **overrides: Any,
) -> GrowthStep:
    """Insert one layer into ``model``, as the growth loop does at the end of a stage.

    The registered strategy ``config.strategy`` (default ``small-where``) decides from ``data`` (an
    ``(X, y)`` pair or a DataLoader: the sampled or location-only pass of the config), the line
    search of the config picks epsilon on ``line_search_data`` (default: the first
    ``line_search_samples`` of ``data``). Given ``optimizer`` (and ``scheduler``), the new
    parameters join it as a group with the current hyper-parameters of its first group (the current
    learning rate, and every key a scheduler set), and the scheduler's per-group lists are extended:
    the schedule goes on without a jump, and the old parameters keep their state. ``overrides``
    replace config fields (``grow(model, data, strategy="td")``); ``batch_transform`` maps each batch
    of a DataLoader to ``(x, y)``. The global random state is left as it was (the decision draws
    from ``generator``). Without an optimiser the new parameters train only once you add them to
    one (a ``RuntimeWarning`` says so). Raises
    :class:`~topogrow.growth.context.StopGrowth` (with the reason) when the strategy does not grow,
    :class:`~topogrow.growth.context.StageFault` on a numerical fault.

    Example::

        step = grow(model, (X, y), "mse", optimizer=optimizer, scheduler=scheduler)
        ...
        step.undo()  # if validation says it did not help
    """
    config = config or GrowthConfig()
    config = config.replace(**overrides) if overrides else config
    strategy = make_strategy(config.strategy, config.neurons, config.rel_threshold, block=config.block)
    check_growable(model, config)
    strategy.check_model(model)
    generator = generator if generator is not None else torch.Generator().manual_seed(config.seed + 1)
    source = DataSource.from_data(data, "data", config.batch_size, True, config.seed, batch_transform)
    record = StageRecord(
        stage=0,
        epoch=0,
        train_loss=math.nan,
        val_loss=math.nan,
        depth=model.depth,
        n_parameters=sum(p.numel() for p in model.parameters()),
        wall_time=0.0,
    )
    loss = resolve_loss(loss)
    reference = next(model.parameters())
    devices = [reference.device.index or 0] if reference.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        context = StageContext(model, source.data, loss, config, generator, record=record, strategy=strategy)
        proposal = context.proposal
        if proposal is None:
            raise StopGrowth(f"strategy {config.strategy!r} does not grow")
        searched = line_search_data if line_search_data is not None else source.subset(config.line_search_samples)
        layer, search = insert_searched(model, proposal, searched, loss, config, generator)
    record_insertion(record, proposal, search)
    if optimizer is not None:
        add_parameters(optimizer, list(layer.parameters()), scheduler)
    else:
        warnings.warn(
            "grow() without optimizer=: the new layer's parameters are in no optimiser and will not train "
            "until you add them (pass optimizer= and scheduler= to grow, or add_parameters yourself)",
            RuntimeWarning,
            stacklevel=2,
        )
    return GrowthStep(proposal.location, search.epsilon, layer, proposal, search, record, model, optimizer, scheduler)
