"""Callbacks: everything that hangs on the growth loop without being the loop.

A :class:`Callback` has no-op hooks; the :class:`~topogrow.growth.grower.Grower` calls them
in order (its own callbacks first, then the strategy's, then the user's)::

    on_fit_start(grower)              before the first epoch (also when resuming); the optimiser exists
    on_train_epoch_start(grower)      before each epoch's training
    on_train_batch_end(grower, index, loss)  after each training batch (its index in the epoch, its loss)
    on_epoch_end(grower, record)      after each epoch (an EpochRecord)
    on_stage_end(grower, context)     at the end of a growth stage, before the decision: a callback
                                      may restore weights, context.stop(reason) growth,
                                      context.veto(reason) this insertion, or read and replace
                                      context.proposal (the strategy is asked on first use)
    on_insert(grower, insertion)      after an insertion (an Insertion: location, epsilon, changes)
    on_stage_start(grower)            when the next stage (or the final phase) starts, after the decision
    on_fit_end(grower)                after the last epoch

A callback with state returns it from :meth:`Callback.state_dict` (JSON-able) and takes it
back in :meth:`Callback.load_state_dict`; checkpoints carry it, so a resumed run continues
with it.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any, TextIO

import torch
from torch import nn
from tqdm.auto import tqdm

from topogrow.growth.context import Proposal, StageContext
from topogrow.growth.history import EpochRecord, StageRecord
from topogrow.growth.line_search import LineSearchResult

__all__ = [
    "Callback",
    "FixedArchitecture",
    "Freeze",
    "Insertion",
    "ProgressBar",
    "EarlyStopping",
    "Rollback",
    "StopRules",
]


@dataclass(frozen=True)
class Insertion:
    """One insertion, as :meth:`Callback.on_insert` sees it.

    Attributes:
        location: where the layer went (a location of the model before the insertion).
        epsilon: the epsilon it was inserted at.
        layer: the inserted module.
        proposal: the proposal it came from.
        search: the line search (its losses before and after; one trial when not searched).
        record: the stage's record (location, epsilon, predicted and actual change filled in).
    """

    location: int
    epsilon: float
    layer: nn.Module
    proposal: Proposal
    search: LineSearchResult
    record: StageRecord

    @property
    def predicted_change(self) -> float | None:
        """The loss change the strategy's model predicted for this insertion (``None`` if it has none)."""
        return self.record.predicted_change

    @property
    def actual_change(self) -> float:
        """The change of the training loss measured by the line search at the chosen epsilon."""
        return self.search.change


class Callback:
    """Base class: hooks into the growth loop, each a no-op by default.

    Every hook gets the :class:`~topogrow.growth.grower.Grower` running the fit first (its
    ``model``, ``config``, ``history``, ``optimizer``, ``progress``; ``stop_growth(reason)``).
    """

    def on_fit_start(self, grower) -> None:
        """Before the first epoch of :meth:`Grower.fit` (also when it resumes a run)."""

    def on_train_epoch_start(self, grower) -> None:
        """Before each epoch's training, growth or final phase."""

    def on_train_batch_end(self, grower, index: int, loss: float) -> None:
        """After each training batch (and its optimiser step, unless gradients accumulate)."""

    def on_epoch_end(self, grower, record: EpochRecord) -> None:
        """After each epoch, growth or final phase."""

    def on_stage_end(self, grower, context: StageContext) -> None:
        """At the end of a growth stage, before the decision (see the module docstring)."""

    def on_stage_start(self, grower) -> None:
        """When a stage (or the final phase) starts: after the decision, and at the start of a fresh fit."""

    def on_insert(self, grower, insertion: Insertion) -> None:
        """After a layer was inserted and the optimiser rebuilt."""

    def on_fit_end(self, grower) -> None:
        """After the last epoch."""

    def state_dict(self) -> dict[str, Any]:
        """The callback's state, JSON-able (kept by checkpoints)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take back what :meth:`state_dict` returned."""


