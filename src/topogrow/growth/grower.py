"""The growth loop of METHOD.md section 3: train, decide, insert, repeat.

The loop fits on a screen (:meth:`Grower._loop`, :meth:`Grower._end_stage`); everything
else hangs on it: the strategy decides where and how (:mod:`~topogrow.growth.strategies`),
the schedule when (:mod:`~topogrow.growth.schedules`), callbacks (stop rules, freezing,
early stopping, progress bar, your own: :mod:`~topogrow.growth.callbacks`) watch and steer
it, and small collaborators write checkpoints and run it over processes.

One idea, kept in one file: the loop and the run state its methods share (model, optimiser and
scheduler, data, progress, callbacks). What is not the loop lives beside it: the checks of a
model (:mod:`~topogrow.growth.model_check`), the run's position (:mod:`~topogrow.growth.progress`),
metrics and the monitored value (:mod:`~topogrow.growth.metrics`), divergence
(:mod:`~topogrow.growth.divergence`), several processes (:mod:`~topogrow.growth.distributed_run`);
training itself, snapshots of the network and its optimiser state are :mod:`topogrow.training`'s
(:mod:`~topogrow.training.epochs`, :mod:`~topogrow.training.live_optimizer`).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from topogrow._validation import check_int, one_line
from topogrow.core.losses import Loss, resolve_loss
from topogrow.growth.budget import Budget
from topogrow.growth.callbacks import Callback, EarlyStopping, Insertion, ProgressBar, Rollback, StopRules
from topogrow.growth.checkpoint import read_checkpoint
from topogrow.growth.checkpointing import RunCheckpoints
from topogrow.growth.compute import ComputeCounter
from topogrow.growth.config import GrowthConfig
from topogrow.growth.context import StageContext, StageFault, StopGrowth
from topogrow.growth.distributed_run import DistributedRun
from topogrow.growth.divergence import DivergenceGuard
from topogrow.growth.history import EpochRecord, GrowthHistory, StageRecord
from topogrow.growth.insertion import insert_searched, record_insertion
from topogrow.growth.lr_schedules import make_lr_scheduler, planned_epochs, step_lr_scheduler
from topogrow.growth.metrics import check_metrics, monitored
from topogrow.growth.model_check import check_block, check_growable, check_precision
from topogrow.growth.progress import Progress
from topogrow.growth.run_state import Checkpoint, load_optimizer_state, restore_rng
from topogrow.growth.schedules import Schedule, make_schedule
from topogrow.growth.strategies import make_strategy
from topogrow.nn.serialization import CheckpointError
from topogrow.training.data import DataSource, check_compatible, check_data_kind
from topogrow.training.distributed import is_distributed, is_main_process, world_size
from topogrow.training.epochs import (
    Metric,
    TrainingOptions,
    evaluate,
    evaluate_loss,
    resolve_device,
    train_epoch,
)
from topogrow.training.live_optimizer import add_parameters, parameters_outside, restore, snapshot
from topogrow.training.optimizers import optimizer_factory


class Grower:
    """Grow a model in depth while it trains.

    Each stage trains until the schedule says so; then the callbacks see the stage
    (:meth:`Callback.on_stage_end`: the stop rules may end growth), the strategy proposes
    where and how to insert a layer, the line search picks epsilon on the training loss, the
    layer goes in, and its parameters join the live optimiser and learning-rate scheduler at
    the current rate (:mod:`~topogrow.training.live_optimizer`: old parameters keep their state,
    no schedule restarts). After growth stops, the final network trains until it has converged
    (``config.stop_patience`` epochs without improvement; at most ``final_epochs``), and the
    best epoch is restored.

    Stop rules (:class:`~topogrow.growth.callbacks.StopRules`): ``max_depth`` reached;
    validation not improving for ``growth_patience`` stages; and, for strategies that use the
    topological derivative, every mu_l <= ``tolerance`` (no first-order location either);
    ``growth_patience`` insertions in a row skipped for numerical faults.

    Args:
        model: a growable model (:class:`~topogrow.nn.GrowableModel`).
        loss: ``"mse"``, ``"cross_entropy"`` or a callable returning the batch mean.
        config: the run's settings; keyword ``overrides`` replace some of its fields.
        callbacks: extra :class:`~topogrow.growth.callbacks.Callback` objects, called after the
            grower's own (stop rules) and the strategy's (e.g. freezing).
        schedule: when stages end (default: the registered ``config.schedule``).
        generator: the draws of random locations and initialisations (default: seeded with
            ``config.seed + 1``).
        metrics: ``{name: metric}`` evaluated after every epoch on the validation data (the
            training data without any) and stored in each record's ``metrics`` as ``"val_<name>"``;
            a metric is ``(prediction, target) -> float`` (the batch mean) or a ``torchmetrics.Metric``.
            ``config.monitor="val_<name>"`` (with ``config.mode``) makes early stopping, rollback,
            the stop rules and the plateau schedules watch it.

    ``fit(..., checkpoint_dir=...)`` checkpoints the run; :meth:`from_checkpoint` continues it
    (exactly, on CPU). Under an initialised ``torch.distributed`` process group of several
    processes, each giving ``fit`` its own shard of the data, the run is distributed
    (:mod:`topogrow.growth.distributed_run`). With ``config.block`` the model grows by that
    registered block through the matrix-free topological derivative.

    Example::

        grower = Grower(model, "mse", GrowthConfig(strategy="td", max_depth=6))
        history = grower.fit((X_train, y_train), (X_val, y_val))
    """

    def __init__(
        self,
        model: torch.nn.Module,
        loss: str | Loss = "mse",
        config: GrowthConfig | None = None,
        *,
        callbacks: Sequence[Callback] = (),
        schedule: Schedule | None = None,
        generator: torch.Generator | None = None,
        metrics: Mapping[str, Metric] | None = None,
        **overrides: Any,
    ) -> None:
        config = config or GrowthConfig()
        self.config = config.replace(**overrides) if overrides else config
        cfg = self.config
        self.loss = resolve_loss(loss)
        self.loss_name = loss if isinstance(loss, str) else None
        self.strategy = make_strategy(cfg.strategy, cfg.neurons, cfg.rel_threshold, block=cfg.block)
        if cfg.block is not None and not callable(getattr(model, "insert_block", None)):
            raise TypeError(
                f"config.block={cfg.block!r} grows by inserting blocks, but {type(model).__name__} has no "
                "insert_block(location, module); use block=None (its closed-form layer) or a model with insert_block"
            )
        self.strategy.check_model(model)
        if not isinstance(model, torch.nn.Module) or next(model.parameters(), None) is None:
            raise TypeError(f"expected a model (an nn.Module with parameters), got {type(model).__name__}")
        # as PyTorch and Lightning do, the model stays where it is unless a device is asked for
        self.device = resolve_device(cfg.device) if cfg.device is not None else next(model.parameters()).device
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {cfg.device!r}: CUDA is not available here; use device='cpu'")
        self.metrics: dict[str, Metric] = check_metrics(metrics, cfg)
        self.options = TrainingOptions.from_config(cfg, self.device)
        check_growable(model, cfg)
        check_precision(model, self.device)
        for callback in callbacks:
            if not isinstance(callback, Callback):
                raise TypeError(f"callbacks must be topogrow.growth.Callback objects, got {type(callback).__name__}")
        self.model = model.to(self.device)
        self.schedule = schedule if schedule is not None else make_schedule(cfg)
        counter = ComputeCounter()
        self.budget = Budget(cfg.budget, counter) if cfg.budget is not None else None
        self.callbacks: list[Callback] = [
            *_config_callbacks(cfg),
            StopRules(),
            counter,
            *([self.budget] if self.budget is not None else []),
            *self.strategy.callbacks(),
            *callbacks,
        ]
        self.generator = generator if generator is not None else torch.Generator().manual_seed(cfg.seed + 1)
        self.make_optimizer = optimizer_factory(cfg.optimizer, cfg.lr, cfg.weight_decay)
        self.history = GrowthHistory(strategy=cfg.strategy)
        self.progress = Progress()
        self.optimizer: torch.optim.Optimizer | None = None
        #: The learning-rate scheduler over ``optimizer`` (``None`` for a constant rate), from ``fit``.
        self.scheduler: Any = None
        #: JSON-able facts about the run that checkpoints keep (e.g. the task), set by the caller.
        self.metadata: dict[str, Any] = {}
        #: Generators whose states a checkpoint keeps (besides the global RNGs), set by ``fit``.
        self.generators: dict[str, torch.Generator] = {"grower": self.generator}
        self.distributed_run = DistributedRun()
        self.start_time = time.perf_counter()
        self.train_source: DataSource | None = None
        self.val_source: DataSource | None = None
        self._line_search_data = None
        self._covered: set[int] = set()
        self.guard = DivergenceGuard()
        self._fit_callbacks: list[Callback] = list(self.callbacks)
        self._checkpoints: RunCheckpoints | None = None
        self._resume: Checkpoint | None = None
        self._fitted = False

    # ------------------------------------------------------------------ public
    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        loss: str | Loss | None = None,
        device: str | torch.device | None = None,
        callbacks: Sequence[Callback] = (),
    ) -> Grower:
        """A grower that continues the run saved in ``path`` (a checkpoint folder, or a
        checkpoint directory: its newest checkpoint) when :meth:`fit` is called with the same data.

        The model is rebuilt from the checkpoint's spec and weights; the optimiser state, the
        RNG states (torch, numpy, python, the grower's and the data shuffler's generators),
        the progress within the stage, the callbacks' states and the history are restored, so
        that on CPU the run ends exactly as an uninterrupted one. ``loss`` is needed only when
        the run used a loss callable rather than a name; ``device`` overrides the saved one;
        ``callbacks`` are the extra callbacks of the run (their states are restored by class
        name). Raises :class:`~topogrow.CheckpointError` naming the file if
        the checkpoint is truncated or corrupt, ``FileNotFoundError`` if there is none.
        """
        checkpoint = read_checkpoint(path)
        if loss is None:
            if checkpoint.loss is None:
                raise ValueError(f"{checkpoint.path}: the run used a custom loss; pass it as loss=")
            loss = checkpoint.loss
        config = checkpoint.config if device is None else checkpoint.config.replace(device=str(device))
        grower = cls(checkpoint.model, loss, config, callbacks=callbacks)
        grower.history = checkpoint.history
        grower.metadata = dict(checkpoint.metadata)
        grower._resume = checkpoint
        return grower

    @property
    def resumed_from(self) -> Path | None:
        """The checkpoint this grower continues (``None`` for a fresh run)."""
        return None if self._resume is None else self._resume.path

    @property
    def distributed(self) -> bool:
        """Whether :meth:`fit` runs over several processes (a process group of more than one)."""
        return is_distributed()

    def fit(
        self,
        train,
        val=None,
        progress: bool = False,
        checkpoint_dir: str | Path | None = None,
        checkpoint_every: int = 0,
        keep_checkpoints: int = 2,
        line_search_data=None,
        batch_transform: Callable[[Any], tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> GrowthHistory:
        """Run the whole growth loop on ``train`` (and ``val`` for the stop rules).

        ``train`` and ``val`` are ``(X, y)`` pairs of tensors or DataLoaders; without ``val``
        the training loss stands in for the validation loss. ``line_search_data`` (batches
        ``(x, y)``) is what the line search evaluates; by default the first
        ``config.line_search_samples`` training samples of a shuffled pass, drawn at each insertion.

        With ``checkpoint_dir`` a checkpoint (see :mod:`topogrow.growth.checkpoint`) is written
        after every stage, every ``checkpoint_every`` epochs (0: only after stages) and at the
        end; the newest ``keep_checkpoints`` are kept. A grower from :meth:`from_checkpoint`
        continues where its checkpoint left off.

        Numerical faults while deciding an insertion (NaN adjoints, a non-finite or singular
        block) skip that insertion with a ``RuntimeWarning`` (the stage's ``note`` says why)
        and training goes on. A phase that diverges (a non-finite loss, or one far above the
        lowest of the phase: :mod:`~topogrow.growth.divergence`) ends the run with the phase's best
        network, a ``RuntimeWarning`` and ``history.diverged`` saying so in one line.

        ``fit`` runs once per grower: a second call raises ``RuntimeError`` (the history of one
        run must not pile up on another's, and the stop rules, early stopping and rollback
        already hold the first run's state). To grow further, start a new grower on the
        grown model, ``Grower(grower.model, ...).fit(...)``, which keeps its own history; to
        continue an interrupted run, use :meth:`from_checkpoint`. A ``fit`` that failed
        before training began (bad data, a model that does not fit it) may be called again.

        ``batch_transform`` maps each batch of a DataLoader (a dict, ``(x, y, w)``, ...) to the pair
        ``(x, y)`` that training, validation, the topological derivative and the line search read.

        The optimiser exists before :meth:`Callback.on_fit_start`; a callback that adds parameters
        there hands them to it with :meth:`add_parameters`. Growth draws from ``generator`` only:
        the global random state is as training alone leaves it.
        """
        if self._fitted:
            raise RuntimeError(
                "fit() was already called on this Grower (its model and history are grower.model and "
                "grower.history); to grow further use a new Grower(grower.model, ...), which keeps its own history"
            )
        check_int("checkpoint_every", checkpoint_every, minimum=0)
        self._open_data(train, val, batch_transform)
        self._fitted = True
        if line_search_data is not None and batch_transform is not None:
            line_search_data = [batch_transform(batch) for batch in line_search_data]
        self._line_search_data = line_search_data
        resume = self._resume
        self._checkpoints = RunCheckpoints(
            self, checkpoint_dir, checkpoint_every, keep_checkpoints, None if resume is None else resume.path
        )
        self.generators = self._generators_to_keep()
        bar = [ProgressBar(self.config.strategy)] if progress and is_main_process() else []
        self._fit_callbacks = [*self.callbacks, *bar]
        self.progress = Progress() if resume is None else Progress.from_dict(resume.progress)
        if resume is not None:
            self._load_callback_states(resume.callbacks)
        self.start_time = time.perf_counter() - self.progress.elapsed
        try:
            self.optimizer = self._build_optimizer(None if resume is None else resume.optimizer["groups"])
            self._call("on_fit_start")
            horizon = (
                self.budget.horizon(self) if self.budget is not None else planned_epochs(self.config, self.model.depth)
            )
            self.scheduler = make_lr_scheduler(self.optimizer, self.config, horizon)
            if resume is None:
                self._call("on_stage_start")
                self._phase_started()
            else:
                load_optimizer_state(self.optimizer, self.model, resume.optimizer, resume.path / "trainer.json")
                if self.scheduler is not None and resume.scheduler is not None:
                    self.scheduler.load_state_dict(resume.scheduler)
                restore_rng(resume, self.generators)
                self._phase_started()
            self._loop()
            self._call("on_fit_end")
        except BaseException:
            for callback in bar:
                callback.on_fit_end(self)  # close the bar, whatever went wrong
            raise
        finally:
            self.distributed_run.parameters_changed()
        self.history.wall_time = time.perf_counter() - self.start_time
        self._resume = None
        return self.history

    def add_parameters(self, parameters: Sequence[torch.nn.Parameter]) -> None:
        """Hand new parameters of the model (a callback's own layers) to the live optimiser and
        scheduler as one group at the current rate (:func:`~topogrow.training.live_optimizer.add_parameters`)."""
        add_parameters(self.optimizer, list(parameters), self.scheduler)
        self.distributed_run.parameters_changed()

    def monitored(self, record: EpochRecord | StageRecord) -> float:
        """The value of ``config.monitor`` in ``record``."""
        return monitored(self.config, record)

    def monitored_now(self) -> float | None:
        """``config.monitor`` for the model as it is now (``None`` without validation data, for the
        validation loss): what early stopping and rollback judge a stage's start by."""
        monitor = self.config.monitor
        if monitor == "val_loss":
            return self.validation_loss()
        if monitor == "train_loss":
            return evaluate_loss(self.model, self.train_source.loader, self.loss, self.distributed_run.reduce)
        return self._evaluate_metrics()[monitor]

    def end_stage(self) -> None:
        """End the current stage (or the final phase) after this epoch, whatever the schedule says."""
        self.progress.stage_over = True

    def snapshot(self) -> dict[str, Any]:
        """The model's weights, the optimiser's state of each parameter (by name) and which
        parameters train, as copies (:meth:`restore` puts them back on a model of the same
        architecture; :func:`~topogrow.training.live_optimizer.snapshot`)."""
        return snapshot(self.model, self.optimizer)

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Put a :meth:`snapshot` back: weights, which parameters train, and each parameter's
        optimiser state; the optimiser and the scheduler stay live
        (:func:`~topogrow.training.live_optimizer.restore`)."""
        restore(self.model, self.optimizer, self.scheduler, snapshot)
        self.distributed_run.parameters_changed()

    def stop_growth(self, reason: str) -> None:
        """End the growth phase now (the final epochs follow), with ``reason`` in the history."""
        self.history.stop_reason = reason
        self.progress.phase = "final"
        self.progress.stage_over = False

    def validation_loss(self) -> float | None:
        """The loss on the validation data of :meth:`fit` as the model is now (``None`` without any)."""
        if self.val_source is None:
            return None
        return evaluate_loss(self.model, self.val_source.loader, self.loss, self.distributed_run.reduce)

    def callback_states(self) -> dict[str, dict[str, Any]]:
        """Each stateful callback's ``state_dict()``, by class name (numbered when repeated)."""
        return {key: state for key, callback in self._keyed_callbacks() if (state := callback.state_dict())}

    # --------------------------------------------------------------- the loop
    def _loop(self) -> None:
        """Train, decide, insert, ... from wherever ``self.progress`` says the run is."""
        state, checkpoints = self.progress, self._checkpoints
        while state.phase == "grow":
            if state.stage_over or self.schedule.stage_done(state.curve, state.stage):
                self._end_stage()
                self._call("on_stage_start")
                self._phase_started()
                checkpoints.changed()
                checkpoints.save()
            else:
                record = self._epoch()
                if record is None:  # diverged: the run is over
                    break
                value = self.monitored(record)  # the schedules find the lowest: negate a maximised one
                state.curve.append(value if self.config.mode == "min" else -value)
                checkpoints.epoch_done(record.epoch)
        while state.phase == "final":
            if state.final_done >= self.config.final_epochs or state.stage_over:
                state.phase = "done"
                checkpoints.changed()
                break
            record = self._epoch()
            if record is None:
                break
            state.final_done += 1
            checkpoints.epoch_done(record.epoch, last=state.final_done >= self.config.final_epochs or state.stage_over)
        checkpoints.save_if_changed()

    def _end_stage(self) -> None:
        """The end of a stage: record it, let the callbacks see it, decide and insert a layer; the
        global random state is left as it was (growth draws from ``self.generator``)."""
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            self._decide_and_insert()

    def _decide_and_insert(self) -> None:
        record = self._stage_record()
        context = StageContext(
            model=self.model,
            data=self.train_source.data,
            loss=self.loss,
            config=self.config,
            generator=self.generator,
            record=record,
            reduce=self.distributed_run.reduce,
            strategy=self.strategy,
        )
        try:
            self._call("on_stage_end", context)
            if context.stop_reason is None and context.veto_reason is None:
                proposal = context.proposal
                if proposal is None:
                    context.stop("the strategy does not grow")
        except StopGrowth as stop:
            context.stop(str(stop))
        except StageFault as fault:
            self._skip(record, str(fault))
            return
        if context.stop_reason is not None:
            self.stop_growth(context.stop_reason)
            return
        if context.veto_reason is not None:
            record.note = f"insertion vetoed: {context.veto_reason}"
            self._next_stage()
            return
        self._insert(self.distributed_run.agree(proposal), record)

    def _insert(self, proposal, record: StageRecord) -> None:
        """Insert ``proposal`` at the epsilon of the line search, rebuild the optimiser, record it."""
        cfg = self.config
        data = self._line_search_data
        if data is None:  # each process evaluates its share; the loss is averaged over all
            data = self.train_source.subset(math.ceil(cfg.line_search_samples / world_size()))
        reduce = self.distributed_run.reduce
        layer, search = insert_searched(self.model, proposal, data, self.loss, cfg, self.generator, reduce)
        self.add_parameters(layer.parameters())
        self.progress.faults = 0
        record_insertion(record, proposal, search)
        record.wall_time = time.perf_counter() - self.start_time
        self._call("on_insert", Insertion(proposal.location, search.epsilon, layer, proposal, search, record))
        self._next_stage()

    def _epoch(self) -> EpochRecord | None:
        """One epoch of training and the validation loss after it (``None``: it diverged, and the
        run stopped with the best network of the phase)."""
        state = self.progress
        epoch = len(self.history.epochs) + 1
        sampler = getattr(self.train_source.loader, "sampler", None)
        if callable(getattr(sampler, "set_epoch", None)):  # DistributedSampler: a new shuffle each epoch
            sampler.set_epoch(epoch)
        reduce = self.distributed_run.reduce
        self._call("on_train_epoch_start")
        self._check_optimizer_covers()
        lr = float(self.optimizer.param_groups[0]["lr"])
        try:
            trained = self.distributed_run.module(self.model, self.device)
            train_loss = train_epoch(
                trained, self.train_source.loader, self.loss, self.optimizer, reduce, self.options, self._batch_end
            )
        except FloatingPointError as error:
            return self._diverged(epoch, one_line(error).split(":")[0])
        val_loss = self.validation_loss() if self.val_source is not None else train_loss
        problem = self.guard.check(train_loss, val_loss)
        if problem is not None:
            return self._diverged(epoch, problem)
        metrics = self._evaluate_metrics() if self.metrics else None
        wall_time = time.perf_counter() - self.start_time
        record = EpochRecord(
            epoch, state.stage, self.model.depth, train_loss, val_loss, wall_time=wall_time, lr=lr, metrics=metrics
        )
        self.history.epochs.append(record)
        self._call("on_epoch_end", record)
        if self.config.lr_interval == "epoch":
            step_lr_scheduler(self.scheduler, self.monitored(record))
        return record

    def _batch_end(self, index: int, loss: float) -> None:
        """After each training batch: a per-step scheduler steps, the callbacks see the batch."""
        if self.config.lr_interval == "step" and self.scheduler is not None:
            self.scheduler.step()
        self._call("on_train_batch_end", index, loss)

    def _evaluate_metrics(self) -> dict[str, float]:
        """``{"val_<name>": value}`` of every metric on the validation data (the training data without)."""
        source = self.val_source if self.val_source is not None else self.train_source
        _, values = evaluate(self.model, source.loader, self.loss, self.metrics, self.distributed_run.reduce)
        return {f"val_{name}": value for name, value in values.items()}

    def _check_optimizer_covers(self) -> None:
        """Warn once about trainable parameters that are in no optimiser group (they would never train)."""
        missing = [
            (name, p) for name, p in parameters_outside(self.optimizer, self.model) if id(p) not in self._covered
        ]
        if missing:
            self._covered.update(id(p) for _, p in missing)
            names = [name for name, _ in missing]
            warnings.warn(
                f"{len(names)} trainable parameters of the model are in no optimiser group and will not train "
                f"({', '.join(names[:3])}{', ...' if len(names) > 3 else ''}); a callback that adds layers "
                "hands their parameters over with grower.add_parameters(...)",
                RuntimeWarning,
                stacklevel=4,
            )

    def _open_data(self, train, val, transform=None) -> None:
        """The training and validation sources, checked against the model, the loss and the processes."""
        cfg = self.config
        check_data_kind(train, "train")
        if val is not None:
            check_data_kind(val, "val")
        self.train_source = DataSource.from_data(train, "train", cfg.batch_size, True, cfg.seed, transform)
        self.val_source = None
        if val is not None:
            self.val_source = DataSource.from_data(val, "val", cfg.validation_batch_size, False, cfg.seed, transform)
        probe = check_compatible(self.model, self.train_source, "train", self.loss_name)
        if cfg.block is not None:
            check_block(self.model, cfg.block, probe)
        if self.val_source is not None:
            check_compatible(self.model, self.val_source, "val", self.loss_name)
        self.distributed_run = DistributedRun()
        self.distributed_run.check(cfg.block, self.train_source.loader)

    def _build_optimizer(self, groups: list[dict[str, Any]] | None = None) -> torch.optim.Optimizer:
        """The optimiser over the model's parameters, in one group, or in the saved ``groups`` of a
        checkpoint (each ``{"params": [names]}``; their hyper-parameters are loaded afterwards)."""
        if groups is None:
            parameters: list[Any] = list(self.model.parameters())
        else:
            named = dict(self.model.named_parameters())
            try:
                parameters = [{"params": [named[name] for name in group["params"]]} for group in groups]
            except (KeyError, TypeError):
                raise CheckpointError(
                    f"{self._resume.path}: the optimiser's parameters do not match the model's"
                ) from None
        optimizer = self.make_optimizer(parameters)
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"the optimizer factory must return a torch.optim.Optimizer, got {type(optimizer).__name__}"
            )
        return optimizer

    def _generators_to_keep(self) -> dict[str, torch.Generator]:
        """The generators a checkpoint keeps: the grower's and the training shuffler's."""
        generators = {"grower": self.generator}
        shuffler = getattr(self.train_source.loader, "generator", None)
        if isinstance(shuffler, torch.Generator) and shuffler.device.type == "cpu":
            generators["train"] = shuffler
        return generators

    def _stage_record(self) -> StageRecord:
        """This stage's record, from its last epoch (NaN losses for a stage without epochs)."""
        state = self.progress
        last = self.history.epochs[-1] if state.curve else None
        record = StageRecord(
            stage=state.stage,
            epoch=len(self.history.epochs),
            train_loss=last.train_loss if last else math.nan,
            val_loss=last.val_loss if last else math.nan,
            depth=self.model.depth,
            n_parameters=sum(p.numel() for p in self.model.parameters()),
            wall_time=time.perf_counter() - self.start_time,
            metrics=last.metrics if last else None,
        )
        self.history.stages.append(record)
        return record

    def _next_stage(self) -> None:
        self.progress.stage += 1
        self.progress.curve = []
        self.progress.stage_over = False

    def _skip(self, record: StageRecord, fault: str) -> None:
        """Skip this stage's insertion after a numerical fault: warn, note it, train on."""
        state = self.progress
        state.faults += 1
        record.note = f"insertion skipped: {fault}"
        warnings.warn(
            f"stage {record.stage} (epoch {record.epoch}, depth {record.depth}): {record.note}; training goes on",
            RuntimeWarning,
            stacklevel=5,
        )
        if state.faults >= self.config.growth_patience:
            self.stop_growth(f"numerical faults in {state.faults} consecutive stages")
            return
        self._next_stage()

    def _phase_started(self) -> None:
        """A stage or the final phase starts: the divergence guard takes the network's validation loss
        (early stopping's, when it watches that loss: no second evaluation) and keeps the network
        unless early stopping keeps the phase's best. Without validation data the first epoch's
        loss sets the reference (evaluating would draw from the training data's shuffler)."""
        stopping = next((c for c in self.callbacks if isinstance(c, EarlyStopping)), None)
        if stopping is not None and self.config.monitor == "val_loss":
            loss = stopping.best_loss
        else:
            loss = self.validation_loss()
        self.guard.start_phase(self.model, loss, keep=stopping is None)

    def _diverged(self, epoch: int, problem: str) -> None:
        """Stop the run after a diverging epoch with the phase's best network; record and warn in one line."""
        stopping = next((c for c in self.callbacks if isinstance(c, EarlyStopping)), None)
        kept = self.guard.restore_best(self.model, stopping, len(self.history.epochs))
        where = "growth stage" if self.progress.phase == "grow" else "final phase, stage"
        message = (
            f"training diverged at epoch {epoch} ({where} {self.progress.stage}, depth {self.model.depth}): "
            f"{problem}; the run stopped and {kept}; lower the learning rate (lr) or clip the gradients (grad_clip)"
        )
        self.history.diverged = message
        if not self.history.stop_reason:
            self.history.stop_reason = "training diverged"
        self.progress.phase = "done"
        self._checkpoints.changed()
        warnings.warn(message, RuntimeWarning, stacklevel=5)
        return None

    def _call(self, hook: str, *args: Any) -> None:
        for callback in self._fit_callbacks:
            getattr(callback, hook)(self, *args)

    def _keyed_callbacks(self) -> list[tuple[str, Callback]]:
        counts: dict[str, int] = {}
        keyed = []
        for callback in self.callbacks:
            name = type(callback).__name__
            counts[name] = counts.get(name, 0) + 1
            keyed.append((name if counts[name] == 1 else f"{name}-{counts[name]}", callback))
        return keyed

    def _load_callback_states(self, states: dict[str, dict[str, Any]]) -> None:
        for key, callback in self._keyed_callbacks():
            if key in states:
                callback.load_state_dict(states[key])


def _config_callbacks(config: GrowthConfig) -> list[Callback]:
    """The callbacks the config asks for, in order: early stopping (restores the best epoch of a
    stage before anything else looks at it), then rollback (judges the last insertion on it)."""
    callbacks: list[Callback] = []
    if config.early_stopping:
        callbacks.append(EarlyStopping(config.stop_patience, config.min_delta, config.mode))
    if config.rollback:
        callbacks.append(Rollback(config.min_delta, config.on_reject))
    return callbacks
