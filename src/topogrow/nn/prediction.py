"""Predictions in the user's units: raw inputs in any array form, the preprocessing a model was
trained with undone on the way in and out (see :meth:`GrowableModel.predict`).

``preprocessing`` is the JSON-able record a task keeps of how its data were transformed::

    {"kind": "regression" | "classification",
     "feature_names": [...], "target": name or None,
     "x_mean": [...], "x_std": [...],          # inputs were (x - x_mean) / x_std
     "y_mean": [...] or None, "y_std": [...] or None,   # regression targets likewise
     "classes": [...] or None,                 # class index i is the label classes[i]
     "data": {"path": ..., "sha256": ...} or None}
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["as_array", "predict", "predict_proba"]

_BATCH = 4096


def as_array(X: Any, n_features: int | None, name: str = "X") -> np.ndarray:
    """``X`` (a numpy array, a pandas DataFrame or Series, a list, a tensor of any float or int
    dtype; one sample or many) as a float64 array ``(N, ...)``; one sample gets a batch axis."""
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().numpy()
    if hasattr(X, "to_numpy"):  # pandas, without importing it
        X = X.to_numpy()
    try:
        array = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name}: expected numbers (an array, a list, a DataFrame or a tensor): {error}") from None
    if array.ndim == 0:
        raise ValueError(f"{name}: expected one sample or a batch of samples, got a scalar")
    if n_features is not None:
        if array.ndim == 1 and array.shape[0] == n_features:
            array = array[None, :]
        if array.ndim != 2 or array.shape[1] != n_features:
            raise ValueError(f"{name}: expected {n_features} features per sample, got an array of shape {array.shape}")
    if not np.isfinite(array).all():
        rows = int((~np.isfinite(array.reshape(len(array), -1))).any(axis=1).sum())
        raise ValueError(f"{name}: {rows} sample(s) contain NaN or inf")
    return array


@torch.no_grad()
def _outputs(model: nn.Module, X: Any) -> np.ndarray:
    """The network's raw outputs ``(N, out)`` on inputs prepared as it was trained."""
    prep = getattr(model, "preprocessing", None)
    n_features = len(prep["x_mean"]) if prep and prep.get("x_mean") is not None else None
    array = as_array(X, n_features)
    if prep and prep.get("x_mean") is not None:
        array = (array - np.asarray(prep["x_mean"])) / np.asarray(prep["x_std"])
    parameter = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        outputs = [
            model(torch.as_tensor(array[i : i + _BATCH], dtype=parameter.dtype, device=parameter.device)).double().cpu()
            for i in range(0, len(array), _BATCH)
        ]
    finally:
        model.train(was_training)
    return torch.cat(outputs).numpy()


def predict(model: nn.Module, X: Any) -> np.ndarray:
    """Predictions for raw ``X`` in the user's units: regression targets un-standardised
    (``(N,)`` for one target, ``(N, k)`` for several), class labels for a classifier. Without a
    preprocessing record, the network's outputs as they are."""
    prep = getattr(model, "preprocessing", None) or {}
    outputs = _outputs(model, X)
    if prep.get("kind") == "classification":
        index = outputs.argmax(axis=1)
        classes = prep.get("classes")
        return np.asarray(classes)[index] if classes is not None else index
    if prep.get("y_mean") is not None:
        outputs = outputs * np.asarray(prep["y_std"]) + np.asarray(prep["y_mean"])
    return outputs[:, 0] if outputs.shape[1] == 1 else outputs


def predict_proba(model: nn.Module, X: Any) -> np.ndarray:
    """Class probabilities ``(N, n_classes)`` (softmax of the outputs), columns in the order of
    ``preprocessing["classes"]``."""
    prep = getattr(model, "preprocessing", None) or {}
    if prep.get("kind") == "regression":
        raise TypeError("predict_proba needs a classifier; this model was trained for regression")
    outputs = torch.from_numpy(_outputs(model, X))
    return torch.softmax(outputs, dim=1).numpy()
