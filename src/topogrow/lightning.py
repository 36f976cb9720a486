"""PyTorch Lightning: :class:`GrowthCallback` grows a LightningModule's growable model during
``Trainer.fit`` (``pip install 'topogrow[lightning]'``; no other module of topogrow imports
lightning).

*When* is the library's schedule (``GrowthConfig.schedule``: every ``epochs_per_stage`` epochs,
or a plateau of a logged metric) with its stop rules; *where* and *how* is the registered
strategy, through :func:`topogrow.grow`: the new layer's parameters join the trainer's optimiser
as a group with the current hyper-parameters, and its scheduler's per-group lists are extended
(:func:`~topogrow.training.add_parameters`), so Adam's state and the schedule go on. Checkpoints
keep the depth (a grown model's state dict records its insertions), the optimiser's parameter
groups and the callback's state: ``load_from_checkpoint`` and ``fit(ckpt_path=...)`` work on a
grown module.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

try:
    from lightning.pytorch.callbacks import Callback
except ModuleNotFoundError as error:  # pragma: no cover - the extra is not installed
    if not (error.name or "").startswith("lightning"):
        raise
    raise ModuleNotFoundError(
        "topogrow.lightning needs PyTorch Lightning: pip install 'topogrow[lightning]'", name=error.name
    ) from None

from topogrow._validation import one_line
from topogrow.core.losses import Loss, resolve_loss
from topogrow.growth.config import GrowthConfig
from topogrow.growth.context import StageFault, StopGrowth
from topogrow.growth.grower import check_growable
from topogrow.growth.history import EpochRecord, GrowthHistory, StageRecord
from topogrow.growth.schedules import make_schedule
from topogrow.growth.step import GrowthStep, grow
from topogrow.training.live_optimizer import add_parameters, remove_parameters

__all__ = ["LOGGED", "GrowthCallback", "chosen_mu"]

#: The metrics :class:`GrowthCallback` logs through ``pl_module.log``: the depth after every
#: epoch; at each insertion the chosen location's leading eigenvalue mu_l (when the strategy
#: computed it), the location and epsilon.
LOGGED = ("growth/depth", "growth/mu", "growth/location", "growth/epsilon")


class GrowthCallback(Callback):
    """Grow the LightningModule's growable model while ``Trainer.fit`` trains it.

    At the end of every training epoch the monitored metric joins the stage's curve; when the
    schedule of ``config`` ends the stage, the stop rules are checked (``max_depth``;
    ``growth_patience`` stages without a relative improvement of ``min_delta``; a strategy that
    does not grow, e.g. every mu_l <= ``tolerance``), then :func:`topogrow.grow` inserts a layer
    into the live optimiser and its scheduler. The global random state is left as it was.

    Args:
        loss: the loss the decision uses: ``"mse"``, ``"cross_entropy"`` or a callable
            ``(prediction, target) -> batch mean``.
        config: a :class:`~topogrow.growth.config.GrowthConfig`: when (``schedule``,
            ``epochs_per_stage``, ``patience``, ``min_delta``), the stop rules, where and how
            (``strategy``, the topological-derivative pass, the line search) and the ``seed`` of
            the growth generator. Its optimiser and learning-rate fields are not used: the
            module's ``configure_optimizers`` makes those.
        attribute: the module's attribute holding the growable model (a
            :class:`~topogrow.nn.GrowableModel` such as ``ResidualMLP``); the module itself when
            it has no such attribute and is growable.
        monitor: the logged metric (``trainer.callback_metrics``, a loss: lower is better) the
            plateau schedule and the ``growth_patience`` rule watch; the ``"fixed"`` schedule works
            without it.
        data: the decision's data, an ``(X, y)`` pair or a DataLoader of ``(x, y)`` batches
            (``None``: the trainer's training DataLoader).
        log: log :data:`LOGGED` through ``pl_module.log``.
        **overrides: replace ``config`` fields (``GrowthCallback("mse", epochs_per_stage=3)``).

    Attributes:
        history: a :class:`~topogrow.growth.history.GrowthHistory`: an ``EpochRecord`` per epoch
            (``val_loss`` holds the monitored value, ``train_loss`` the logged ``"train_loss"``
            when there is one), a ``StageRecord`` per end of stage (mu_l at every location, the
            location, epsilon) and the stop reason.
        stage: the current stage (insertions and skipped stages so far).
        growing: ``False`` once a stop rule ended growth.

    Checkpoints (``ModelCheckpoint``, ``trainer.save_checkpoint``) hold this callback's state
    and the optimiser's parameter groups by parameter name; resumed with ``fit(ckpt_path=...)``,
    the freshly configured optimiser (and scheduler) is regrouped to match before Lightning
    loads their states, so the run continues as if uninterrupted. One process only: a
    distributed strategy is refused.
    """

    def __init__(
        self,
        loss: str | Loss = "mse",
        config: GrowthConfig | None = None,
        *,
        attribute: str | None = "model",
        monitor: str = "val_loss",
        data: Any = None,
        log: bool = True,
        **overrides: Any,
    ) -> None:
        if config is not None and not isinstance(config, GrowthConfig):
            raise TypeError(f"config must be a topogrow.GrowthConfig, got {type(config).__name__}")
        if attribute is not None and not isinstance(attribute, str):
            raise TypeError(f"attribute must be an attribute name or None, got {type(attribute).__name__}")
        config = config or GrowthConfig()
        self.config = config.replace(**overrides) if overrides else config
        self.loss = resolve_loss(loss)
        self.attribute, self.monitor, self.data, self.log = attribute, monitor, data, log
        self.schedule = make_schedule(self.config)
        self.generator = torch.Generator().manual_seed(self.config.seed + 1)
        self.history = GrowthHistory(strategy=self.config.strategy)
        self.stage = 0
        self.growing = True
        self.curve: list[float] = []  # the stage's monitored values
        self.best = math.inf
        self.stale = 0
        self.faults = 0
        self.epochs_seen = 0
        self._groups: list[list[list[str | None]]] | None = None  # a checkpoint's optimiser layout, to apply
        self._saved_value: list | None = None  # a checkpoint's [epoch, monitored value]
        self._trainer: Any = None
        self._started = time.perf_counter()

    @property
    def state_key(self) -> str:
        """The key of this callback's state in a checkpoint (one per ``attribute``)."""
        return self._generate_state_key(attribute=self.attribute)

    # ------------------------------------------------------------------ Lightning hooks
    def setup(self, trainer, pl_module, stage: str) -> None:
        """Check, before anything trains, that the module holds a growable model and one process runs."""
        self._trainer = trainer
        if stage != "fit":
            return
        self.growable(pl_module, check=True)
        if trainer.world_size > 1:
            raise RuntimeError(
                f"GrowthCallback grows the model in one process; this trainer runs {trainer.world_size} "
                "(a distributed strategy cannot take a layer inserted into its wrapped model)"
            )

    def on_fit_start(self, trainer, pl_module) -> None:
        """The optimisers exist now: check their schedulers, regroup them as a checkpoint says."""
        self._started = time.perf_counter()
        model = self.growable(pl_module)
        self._optimizer_of(trainer, model)
        if not trainer.strategy.restore_checkpoint_after_setup:
            self._apply_groups(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        """Record the epoch; at the end of a stage, apply the stop rules or grow; log."""
        model = self.growable(pl_module)
        value = self._monitored(trainer)
        self.epochs_seen = trainer.current_epoch + 1
        optimizer, _ = self._optimizer_of(trainer, model)
        self.history.epochs.append(
            EpochRecord(
                epoch=self.epochs_seen,
                stage=self.stage,
                depth=model.depth,
                train_loss=_metric(trainer, "train_loss"),
                val_loss=value,
                wall_time=time.perf_counter() - self._started,
                lr=float(optimizer.param_groups[0]["lr"]),
            )
        )
        step = None
        if self.growing:
            self.curve.append(value)
            if self.schedule.stage_done(self.curve, self.stage):
                step = self._end_stage(trainer, model, value)
        if self.log:
            pl_module.log("growth/depth", float(model.depth))
            if step is not None:
                mu = chosen_mu(self.history.stages[-1])
                if mu is not None:
                    pl_module.log("growth/mu", mu)
                pl_module.log("growth/location", float(step.location))
                pl_module.log("growth/epsilon", float(step.epsilon))

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        """Add the optimisers' parameter groups, by parameter name, to this callback's state."""
        names = {id(p): name for name, p in pl_module.named_parameters()}
        layout = [
            [[names.get(id(p)) for p in group["params"]] for group in optimizer.param_groups]
            for optimizer in trainer.optimizers
        ]
        state = checkpoint.setdefault("callbacks", {}).setdefault(self.state_key, {})
        state["optimizer_groups"] = layout
        # A checkpoint written at validation end comes before this epoch's end, which a resumed
        # fit replays without the logged metric: keep it.
        state["monitored"] = [trainer.current_epoch, _metric(trainer, self.monitor)]

    def teardown(self, trainer, pl_module, stage: str) -> None:
        """Forget a layout that no fit applied (a checkpoint loaded to validate or test)."""
        self._groups = None

    def state_dict(self) -> dict[str, Any]:
        """The stage, its curve, the stop rules' counters, the generator and the history."""
        return {
            "stage": self.stage,
            "growing": self.growing,
            "curve": list(self.curve),
            "best": self.best if math.isfinite(self.best) else None,
            "stale": self.stale,
            "faults": self.faults,
            "epochs_seen": self.epochs_seen,
            "generator": self.generator.get_state(),
            "history": self.history.to_dict(),
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; the optimiser's groups are regrouped once it is configured."""
        self.stage = int(state_dict["stage"])
        self.growing = bool(state_dict["growing"])
        self.curve = [float(v) for v in state_dict["curve"]]
        self.best = math.inf if state_dict["best"] is None else float(state_dict["best"])
        self.stale, self.faults = int(state_dict["stale"]), int(state_dict["faults"])
        self.epochs_seen = int(state_dict["epochs_seen"])
        self.generator.set_state(state_dict["generator"].cpu())
        self.history = GrowthHistory.from_dict(state_dict["history"])
        self._groups = state_dict.get("optimizer_groups")
        self._saved_value = state_dict.get("monitored")
        trainer = self._trainer
        if trainer is not None and trainer.strategy.restore_checkpoint_after_setup and trainer.optimizers:
            self._apply_groups(trainer, trainer.lightning_module)  # restored after setup: the optimiser exists

    # ------------------------------------------------------------------ the model
    def growable(self, pl_module: nn.Module, check: bool = False) -> nn.Module:
        """The growable model of ``pl_module``: its ``attribute``, or the module itself; with
        ``check``, fail in one line naming what is missing."""
        owner = type(pl_module).__name__
        candidate = getattr(pl_module, self.attribute, None) if self.attribute else None
        if candidate is not None and not isinstance(candidate, nn.Module):
            raise TypeError(
                f"GrowthCallback: {owner}.{self.attribute} is a {type(candidate).__name__}, not a growable model "
                "(a topogrow.nn.GrowableModel such as topogrow.ResidualMLP)"
            )
        model, where = (candidate, f"{owner}.{self.attribute}") if candidate is not None else (pl_module, owner)
        if not check:
            return model
        try:
            check_growable(model, self.config.replace(rollback=False))
        except TypeError as error:
            if candidate is None:
                named = f"has no attribute {self.attribute!r} and " if self.attribute else ""
                raise TypeError(
                    f"GrowthCallback: {owner} {named}is not a growable model itself ({one_line(error)}); keep the "
                    f"model (e.g. topogrow.ResidualMLP) as self.{self.attribute or 'model'} or name its attribute "
                    "with GrowthCallback(attribute=...)"
                ) from None
            raise TypeError(f"GrowthCallback: {where}: {one_line(error)}") from None
        return model

    # ------------------------------------------------------------------ internals
    def _monitored(self, trainer) -> float:
        """The monitored metric now (NaN when not logged, which only the plateau schedule refuses)."""
        value = _metric(trainer, self.monitor)
        saved, self._saved_value = self._saved_value, None
        if math.isnan(value) and saved is not None and saved[0] == trainer.current_epoch:
            value = float(saved[1])
        if math.isnan(value) and self.config.schedule != "fixed":
            logged = ", ".join(sorted(trainer.callback_metrics)) or "none"
            raise KeyError(
                f"GrowthCallback(schedule={self.config.schedule!r}) watches {self.monitor!r}, which was not logged "
                f"(logged: {logged}); log it with self.log({self.monitor!r}, ...) or pass monitor="
            )
        return value

    def _end_stage(self, trainer, model: nn.Module, value: float) -> GrowthStep | None:
        """The stop rules, then one insertion; the stage's record goes into the history."""
        cfg = self.config
        record = StageRecord(
            stage=self.stage,
            epoch=self.epochs_seen,
            train_loss=_metric(trainer, "train_loss"),
            val_loss=value,
            depth=model.depth,
            n_parameters=sum(p.numel() for p in model.parameters()),
            wall_time=time.perf_counter() - self._started,
        )
        if not math.isnan(value):  # as StopRules does
            if value < self.best * (1 - cfg.min_delta):
                self.best, self.stale = value, 0
            else:
                self.stale += 1
        reason, step = None, None
        if model.depth >= cfg.max_depth:
            reason = f"reached max depth {cfg.max_depth}"
        elif self.stale >= cfg.growth_patience:
            reason = f"{self.monitor} did not improve for {self.stale} stages"
        else:
            try:
                step = self._grow(trainer, model)
            except StopGrowth as stop:
                reason = str(stop)
            except StageFault as fault:
                self.faults += 1
                record.note = f"insertion skipped: {one_line(fault)}"
                warnings.warn(f"GrowthCallback, epoch {self.epochs_seen}: {record.note}", RuntimeWarning, stacklevel=3)
                if self.faults >= cfg.growth_patience:
                    reason = f"numerical faults in {self.faults} consecutive stages"
        if step is not None:
            self.faults = 0
            insertion = {f: getattr(step.record, f) for f in _INSERTION_FIELDS}
            record = dataclasses.replace(record, **insertion)
        self.history.stages.append(record)
        if reason is not None:
            self.growing = False
            self.history.stop_reason = reason
        else:
            self.stage += 1
            self.curve = []
        return step

    def _grow(self, trainer, model: nn.Module) -> GrowthStep:
        """:func:`topogrow.grow` into the trainer's optimiser and scheduler, the global RNG untouched."""
        optimizer, scheduler = self._optimizer_of(trainer, model)
        data = self.data if self.data is not None else trainer.train_dataloader
        if data is None or isinstance(data, (dict, Mapping)):
            raise TypeError(
                "GrowthCallback: the trainer has no single training DataLoader to decide on; pass data=(X, y) or a "
                "DataLoader of (x, y) batches"
            )
        cuda = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
        was_training = model.training
        with torch.random.fork_rng(devices=cuda):
            try:
                return grow(
                    model,
                    data,
                    self.loss,
                    optimizer=optimizer,
                    scheduler=scheduler,
                    config=self.config,
                    generator=self.generator,
                )
            except TypeError as error:
                if "must be a pair" not in str(error):
                    raise
                raise TypeError(f"GrowthCallback: {one_line(error)}; pass data=(X, y) to decide on") from None
            finally:
                model.train(was_training)

    def _optimizer_of(self, trainer, model: nn.Module) -> tuple[torch.optim.Optimizer, Any]:
        """The trainer's optimiser that holds ``model``'s parameters, and its scheduler (or ``None``)."""
        held = {id(p) for p in model.parameters()}
        optimizers = [
            opt for opt in trainer.optimizers if any(id(p) in held for g in opt.param_groups for p in g["params"])
        ]
        if len(optimizers) != 1:
            problem = "no optimiser holds" if not optimizers else f"{len(optimizers)} optimisers hold"
            raise RuntimeError(
                f"GrowthCallback: {problem} the growable model's parameters; configure_optimizers must return one "
                "optimiser over them (e.g. torch.optim.Adam(self.parameters()))"
            )
        optimizer = optimizers[0]
        schedulers = [c.scheduler for c in trainer.lr_scheduler_configs if c.scheduler.optimizer is optimizer]
        if len(schedulers) > 1:
            raise RuntimeError(
                f"GrowthCallback: {len(schedulers)} learning-rate schedulers drive the model's optimiser; growth "
                "extends one scheduler's per-group lists: chain them into one (SequentialLR, ChainedScheduler)"
            )
        return optimizer, schedulers[0] if schedulers else None

    def _apply_groups(self, trainer, pl_module) -> None:
        """Regroup each freshly configured optimiser (and its scheduler's per-group lists) as the
        checkpoint's were, so that Lightning can load their states."""
        layout, self._groups = self._groups, None
        if layout is None:
            return
        named = dict(pl_module.named_parameters())
        for optimizer, groups in zip(trainer.optimizers, layout, strict=False):
            names = [name for group in groups for name in group]
            if any(name is None for name in names):
                continue  # parameters that are not the module's: left to Lightning as they are
            unknown = sorted(set(names) - set(named))
            if unknown:
                raise RuntimeError(
                    f"GrowthCallback: the checkpoint's optimiser holds {unknown[:3]}, which the module does not have "
                    "(was the model reloaded at its grown depth?)"
                )
            wanted = [[named[name] for name in group] for group in groups]
            current = [[id(p) for p in group["params"]] for group in optimizer.param_groups]
            if current == [[id(p) for p in group] for group in wanted]:
                continue
            scheduler = next(
                (c.scheduler for c in trainer.lr_scheduler_configs if c.scheduler.optimizer is optimizer), None
            )
            for index, group in enumerate(optimizer.param_groups):
                group["params"] = wanted[index] if index < len(wanted) else []
            remove_parameters(optimizer, [], scheduler)  # drops the groups left empty, and their scheduler entries
            for parameters in wanted[len(optimizer.param_groups) :]:
                add_parameters(optimizer, parameters, scheduler)


#: The fields of a stage's record that :func:`topogrow.grow` fills in for its insertion.
_INSERTION_FIELDS = (
    "eigenvalues",
    "location",
    "epsilon",
    "predicted_change",
    "actual_change",
    "td_samples",
    "td_error",
)


def chosen_mu(record: StageRecord) -> float | None:
    """The leading eigenvalue mu_l at the location a stage's insertion went to (``None`` when the
    strategy did not compute the eigenvalues, or nothing was inserted)."""
    eigenvalues, location = record.eigenvalues, record.location
    if eigenvalues is None or location is None or not 0 <= location < len(eigenvalues):
        return None
    return float(eigenvalues[location])


def _metric(trainer, name: str) -> float:
    """``trainer.callback_metrics[name]`` as a float; NaN when it was not logged."""
    value = trainer.callback_metrics.get(name)
    return math.nan if value is None else float(value)
