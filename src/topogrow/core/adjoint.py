"""States and adjoints of a residual network, one mini-batch at a time.

The network is the discrete dynamical system of METHOD.md section 1::

    x_0 = stem(a),   x_t = x_{t-1} + f(x_{t-1}; theta_t),   y_hat = head(x_T)

and the adjoint (costate) of state ``x_l`` is ``p_l = -dJ/dx_l``. Autograd with
respect to the (non-leaf) state tensors gives exactly this total derivative.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from topogrow.core.layer_kinds import LayerKind
from topogrow.core.losses import Loss


@runtime_checkable
class StatefulModel(Protocol):
    """What the core needs of a growable model.

    ``forward_states(x)`` returns the prediction and the states ``[x_0, ..., x_T]``
    (one per insertion location); ``insertion_kind(l)`` says which kind of layer
    (:mod:`topogrow.core.layer_kinds`) would be inserted at location l;
    ``activation_curvature`` is sigma''(0) of the activation of inserted layers.
    """

    activation_curvature: float

    def forward_states(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]: ...

    def insertion_kind(self, location: int) -> LayerKind: ...


def states_and_adjoints(
    model: StatefulModel,
    x: torch.Tensor,
    y: torch.Tensor,
    loss: Loss,
    scale: float = 1.0,
) -> tuple[float, list[torch.Tensor], list[torch.Tensor]]:
    """One forward and one backward pass: states and adjoints at every location.

    Args:
        model: a :class:`StatefulModel`.
        x, y: one mini-batch, ``x`` of shape ``(B, ...)``.
        loss: batch-mean loss ``loss(y_hat, y)``.
        scale: the adjoints returned are ``-scale * d loss(y_hat, y) / d x_l``; with
            ``scale = B / S`` they are the adjoints of the full-data loss J.

    Returns:
        ``(batch_loss, states, adjoints)``: the batch-mean loss as a float, and two
        lists of ``T + 1`` detached tensors, each ``(B, n)`` (or ``(B, C, H, W)``, ``(B, T, d)``).
    """
    with torch.enable_grad():
        if x.is_floating_point():
            # The states must depend on something that requires grad even when every
            # parameter is frozen (transfer learning): make the input a leaf that does.
            x = x.detach().requires_grad_(True)
        prediction, states = model.forward_states(x)
        value = loss(prediction, y)
        if not torch.isfinite(value):
            raise FloatingPointError(f"the loss is not finite ({value.item()}): cannot compute adjoints")
        grads = torch.autograd.grad(value, states)
    adjoints = [-scale * g for g in grads]
    return value.item(), [s.detach() for s in states], adjoints
