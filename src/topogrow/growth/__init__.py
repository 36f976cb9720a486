"""Growth policy: when (schedules), where and how (strategies), epsilon (line search), the loop
and what hangs on it (callbacks, checkpoints, several processes), transfer learning (adapt)."""

from topogrow.growth.callbacks import (
    Callback,
    EarlyStopping,
    FixedArchitecture,
    Freeze,
    Insertion,
    JSONLinesLogger,
    ProgressBar,
    Rollback,
    StopRules,
)
from topogrow.growth.checkpoint import CheckpointError, find_checkpoint, load, read_checkpoint, save
from topogrow.growth.config import GrowthConfig
from topogrow.growth.context import Proposal, StageContext
from topogrow.growth.grower import Grower
from topogrow.growth.history import EpochRecord, GrowthHistory, StageRecord
from topogrow.growth.line_search import LineSearchResult, line_search
from topogrow.growth.registries import (
    OPTIMIZERS,
    SCHEDULES,
    STRATEGIES,
    register_optimizer,
    register_schedule,
    register_strategy,
)
from topogrow.growth.schedules import Schedule
from topogrow.growth.strategies import Strategy, make_strategy

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "STRATEGIES",
    "Callback",
    "CheckpointError",
    "EpochRecord",
    "FixedArchitecture",
    "Freeze",
    "GrowthConfig",
    "GrowthHistory",
    "Grower",
    "Insertion",
    "JSONLinesLogger",
    "LineSearchResult",
    "ProgressBar",
    "Proposal",
    "EarlyStopping",
    "Rollback",
    "Schedule",
    "StageContext",
    "StageRecord",
    "StopRules",
    "Strategy",
    "find_checkpoint",
    "line_search",
    "load",
    "make_strategy",
    "read_checkpoint",
    "register_optimizer",
    "register_schedule",
    "register_strategy",
    "save",
]
