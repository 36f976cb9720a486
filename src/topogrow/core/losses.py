"""Loss functions J = (1/S) sum_s Phi(y_hat_s, y_s), as batch means.

Every loss here returns the *mean* over the samples of a batch, like
``torch.nn.functional.mse_loss``; the streaming code rescales each batch by
``batch_size / S`` so that sums over batches give the full-data loss J.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F

from topogrow._validation import unknown_name_error

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

LOSSES: dict[str, Loss] = {
    "mse": F.mse_loss,
    "cross_entropy": F.cross_entropy,
}


def resolve_loss(loss: str | Loss) -> Loss:
    """Return the loss callable for a name (``"mse"``, ``"cross_entropy"``) or a callable."""
    if callable(loss):
        return loss
    if isinstance(loss, str) and loss in LOSSES:
        return LOSSES[loss]
    raise unknown_name_error("loss", loss, LOSSES)
