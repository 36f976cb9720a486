"""What a growth run computes, counted in FLOPs from shapes (not timed): training, validation,
topological-derivative passes and line searches.

A forward pass of one sample is counted once per architecture with
:class:`torch.utils.flop_counter.FlopCounterMode` (matrix products and convolutions); a training
step is three forward passes (forward and backward); a topological-derivative pass is a forward and
a backward pass over the samples it read plus the Hamiltonian blocks, ``2 S P n m^2`` per location
(``P`` positions per sample: pixels, tokens, 1 for a dense layer; the positions drawn when the pass
sampled), and their eigen-solves,
``20 n m^3`` (the block solver's cost model); a line search is a forward pass over the samples of
each evaluation it made (:attr:`~topogrow.growth.line_search.LineSearchResult.evaluated_samples`:
the loss before, every trial on the line-search set and on the model search's probe subset).
"""

from __future__ import annotations

import json
from typing import Any

import torch
from torch.utils.data import default_collate
from torch.utils.flop_counter import FlopCounterMode

from topogrow.core.topological_derivative import EIGH_COST
from topogrow.growth.callbacks import Callback
from topogrow.training.data import TransformedBatches

__all__ = ["ComputeCounter", "forward_flops"]

#: Forward passes over the line-search set a decision is budgeted for (the model search makes a few).
LINE_SEARCH_PASSES = 4


def _probe(grower) -> torch.Tensor | None:
    """One training sample, on the model's device and dtype, taken without iterating a loader (which
    would draw from its shuffling generator); ``None`` when the data cannot be indexed."""
    data = grower.train_source.data
    try:
        if isinstance(data, (tuple, list)):
            x = data[0][:1]
        elif isinstance(data, TransformedBatches):  # the user's transform of a batch of one sample
            x = data.transform(default_collate([data.dataset[0]]))[0]
        else:
            x = data.dataset[0][0][None]
    except (AttributeError, TypeError, IndexError, KeyError, NotImplementedError):
        return None
    parameter = next(grower.model.parameters())
    return x.to(device=parameter.device, dtype=parameter.dtype)


def forward_flops(model: torch.nn.Module, x: torch.Tensor) -> float:
    """FLOPs of the model's forward pass on the one sample ``x`` (``(1, ...)``)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return float(counter.get_total_flops())


class ComputeCounter(Callback):
    """Counts a run's FLOPs into ``grower.history.flops``: ``training``, ``validation``,
    ``topological_derivative``, ``line_search`` and their ``total`` (see the module docstring).

    The Grower adds one to every fit. Validation passes made by other callbacks (early stopping,
    rollback: one or two per stage) are not counted.
    """

    def __init__(self) -> None:
        self._forward: dict[str, float] = {}

    def _per_sample(self, grower) -> float:
        """Forward FLOPs of one sample through the model as it is (0 when no sample can be had)."""
        key = json.dumps(grower.model.spec(), sort_keys=True)
        if key not in self._forward:
            probe = _probe(grower)
            self._forward[key] = 0.0 if probe is None else forward_flops(grower.model, probe)
        return self._forward[key]

    @staticmethod
    def _add(grower, part: str, flops: float) -> None:
        counts = grower.history.flops
        counts[part] = counts.get(part, 0.0) + flops
        counts["total"] = sum(v for k, v in counts.items() if k != "total")

    @staticmethod
    def _samples(source) -> int:
        return max(int(source.n_samples), 0) if source is not None else 0

    def epoch_flops(self, grower) -> float:
        """What one epoch of the model as it is costs: training and validation."""
        forward = self._per_sample(grower)
        return forward * (3 * self._samples(grower.train_source) + self._samples(grower.val_source))

    def on_epoch_end(self, grower, record):
        forward = self._per_sample(grower)
        self._add(grower, "training", 3 * forward * self._samples(grower.train_source))
        self._add(grower, "validation", forward * self._samples(grower.val_source))
        record.flops = grower.history.flops["total"]

    def on_stage_end(self, grower, context):
        # the topological derivative, if the strategy asks for it, is computed after this hook,
        # on the model as it is now: keep what its cost depends on
        probe = _probe(grower)
        shapes = [] if probe is None else _block_shapes(grower.model, probe)
        self._pending = (context, self._per_sample(grower), shapes)

    def on_stage_start(self, grower):
        pending, self._pending = getattr(self, "_pending", None), None
        if pending is None or not pending[0].has_derivative:
            return
        context, forward, shapes = pending
        counted = context.derivative_flops
        if counted is not None:  # the location-only pass counted its own FLOPs
            self._add(grower, "topological_derivative", counted)
            return
        record = context.record
        samples = record.td_samples if record is not None and record.td_samples else self._samples(grower.train_source)
        sampled = record is not None and record.td_error is not None  # a sampled pass: positions drawn too
        drawn = grower.config.sampling.positions if sampled and grower.config.sampling else None
        self._add(grower, "topological_derivative", _pass_flops(forward, shapes, samples, drawn))

    def decision_flops(self, grower) -> float:
        """A bound on what deciding an insertion into the model as it is costs: the location-only
        pass's budget (``td_budget`` training epochs) for a strategy that asks only for the location,
        else a pass over every training sample and position; and a line search of
        ``LINE_SEARCH_PASSES`` forward passes over its set."""
        forward, probe, cfg = self._per_sample(grower), _probe(grower), grower.config
        samples = self._samples(grower.train_source)
        search = LINE_SEARCH_PASSES * forward * min(samples, cfg.line_search_samples)
        if grower.strategy.location_only and cfg.td_location == "lanczos" and cfg.td_budget is not None:
            return cfg.td_budget * 3 * forward * samples + search
        shapes = [] if probe is None else _block_shapes(grower.model, probe)
        return _pass_flops(forward, shapes, samples, None) + search

    def on_insert(self, grower, insertion):
        # the evaluations the search made: the loss before and each trial, on the set or the probe subset
        self._add(grower, "line_search", self._per_sample(grower) * insertion.search.evaluated_samples)

    def state_dict(self) -> dict[str, Any]:
        return {}


def _pass_flops(forward: float, shapes: list[tuple[int, int, int]], samples: int, drawn: int | None) -> float:
    """A topological-derivative pass over ``samples`` samples (``drawn`` positions of each, or all)."""
    blocks = sum(
        2.0 * samples * (min(p, drawn) if drawn else p) * n * m * m + EIGH_COST * n * m**3 for n, m, p in shapes
    )
    return 3 * forward * samples + blocks


def _block_shapes(model: torch.nn.Module, x: torch.Tensor) -> list[tuple[int, int, int]]:
    """``(n, m, P)`` at every location: blocks, their size (patch length + 1) and positions per sample."""
    if not callable(getattr(model, "forward_states", None)):
        return []
    with torch.no_grad():
        _, states = model.forward_states(x)
    shapes = []
    for location, state in enumerate(states):
        n, m = model.insertion_shape(location)
        positions = int(model.insertion_kind(location).patches(state).shape[1])
        shapes.append((int(n), int(m), positions))
    return shapes