class StopRules(Callback):
    """The growth loop's stop rules: stop at ``config.max_depth``, or after
    ``config.growth_patience`` stages without a relative validation improvement of
    ``config.min_delta``."""

    def __init__(self) -> None:
        self.best_val: float | None = None  # the best monitored value at a stage's end (None: none yet)
        self.stale = 0

    def on_stage_end(self, grower, context):
        cfg = grower.config
        value = grower.monitored(context.record)
        if cfg.improves(value, cfg.worst if self.best_val is None else self.best_val):
            self.best_val, self.stale = value, 0
        else:
            self.stale += 1
        if grower.model.depth >= cfg.max_depth:
            context.stop(f"reached max depth {cfg.max_depth}")
        elif self.stale >= cfg.growth_patience:
            watched = "validation loss" if cfg.monitor == "val_loss" else cfg.monitor
            context.stop(f"{watched} did not improve for {self.stale} stages")

    def state_dict(self):
        best = self.best_val
        return {"best_val": best if best is not None and math.isfinite(best) else None, "stale": self.stale}

    def load_state_dict(self, state):
        self.best_val = None if state.get("best_val") is None else float(state["best_val"])
        self.stale = int(state.get("stale", 0))


class FixedArchitecture(Callback):
    """Goes straight to the final phase: the architecture never grows."""

    def on_fit_start(self, grower):
        if grower.progress.phase == "grow":
            grower.stop_growth("fixed architecture (no growth)")


class Freeze(Callback):
    """Choose which parameters train (``requires_grad``; the optimiser skips the others).

    Args:
        pretrained: at the start of a fresh fit, freeze every parameter of the model as it is
            (transfer learning: new layers, created afterwards, train).
        head: keep the head (``model.head_modules()``) training whatever else is frozen.
        latest_only: after each insertion, only the new layer (and the head) train
            (Forward Thinking): every earlier parameter is frozen from then on.

    The names of the trainable parameters are its state, so a resumed run freezes the same ones.
    """

    def __init__(self, pretrained: bool = False, head: bool = True, latest_only: bool = False) -> None:
        self.pretrained, self.head, self.latest_only = pretrained, head, latest_only
        self.trainable: list[str] | None = None
        self.model: nn.Module | None = None

    def on_fit_start(self, grower):
        self.model = grower.model
        if self.trainable is not None:  # resumed
            self._apply(grower.model, self.trainable)
        elif self.pretrained:
            self._train_only(grower.model, [])

    def on_insert(self, grower, insertion):
        if self.latest_only:
            self._train_only(grower.model, list(insertion.layer.parameters()))

    def _train_only(self, model: nn.Module, parameters: list[nn.Parameter]) -> None:
        keep = {id(p) for p in parameters}
        if self.head:
            keep.update(id(p) for module in model.head_modules() for p in module.parameters())
        self.trainable = [name for name, p in model.named_parameters() if id(p) in keep]
        self._apply(model, self.trainable)

    @staticmethod
    def _apply(model: nn.Module, names: list[str]) -> None:
        parameters = dict(model.named_parameters())
        unknown = sorted(set(names) - set(parameters))
        if unknown:
            raise ValueError(f"trainable parameters {unknown[:3]} are not the model's")
        for name, parameter in parameters.items():
            parameter.requires_grad_(name in names)

    def state_dict(self):
        if self.trainable is not None and self.model is not None:  # as the model is now (a rollback restores flags)
            self.trainable = [name for name, p in self.model.named_parameters() if p.requires_grad]
        return {"trainable": self.trainable}

    def load_state_dict(self, state):
        trainable = state.get("trainable")
        self.trainable = None if trainable is None else [str(name) for name in trainable]


