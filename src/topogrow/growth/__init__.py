"""Growth policy: when (schedules), the learning rate (lr_schedules), where and how (strategies),
epsilon (line search), the loop and what hangs on it (callbacks, checkpoints, several processes).

The training it runs is :mod:`topogrow.training`'s; a model is saved with :func:`topogrow.nn.save`;
transfer learning (:func:`topogrow.transfer.adapt`) is an application of this loop."""

from topogrow.growth.callbacks import (
    Callback,
    EarlyStopping,
    FixedArchitecture,
    Freeze,
    Insertion,
    ProgressBar,
    Rollback,
    StopRules,
)
from topogrow.growth.checkpoint import find_checkpoint, load, read_checkpoint
from topogrow.growth.config import GrowthConfig
from topogrow.growth.context import Proposal, StageContext
from topogrow.growth.grower import Grower
from topogrow.growth.history import EpochRecord, GrowthHistory, StageRecord
from topogrow.growth.line_search import LineSearchResult, line_search
from topogrow.growth.loggers import CSVLogger, JSONLinesLogger, TensorBoardLogger
from topogrow.growth.lr_schedules import CosineDecay
from topogrow.growth.registries import (
    LR_SCHEDULES,
    SCHEDULES,
    STRATEGIES,
    register_lr_schedule,
    register_schedule,
    register_strategy,
)
from topogrow.growth.schedules import Schedule
from topogrow.growth.step import GrowthStep, grow
from topogrow.growth.strategies import Strategy, make_strategy

__all__ = [
    "LR_SCHEDULES",
    "SCHEDULES",
    "STRATEGIES",
    "Callback",
    "CSVLogger",
    "CosineDecay",
    "EpochRecord",
    "FixedArchitecture",
    "Freeze",
    "GrowthConfig",
    "GrowthHistory",
    "GrowthStep",
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
    "TensorBoardLogger",
    "Strategy",
    "find_checkpoint",
    "grow",
    "line_search",
    "load",
    "make_strategy",
    "read_checkpoint",
    "register_lr_schedule",
    "register_schedule",
    "register_strategy",
]
