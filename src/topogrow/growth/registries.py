"""The growth layer's registries, filled where each entry is defined: strategies
(:mod:`~topogrow.growth.strategies`), schedules (:mod:`~topogrow.growth.schedules`) and
learning-rate schedules (:mod:`~topogrow.growth.lr_schedules`). A leaf module, so that the config
can validate names without importing what it names. The optimisers' registry is training's
(:data:`topogrow.training.OPTIMIZERS`)."""

from __future__ import annotations

from topogrow._registry import Registry

#: Where and how to grow: ``Strategy`` subclasses by name.
STRATEGIES: Registry = Registry("strategy")
#: When a stage ends: ``Schedule`` subclasses by name, each built from a ``GrowthConfig``.
SCHEDULES: Registry = Registry("schedule")
#: Learning-rate schedules by name: ``build(optimizer, config, horizon) -> LRScheduler | None``.
LR_SCHEDULES: Registry = Registry("learning-rate schedule")

register_strategy = STRATEGIES.register
register_schedule = SCHEDULES.register
register_lr_schedule = LR_SCHEDULES.register
