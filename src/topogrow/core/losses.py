"""Loss functions J = (1/S) sum_s Phi(y_hat_s, y_s), as batch means, by name.

Every loss here returns the *mean* over the samples of a batch, like
``torch.nn.functional.mse_loss``; the streaming code rescales each batch by
``batch_size / S`` so that sums over batches give the full-data loss J.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F

from topogrow._registry import Registry

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: Losses by name: ``loss(prediction, target) -> batch-mean scalar``.
LOSSES: Registry[Loss] = Registry("loss")
LOSSES.register("mse", F.mse_loss, help="mean squared error (regression)")
LOSSES.register("cross_entropy", F.cross_entropy, help="cross-entropy of logits against class labels")
register_loss = LOSSES.register


def resolve_loss(loss: str | Loss) -> Loss:
    """Return the loss callable for a registered name (``"mse"``, ``"cross_entropy"``) or a callable."""
    if callable(loss):
        return loss
    return LOSSES[loss]
