"""Growth policy: when (schedules), where and how (strategies), epsilon (line search), the loop."""

from topogrow.growth.checkpoint import CheckpointError, find_checkpoint, load, read_checkpoint, save
from topogrow.growth.config import GrowthConfig
from topogrow.growth.grower import Grower
from topogrow.growth.history import EpochRecord, GrowthHistory, StageRecord
from topogrow.growth.line_search import LineSearchResult, line_search
from topogrow.growth.strategies import STRATEGIES, Proposal, Strategy, make_strategy

__all__ = [
    "STRATEGIES",
    "CheckpointError",
    "EpochRecord",
    "GrowthConfig",
    "GrowthHistory",
    "Grower",
    "LineSearchResult",
    "Proposal",
    "StageRecord",
    "Strategy",
    "find_checkpoint",
    "line_search",
    "load",
    "make_strategy",
    "read_checkpoint",
    "save",
]
