"""Growth policy: when (schedules), the learning rate (lr_schedules), where and how (strategies),
epsilon (line search), the loop and what hangs on it (callbacks, checkpoints, several processes),
transfer learning (adapt)."""

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
from topogrow.growth.live_optimizer import add_parameters, remove_parameters
from topogrow.growth.loggers import CSVLogger, JSONLinesLogger, TensorBoardLogger
from topogrow.growth.lr_schedules import CosineDecay
from topogrow.growth.registries import (
    LR_SCHEDULES,
    OPTIMIZERS,
    SCHEDULES,
    STRATEGIES,
    register_lr_schedule,
    register_optimizer,
    register_schedule,
    register_strategy,
)
from topogrow.growth.saved_model import save
from topogrow.growth.schedules import Schedule
from topogrow.growth.serialization import CheckpointError
from topogrow.growth.step import GrowthStep, grow
from topogrow.growth.strategies import Strategy, make_strategy

__all__ = [
    "LR_SCHEDULES",
    "OPTIMIZERS",
    "SCHEDULES",
    "STRATEGIES",
    "Callback",
    "CSVLogger",
    "CheckpointError",
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
    "add_parameters",
    "find_checkpoint",
    "grow",
    "line_search",
    "load",
    "make_strategy",
    "read_checkpoint",
    "register_lr_schedule",
    "register_optimizer",
    "register_schedule",
    "register_strategy",
    "remove_parameters",
    "save",
]
