"""Training as PyTorch does it, with nothing of growth in it: one epoch of mini-batch training and
the evaluation of a loss and metrics (:mod:`~topogrow.training.epochs`), the optimisers by name and
the optimiser rebuilt over a new parameter set (:mod:`~topogrow.training.optimizers`), parameters
added to and taken out of a live optimiser and its learning-rate scheduler
(:mod:`~topogrow.training.live_optimizer`), the data as mini-batches and its checks
(:mod:`~topogrow.training.data`), and several processes (:mod:`~topogrow.training.distributed`).

The growth loop (:mod:`topogrow.growth`), the Lightning callback, the experiments and a training
loop of your own use it. This layer imports :mod:`topogrow.core` and :mod:`topogrow.nn` at most,
never :mod:`topogrow.growth`.
"""

from topogrow.training.data import DataSource, TensorBatches, TransformedBatches
from topogrow.training.epochs import TrainingOptions, evaluate, evaluate_loss, resolve_device, train_epoch
from topogrow.training.live_optimizer import add_parameters, remove_parameters, restore, snapshot
from topogrow.training.optimizers import OPTIMIZERS, optimizer_factory, rebuild_optimizer, register_optimizer

__all__ = [
    "OPTIMIZERS",
    "DataSource",
    "TensorBatches",
    "TrainingOptions",
    "TransformedBatches",
    "add_parameters",
    "evaluate",
    "evaluate_loss",
    "optimizer_factory",
    "rebuild_optimizer",
    "register_optimizer",
    "remove_parameters",
    "resolve_device",
    "restore",
    "snapshot",
    "train_epoch",
]