class EarlyStopping(Callback):
    """Train to the best epoch, not the last: in every stage and in the final phase, keep the
    parameters of the epoch with the lowest validation loss (the state at the start of the
    stage included), restore them at the end of the stage (before the next decision) and at
    the end of the fit; with ``patience``, end the stage (or the final phase) after that many
    epochs without a relative improvement of ``min_delta``.

    ``best_epoch`` is the epoch (1-based) whose parameters were last restored, or the number of
    epochs before that stage when none improved on its start. Without validation data the
    per-epoch training loss stands in (and the start of a stage is not a candidate).
    """

    def __init__(self, patience: int | None = None, min_delta: float = 0.0, mode: str = "min") -> None:
        self.patience, self.min_delta, self.mode = patience, min_delta, mode
        self.best_loss = self._worst  # the best monitored value (validation loss) of this stage so far
        self.best_state: dict[str, torch.Tensor] | None = None  # its parameters
        self.best_index = 0  # its epoch, or the number of epochs before the stage
        self.reference = math.inf  # the loss an improvement (by min_delta) is measured against
        self.waiting = 0  # epochs since the last improvement
        self.epochs = 0  # epochs in this stage
        self.best_epoch: int | None = None

    @property
    def _worst(self) -> float:
        return math.inf if self.mode == "min" else -math.inf

    def _improves(self, value: float, reference: float, min_delta: float) -> bool:
        if self.mode == "max":
            return value > reference + min_delta * abs(reference) if math.isfinite(reference) else value > reference
        return value < reference * (1 - min_delta)

    def _start(self, grower, loss: float | None = None) -> None:
        """A new stage starts from the model as it is, whose monitored value is ``loss``."""
        loss = grower.monitored_now() if loss is None else loss
        self.best_loss = self.reference = self._worst if loss is None else loss
        self.best_state = None if loss is None else _copy_state(grower.model)
        self.best_index = len(grower.history.epochs)
        self.waiting = self.epochs = 0

    def on_stage_start(self, grower):
        self._start(grower)

    def on_epoch_end(self, grower, record):
        self.epochs += 1
        value = grower.monitored(record)
        if self._improves(value, self.best_loss, 0.0):
            self.best_loss, self.best_index = value, record.epoch
            self.best_state = _copy_state(grower.model)
        if self._improves(value, self.reference, self.min_delta):
            self.reference, self.waiting = value, 0
        else:
            self.waiting += 1
        if self.patience is not None and self.waiting >= self.patience:
            grower.end_stage()

    def _restore(self, grower) -> None:
        """Put the stage's best epoch back (unless it is the last) and start the next stage from it."""
        if not self.epochs:
            return
        if self.best_index != len(grower.history.epochs):
            grower.model.load_state_dict(self.best_state)
        self.best_epoch = self.best_index

    def on_stage_end(self, grower, context):
        self._restore(grower)

    def on_fit_end(self, grower):
        self._restore(grower)

    def state_dict(self):
        return {
            "best_loss": _finite(self.best_loss),
            "reference": _finite(self.reference),
            "best_state": self.best_state,
            "best_index": self.best_index,
            "waiting": self.waiting,
            "epochs": self.epochs,
            "best_epoch": self.best_epoch,
        }

    def load_state_dict(self, state):
        self.best_loss = _infinite(state["best_loss"], self._worst)
        self.reference = _infinite(state["reference"], self._worst)
        self.best_state = state["best_state"]
        self.best_index, self.waiting, self.epochs = state["best_index"], state["waiting"], state["epochs"]
        self.best_epoch = state["best_epoch"]


def _copy_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def _finite(value: float) -> float | None:
    """JSON has no infinity: ``None`` stands for it."""
    return value if math.isfinite(value) else None


def _infinite(value: float | None, worst: float = math.inf) -> float:
    return worst if value is None else float(value)


