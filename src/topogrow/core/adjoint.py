"""States and adjoints of a residual network, one mini-batch at a time.

The network is the discrete dynamical system of METHOD.md section 1::

    x_0 = stem(a),   x_t = x_{t-1} + f(x_{t-1}; theta_t),   y_hat = head(x_T)

and the adjoint (costate) of state ``x_l`` is ``p_l = -dJ/dx_l``. Autograd with
respect to the (non-leaf) state tensors gives exactly this total derivative.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch.nn import functional as F

from topogrow.core.batches import Data, iter_batches
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

    def forward_states(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The prediction and the states ``[x_0, ..., x_T]``, one per insertion location."""
        ...

    def insertion_kind(self, location: int) -> LayerKind:
        """The kind of layer (:mod:`topogrow.core.layer_kinds`) inserted at ``location``."""
        ...


def check_stateful(model: object) -> None:
    """Raise ``TypeError`` unless ``model`` is a :class:`StatefulModel`, saying how to make one."""
    if not isinstance(model, StatefulModel):
        raise TypeError(
            "expected a growable model with forward_states(), insertion_kind() and activation_curvature, got "
            f"{type(model).__name__}; make a residual network of your own growable with "
            "topogrow.nn.as_growable(stem, blocks, head) or as_growable(sequential)"
        )


#: Built-in losses that compare each prediction with a float target of the same shape (and
#: would broadcast a target of another shape silently, or with only torch's warning).
ELEMENTWISE_LOSSES = (
    F.mse_loss,
    F.l1_loss,
    F.smooth_l1_loss,
    F.huber_loss,
    F.cross_entropy,
    F.binary_cross_entropy,
    F.binary_cross_entropy_with_logits,
)


def check_target_shape(prediction: torch.Tensor, y: torch.Tensor, loss: Loss) -> None:
    """Refuse floating targets whose shape is not the prediction's, for the built-in losses
    (:data:`ELEMENTWISE_LOSSES`): ``y`` of shape ``(N,)`` against a prediction ``(N, 1)`` would
    broadcast to ``(N, N)`` and give a wrong loss, adjoints and topological derivative.
    A custom loss callable decides for itself."""
    if loss not in ELEMENTWISE_LOSSES or not y.is_floating_point() or y.shape == prediction.shape:
        return
    hint = "give targets of the prediction's shape"
    if tuple(y.shape) + (1,) == tuple(prediction.shape):
        hint = "use y[:, None]" if y.ndim == 1 else "use y.unsqueeze(-1)"
    raise ValueError(f"targets have shape {tuple(y.shape)} but the model predicts {tuple(prediction.shape)}: {hint}")


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
        check_target_shape(prediction, y, loss)
        value = loss(prediction, y)
        if not torch.isfinite(value):
            raise FloatingPointError(f"the loss is not finite ({value.item()}): cannot compute adjoints")
        grads = torch.autograd.grad(value, states)
    adjoints = [-scale * g for g in grads]
    return value.item(), [s.detach() for s in states], adjoints


@dataclass(frozen=True)
class AdjointBatch:
    """One mini-batch of a streamed pass (:func:`adjoint_batches`).

    Attributes:
        x: ``(B, ...)`` inputs, on the model's device and in its dtype.
        y: ``(B, ...)`` targets, on the model's device; in the model's dtype if floating,
            else their own (integer) dtype.
        size: B, the number of samples in the batch.
        loss: the batch-mean loss as a float.
        states: ``T + 1`` detached states ``x_l``, one per location, each ``(B, n_l)``
            (or ``(B, C, H, W)``, ``(B, T, d)``).
        adjoints: ``T + 1`` adjoints, shaped like the states: ``-B dloss/dx_l`` (the
            adjoints of the batch *sum*) when streamed with ``scale_by_batch=True``, else
            ``-dloss/dx_l`` (of the batch mean).
    """

    x: torch.Tensor
    y: torch.Tensor
    size: int
    loss: float
    states: list[torch.Tensor]
    adjoints: list[torch.Tensor]


def device_and_dtype(model: StatefulModel) -> tuple[torch.device, torch.dtype]:
    """The device and dtype of the model's first parameter (the CPU and the default dtype
    for a model without parameters): where and in what :func:`adjoint_batches` puts the data."""
    parameter = next(model.parameters(), None) if hasattr(model, "parameters") else None
    if parameter is None:
        return torch.device("cpu"), torch.get_default_dtype()
    return parameter.device, parameter.dtype


def adjoint_batches(
    model: StatefulModel,
    data: Data,
    loss: Loss,
    batch_size: int = 1024,
    *,
    scale_by_batch: bool = True,
) -> Iterator[AdjointBatch]:
    """Stream states and adjoints over ``data``: one forward and one backward pass per mini-batch.

    Each mini-batch ``(x, y)`` (of a DataLoader, or sliced from an ``(X, y)`` pair, see
    :func:`~topogrow.core.batches.iter_batches`) is moved to the model's device and dtype
    (:func:`device_and_dtype`; an integer ``y`` keeps its dtype), passed through
    :func:`states_and_adjoints`, and yielded as an :class:`AdjointBatch`. Nothing is kept
    between batches, so memory does not grow with the number of samples.

    The model is in eval mode during the pass; its training flag is restored when the
    generator finishes, raises, or is closed (at once in CPython when a ``for`` loop over it
    stops early; call ``close()`` when holding on to the generator).

    Args:
        model: a :class:`StatefulModel`.
        data: a DataLoader of ``(x, y)`` batches, or an ``(X, y)`` pair of tensors (empty data raises).
        loss: batch-mean loss ``loss(y_hat, y)`` (see :func:`~topogrow.core.losses.resolve_loss`).
        batch_size: mini-batch size when ``data`` is a pair.
        scale_by_batch: adjoints of the batch sum, ``-B dloss/dx_l`` (summing them over the
            batches and dividing by S gives the adjoints of the full-data mean loss J), else
            of the batch mean, ``-dloss/dx_l``.

    Yields:
        :class:`AdjointBatch` ``(x, y, size, loss, states, adjoints)``, states and adjoints
        ``T + 1`` tensors of shape ``(B, ...)``.
    """
    device, dtype = device_and_dtype(model)
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        for x, y in iter_batches(data, batch_size):
            x = x.to(device=device, dtype=dtype)
            y = y.to(device=device, dtype=dtype if y.is_floating_point() else y.dtype)
            size = x.shape[0]
            value, states, adjoints = states_and_adjoints(model, x, y, loss, scale=size if scale_by_batch else 1.0)
            yield AdjointBatch(x=x, y=y, size=size, loss=value, states=states, adjoints=adjoints)
    finally:
        if was_training and hasattr(model, "train"):
            model.train()