class Rollback(Callback):
    """Keep an insertion only if it helps: after the stage that follows an insertion (its best
    epoch restored by :class:`EarlyStopping` when that runs too), if the validation loss did not
    improve on the network before the insertion by a relative ``min_delta``, put that network
    back: the inserted layer removed, the weights and the optimiser state as they were. Then
    (``on_reject="retry"``) let the strategy propose once more with that location excluded, or
    (``"stop"``) stop growing. The history marks each insertion ``accepted`` or not.
    """

    def __init__(self, min_delta: float = 0.0, on_reject: str = "stop") -> None:
        if on_reject not in ("stop", "retry"):
            raise ValueError(f"on_reject must be 'stop' or 'retry', got {on_reject!r}")
        self.min_delta, self.on_reject = min_delta, on_reject
        self.before: dict[str, Any] | None = None  # the network as it was at this stage's end
        self.trial: dict[str, Any] | None = None  # the insertion on trial and the network before it
        self.retried = False

    def on_stage_end(self, grower, context):
        if self.trial is not None:
            self._judge(grower, context)
        self.before = {"loss": grower.monitored_now(), **grower.snapshot()}

    def on_insert(self, grower, insertion):
        self.trial = {"location": insertion.location, "stage": insertion.record.stage, **self.before}

    def _judge(self, grower, context) -> None:
        trial, self.trial = self.trial, None
        after = grower.monitored_now()
        record = next(s for s in grower.history.stages if s.stage == trial["stage"])
        if trial["loss"] is None or grower.config.improves(after, trial["loss"], self.min_delta):
            record.accepted = True
            self.retried = False
            return
        grower.model.remove_layer(trial["location"])
        grower.restore(trial)
        record.accepted = False
        watched = "validation loss" if grower.config.monitor == "val_loss" else grower.config.monitor
        record.note = f"rolled back: {watched} {after:.6g} did not improve on {trial['loss']:.6g}"
        if self.on_reject == "retry" and not self.retried:
            self.retried = True
            context.exclude(trial["location"])
        else:
            context.stop(f"the insertion of stage {trial['stage']} did not improve validation (rolled back)")

    def state_dict(self):
        return {"before": self.before, "trial": self.trial, "retried": self.retried}

    def load_state_dict(self, state):
        self.before, self.trial, self.retried = state["before"], state["trial"], state["retried"]


class ProgressBar(Callback):
    """Progress over epochs: on a terminal a tqdm bar with the depth and the last losses; into a
    file or a pipe (``make demo > log``) one plain line per stage and one at the end instead of
    the bar's carriage-return frames.

    Args:
        description: the bar's label (default: the strategy).
        stream: where to write (default ``sys.stderr``); a bar only when it is a terminal.
    """

    def __init__(self, description: str = "", stream: TextIO | None = None) -> None:
        self.description = description
        self.stream = stream
        self.bar = None
        self.plain = False

    def on_fit_start(self, grower):
        stream = self.stream if self.stream is not None else sys.stderr
        self.description = self.description or grower.config.strategy
        self.plain = not is_terminal(stream)
        if self.plain:
            self.stream = stream
            return
        self.bar = tqdm(
            desc=self.description, unit="epoch", leave=False, initial=len(grower.history.epochs), file=stream
        )

    def on_epoch_end(self, grower, record):
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(depth=record.depth, train=f"{record.train_loss:.4f}", val=f"{record.val_loss:.4f}")

    def on_stage_start(self, grower):
        stages = grower.history.stages
        if not self.plain or not stages:
            return
        stage = stages[-1]
        line = (
            f"{self.description}: stage {stage.stage} ended at epoch {stage.epoch}: depth {stage.depth}, "
            f"train {stage.train_loss:.4f}, val {stage.val_loss:.4f}"
        )
        if stage.location is not None:
            line += f"; a layer at location {stage.location} (epsilon {stage.epsilon:.3g})"
        elif grower.progress.phase != "grow":
            line += f"; growth stopped: {grower.history.stop_reason}"
        print(line, file=self.stream, flush=True)

    def on_fit_end(self, grower):
        if self.bar is not None:
            self.bar.close()
        elif self.plain:
            history = grower.history
            best = min((record.val_loss for record in history.epochs), default=float("nan"))
            print(
                f"{self.description}: done after {history.total_epochs} epochs: depth {grower.model.depth}, "
                f"best val {best:.4f}",
                file=self.stream,
                flush=True,
            )


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is an interactive terminal (a bar redraws there; elsewhere it piles up frames)."""
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (ValueError, OSError):  # a closed stream
        return False
