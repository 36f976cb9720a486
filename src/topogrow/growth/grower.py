"""The growth loop of METHOD.md section 3: train, decide, insert, repeat."""

from __future__ import annotations

import dataclasses
import math
import re
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from scipy.sparse.linalg import ArpackError
from tqdm.auto import tqdm

from topogrow.core import (
    MatrixFreeTopologicalDerivative,
    TopologicalDerivative,
    matrix_free_topological_derivative,
    resolve_loss,
    topological_derivative,
)
from topogrow.core.losses import Loss
from topogrow.growth import distributed
from topogrow.growth.checkpoint import (
    Checkpoint,
    Checkpointer,
    CheckpointError,
    _check_rebuildable,
    finite_or_none,
    load_optimizer_state,
    read_checkpoint,
    restore_rng,
)
from topogrow.growth.config import GrowthConfig
from topogrow.growth.history import EpochRecord, GrowthHistory, StageRecord
from topogrow.growth.line_search import LineSearchResult, line_search
from topogrow.growth.schedules import FixedEpochs, Plateau
from topogrow.growth.strategies import Proposal, make_strategy
from topogrow.growth.training import (
    DataSource,
    evaluate_loss,
    rebuild_optimizer,
    resolve_device,
    train_epoch,
)
from topogrow.nn.blocks import ResidualBlock, make_block

#: Errors of the topological derivative or of a proposal that skip one insertion (not the run).
NUMERICAL_FAULTS: tuple[type[BaseException], ...] = (FloatingPointError, torch.linalg.LinAlgError, ArpackError)


def _check_data_kind(data: Any, name: str) -> None:
    """A pair that is not two tensors (e.g. numpy arrays) gets a message saying what to do."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and not all(isinstance(d, torch.Tensor) for d in data):
        kinds = ", ".join(type(d).__name__ for d in data)
        raise TypeError(
            f"{name}: expected a pair of tensors (X, y), got ({kinds}); convert with torch.as_tensor, "
            "or pass a DataLoader"
        )


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


@dataclass
class _Progress:
    """Where a run is, as a checkpoint keeps it: the phase (``"grow"``, ``"final"``,
    ``"done"``), the stage, the validation losses of the stage's epochs so far, the best
    validation loss and the stages without improvement, consecutive skipped insertions,
    final epochs done, the wall time spent, and the names of the parameters that train
    (``None``: all; set by a strategy that freezes, such as ``forward-thinking``)."""

    phase: str = "grow"
    stage: int = 0
    curve: list[float] = field(default_factory=list)
    best_val: float = math.inf
    stale: int = 0
    faults: int = 0
    final_done: int = 0
    elapsed: float = 0.0
    trainable: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["best_val"] = finite_or_none(self.best_val)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> _Progress:
        values = dict(values)
        values["best_val"] = math.inf if values.get("best_val") is None else float(values["best_val"])
        values["curve"] = [float(v) for v in values.get("curve", [])]
        if values.get("trainable") is not None:
            values["trainable"] = [str(name) for name in values["trainable"]]
        return cls(**{k: values[k] for k in cls.__dataclass_fields__ if k in values})


class Grower:
    """Grow a model in depth while it trains.

    Each stage trains until the schedule says so, then (unless a stop rule fires)
    asks the strategy where and how to insert a layer, picks epsilon by a line
    search on the training loss, inserts, and rebuilds the optimiser. After growth
    stops, the final network trains ``final_epochs`` more epochs.

    Stop rules: ``max_depth`` reached; every mu_l <= ``tolerance`` (strategies that
    compute the topological derivative; with a block, also no first-order location);
    validation not improving for ``growth_patience`` stages; ``growth_patience``
    insertions in a row skipped for numerical faults.

    ``fit(..., checkpoint_dir=...)`` checkpoints the run; :meth:`from_checkpoint`
    continues it (exactly, on CPU).

    Under an initialised ``torch.distributed`` process group of several processes, each
    giving ``fit`` its own shard of the data, the run is distributed
    (:mod:`topogrow.growth.distributed`): DistributedDataParallel training, the
    topological derivative and the losses summed over all processes, the same insertion
    everywhere, checkpoints written by process 0. Every process needs the same number of
    training batches per epoch.

    With ``config.block`` set (a name in :data:`topogrow.nn.blocks.BLOCKS`) the model
    grows by that block: the topological derivative is the matrix-free one and each
    insertion is a zero ``ResidualBlock`` put in by ``model.insert_block``.

    A strategy that ``freezes`` (``forward-thinking``) leaves only the new layer and the
    head trainable after each insertion: the others get ``requires_grad=False`` (so Adam,
    which still holds every parameter, skips them) and their names are checkpointed.

    Example::

        grower = Grower(model, "mse", GrowthConfig(strategy="td", max_depth=6))
        history = grower.fit((X_train, y_train), (X_val, y_val))
    """

    def __init__(
        self, model: torch.nn.Module, loss: str | Loss = "mse", config: GrowthConfig | None = None, **overrides: Any
    ) -> None:
        config = config or GrowthConfig()
        self.config = config.replace(**overrides) if overrides else config
        self.loss = resolve_loss(loss)
        self._loss_name = loss if isinstance(loss, str) else None
        self.strategy = make_strategy(
            self.config.strategy, self.config.neurons, self.config.rel_threshold, block=self.config.block
        )
        if self.config.block is not None and not callable(getattr(model, "insert_block", None)):
            raise TypeError(
                f"config.block={self.config.block!r} grows by inserting blocks, but {type(model).__name__} has no "
                "insert_block(location, module); use block=None (its closed-form layer) or a model with insert_block"
            )
        self.strategy.check_model(model)
        self.device = resolve_device(self.config.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {self.config.device!r}: CUDA is not available here; use device='cpu'")
        if not isinstance(model, torch.nn.Module) or next(model.parameters(), None) is None:
            raise TypeError(f"expected a model (an nn.Module with parameters), got {type(model).__name__}")
        self.model = model.to(self.device)
        self.history = GrowthHistory(strategy=self.config.strategy)
        self.optimizer: torch.optim.Optimizer | None = None
        #: JSON-able facts about the run that checkpoints keep (e.g. the task), set by the caller.
        self.metadata: dict[str, Any] = {}
        self.progress = _Progress()
        self._resume: Checkpoint | None = None
        self._checkpointer: Checkpointer | None = None
        self._generator = torch.Generator().manual_seed(self.config.seed + 1)
        self._reduce = None  # sums over processes in a distributed fit (see _setup_distributed)
        self._ddp: torch.nn.parallel.DistributedDataParallel | None = None
        self._checkpointing = False
        cfg = self.config
        self.schedule = (
            FixedEpochs(cfg.epochs_per_stage)
            if cfg.schedule == "fixed"
            else Plateau(cfg.patience, cfg.min_delta, cfg.epochs_per_stage)
        )

    # ------------------------------------------------------------------ public
    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        loss: str | Loss | None = None,
        device: str | torch.device | None = None,
    ) -> Grower:
        """A grower that continues the run saved in ``path`` (a checkpoint folder, or a
        checkpoint directory: its newest checkpoint) when :meth:`fit` is called with the same data.

        The model is rebuilt from the checkpoint's spec and weights; the optimiser state,
        the RNG states (torch, numpy, python, the grower's and the data shuffler's
        generators), the progress within the stage and the history are restored, so that
        on CPU the run ends exactly as an uninterrupted one. ``loss`` is needed only when
        the run used a loss callable rather than a name; ``device`` overrides the saved
        one. Raises :class:`~topogrow.growth.checkpoint.CheckpointError` naming the file
        if the checkpoint is truncated or corrupt, ``FileNotFoundError`` if there is none.
        """
        checkpoint = read_checkpoint(path)
        if loss is None:
            if checkpoint.loss is None:
                raise ValueError(f"{checkpoint.path}: the run used a custom loss; pass it as loss=")
            loss = checkpoint.loss
        config = checkpoint.config if device is None else checkpoint.config.replace(device=str(device))
        grower = cls(checkpoint.model, loss, config)
        grower.history = checkpoint.history
        grower.metadata = dict(checkpoint.metadata)
        grower._resume = checkpoint
        return grower

    @property
    def resumed_from(self) -> Path | None:
        """The checkpoint this grower continues (``None`` for a fresh run)."""
        return None if self._resume is None else self._resume.path

    def fit(
        self,
        train,
        val=None,
        progress: bool = False,
        checkpoint_dir: str | Path | None = None,
        checkpoint_every: int = 0,
        keep_checkpoints: int = 2,
    ) -> GrowthHistory:
        """Run the whole growth loop on ``train`` (and ``val`` for the stop rules).

        ``train`` and ``val`` are ``(X, y)`` pairs of tensors or DataLoaders; without
        ``val`` the training loss stands in for the validation loss.

        With ``checkpoint_dir`` a checkpoint (see :mod:`topogrow.growth.checkpoint`) is
        written after every stage, every ``checkpoint_every`` epochs (0: only after
        stages) and at the end; the newest ``keep_checkpoints`` are kept. A grower from
        :meth:`from_checkpoint` continues where its checkpoint left off.

        Numerical faults while deciding an insertion (NaN adjoints, a non-finite or
        singular block) skip that insertion with a ``RuntimeWarning`` (the stage's
        ``note`` says why) and training goes on; a training or validation loss that
        becomes NaN or inf raises ``FloatingPointError`` naming the last good checkpoint.
        """
        cfg = self.config
        if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be an integer >= 0, got {checkpoint_every!r}")
        _check_data_kind(train, "train")
        if val is not None:
            _check_data_kind(val, "val")
        train_source = DataSource.from_data(train, "train", cfg.batch_size, shuffle=True, seed=cfg.seed)
        val_source = (
            DataSource.from_data(val, "val", max(cfg.batch_size, 1024), shuffle=False, seed=cfg.seed)
            if val is not None
            else None
        )
        self._check_compatible(train_source, "train")
        if val_source is not None:
            self._check_compatible(val_source, "val")
        self._setup_distributed(train_source)
        self._checkpointer = None
        if checkpoint_dir is not None:
            _check_rebuildable(self.model)  # fail now, not at the first checkpoint
            resumed = self._resume.path if self._resume is not None else None
            if distributed.is_main_process():  # the others only wait for it (see _checkpoint)
                self._checkpointer = Checkpointer(checkpoint_dir, keep_checkpoints, resumed_from=resumed)
            self._checkpointing = True
        self._checkpoint_every = checkpoint_every
        self._generators = self._data_generators(train_source)
        self.optimizer = rebuild_optimizer(None, self.model.parameters(), cfg.lr, cfg.weight_decay)
        if self._resume is not None:
            checkpoint = self._resume
            load_optimizer_state(self.optimizer, self.model, checkpoint.optimizer, checkpoint.path / "trainer.json")
            restore_rng(checkpoint, self._generators)
            self.progress = _Progress.from_dict(checkpoint.progress)
            self._set_trainable(self.progress.trainable, checkpoint.path / "trainer.json")
            self._saved = True  # the state is the checkpoint's
        else:
            self._saved = False
            self.progress = _Progress()
        self._start = time.perf_counter() - self.progress.elapsed
        self._bar = tqdm(
            desc=f"{cfg.strategy}",
            unit="epoch",
            disable=not progress or not distributed.is_main_process(),
            leave=False,
            initial=len(self.history.epochs),
        )
        try:
            self._loop(train_source, val_source)
        finally:
            self._bar.close()
            self._ddp = None
        self.history.wall_time = time.perf_counter() - self._start
        self._resume = None
        return self.history

    @property
    def distributed(self) -> bool:
        """Whether :meth:`fit` runs over several processes (a process group of more than one)."""
        return distributed.is_distributed()

    # --------------------------------------------------------------- internals
    def _setup_distributed(self, train_source: DataSource) -> None:
        """Check that a distributed run can go ahead: closed-form layers, equal batch counts."""
        self._ddp = None
        self._checkpointing = False
        self._reduce = distributed.all_reduce_sum if self.distributed else None
        if not self.distributed:
            return
        if self.config.block is not None:
            raise NotImplementedError(
                f"growth by a block (block={self.config.block!r}, the matrix-free topological derivative) is "
                "single-process; use block=None (the closed-form layer) under torch.distributed"
            )
        try:
            batches = len(train_source.loader)
        except TypeError:
            raise ValueError(
                "train: under torch.distributed every process needs the same number of batches per epoch; "
                "give a sized DataLoader or an (X, y) pair"
            ) from None
        counts = distributed.all_reduce_sum(torch.tensor([batches, -batches], dtype=torch.float64))
        world = distributed.world_size()
        if counts[0] != world * batches or -counts[1] != world * batches:  # differ somewhere
            raise ValueError(
                f"train: every process needs the same number of batches per epoch (DistributedDataParallel "
                f"steps together); this one (rank {distributed.rank()}) has {batches}. Give each process an "
                "equal shard (topogrow.growth.distributed.shard, or DistributedSampler)"
            )

    def _trainable(self) -> torch.nn.Module:
        """The model to train: itself, or its DistributedDataParallel wrapper (built again
        after each insertion, since the parameter set changed; building it broadcasts
        process 0's parameters)."""
        if self._reduce is None:
            return self.model
        if self._ddp is None:
            device_ids = None
            if self.device.type == "cuda":
                device_ids = [self.device.index if self.device.index is not None else torch.cuda.current_device()]
            self._ddp = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=device_ids)
        return self._ddp

    def _same_proposal(self, proposal: Proposal) -> Proposal:
        """Process 0's proposal on every process (they agree unless a solver is not deterministic)."""
        if self._reduce is None:
            return proposal
        head = torch.tensor([float(proposal.location), float(proposal.curvature or 0.0)], dtype=torch.float64)
        head0 = distributed.broadcast(head.clone())
        disagree = distributed.all_reduce_sum(torch.tensor(float(head0[0] != head[0])))
        if disagree > 0:
            raise RuntimeError(
                f"the processes proposed different locations (process 0: {int(head0[0])}, this one: "
                f"{proposal.location}); their models or data differ in shape"
            )
        direction = distributed.broadcast(proposal.direction.detach().clone().contiguous())
        curvature = None if proposal.curvature is None else float(head0[1])
        return dataclasses.replace(proposal, direction=direction, curvature=curvature)

    def _data_generators(self, train_source: DataSource) -> dict[str, torch.Generator]:
        """The generators whose states a checkpoint keeps (besides the global RNGs)."""
        generators = {"grower": self._generator}
        shuffler = getattr(train_source.loader, "generator", None)
        if isinstance(shuffler, torch.Generator) and shuffler.device.type == "cpu":
            generators["train"] = shuffler
        return generators

    def _loop(self, train_source: DataSource, val_source: DataSource | None) -> None:
        """Train, decide, insert, ... from wherever ``self.progress`` says the run is."""
        cfg, state, every = self.config, self.progress, self._checkpoint_every
        if state.phase == "grow" and not self.strategy.grows:
            self.history.stop_reason = "fixed architecture (no growth)"
            state.phase = "final"
        while state.phase == "grow":
            if self.schedule.stage_done(state.curve):
                self._end_stage(train_source)
                self._saved = False
                self._checkpoint()
            else:
                record = self._epoch(state.stage, train_source, val_source)
                state.curve.append(record.val_loss)
                self._saved = False
                if every and record.epoch % every == 0:
                    self._checkpoint()
        while state.phase == "final":
            if state.final_done >= cfg.final_epochs:
                state.phase = "done"
                self._saved = False
                break
            record = self._epoch(state.stage, train_source, val_source)
            state.final_done += 1
            self._saved = False
            last = state.final_done >= cfg.final_epochs  # checkpointed below, as done
            if every and record.epoch % every == 0 and not last:
                self._checkpoint()
        if not self._saved:
            self._checkpoint()

    def _checkpoint(self) -> None:
        """Write a checkpoint of the run as it is now (when a checkpoint directory was given);
        in a distributed run process 0 writes and the others wait for it."""
        if self._checkpointer is None:
            if self._checkpointing and self._reduce is not None:
                distributed.barrier()
                self._saved = True
            return
        cfg, state = self.config, self.progress
        state.elapsed = time.perf_counter() - self._start
        self.history.wall_time = state.elapsed
        trainer = {
            "config": cfg.to_dict(),
            "loss": self._loss_name,
            "progress": state.to_dict(),
            "history": self.history.to_dict(),
            "metadata": self.metadata,
        }
        summary = {
            "epoch": len(self.history.epochs),
            "stage": state.stage,
            "phase": state.phase,
            "depth": self.model.depth,
        }
        self._checkpointer.save(
            model=self.model, optimizer=self.optimizer, trainer=trainer, generators=self._generators, summary=summary
        )
        self._saved = True
        if self._reduce is not None:
            distributed.barrier()

    def _end_stage(self, train_source: DataSource) -> None:
        """The end of a stage: record it, apply the stop rules, decide and insert a layer."""
        cfg, state = self.config, self.progress
        last = self.history.epochs[-1]
        if last.val_loss < state.best_val * (1 - cfg.min_delta):
            state.best_val, state.stale = last.val_loss, 0
        else:
            state.stale += 1
        record = StageRecord(
            stage=state.stage,
            epoch=last.epoch,
            train_loss=last.train_loss,
            val_loss=last.val_loss,
            depth=self.model.depth,
            n_parameters=self._n_parameters(),
            wall_time=time.perf_counter() - self._start,
        )
        self.history.stages.append(record)
        reason = None
        if self.model.depth >= cfg.max_depth:
            reason = f"reached max depth {cfg.max_depth}"
        elif state.stale >= cfg.growth_patience:
            reason = f"validation loss did not improve for {state.stale} stages"
        td, fault = None, None
        if reason is None and self.strategy.uses_td:
            try:
                td = self._topological_derivative(train_source)
            except NUMERICAL_FAULTS as error:
                fault = f"the topological derivative failed ({_one_line(error)})"
            else:
                eigenvalues = td.eigenvalues
                if not torch.isfinite(eigenvalues).all():
                    fault = "the topological derivative has non-finite eigenvalues"
                else:
                    record.eigenvalues = eigenvalues.tolist()
                    first_order = isinstance(td, MatrixFreeTopologicalDerivative) and bool(td.first_order_locations)
                    if float(eigenvalues.max()) <= cfg.tolerance and not first_order:
                        reason = f"max mu_l = {float(eigenvalues.max()):.3g} <= tolerance {cfg.tolerance:g}"
        if reason is not None:
            self.history.stop_reason = reason
            state.phase = "final"
            return
        proposal = None
        if fault is None:
            data = {}
            if self.strategy.needs_data:
                data = {
                    "data": train_source.data,
                    "loss": self.loss,
                    "batch_size": cfg.td_batch_size,
                    "reduce": self._reduce,
                }
            try:
                proposal = self.strategy.propose(self.model, td, self._generator, **data)
            except NUMERICAL_FAULTS as error:
                fault = f"no layer could be proposed ({_one_line(error)})"
            else:
                if not torch.isfinite(proposal.direction).all():
                    fault = f"the proposed layer at location {proposal.location} is not finite"
        if fault is not None:
            self._skip(record, fault)
            return
        proposal = self._same_proposal(proposal)
        search = self._insert(proposal, train_source)
        state.faults = 0
        record.location = proposal.location
        record.epsilon = search.epsilon
        record.actual_change = search.change
        if proposal.curvature is not None:
            record.predicted_change = proposal.predicted_change(search.epsilon)
        record.wall_time = time.perf_counter() - self._start
        state.stage += 1
        state.curve = []

    def _skip(self, record: StageRecord, fault: str) -> None:
        """Skip this stage's insertion after a numerical fault: warn, note it, train on."""
        cfg, state = self.config, self.progress
        state.faults += 1
        record.note = f"insertion skipped: {fault}"
        warnings.warn(
            f"stage {record.stage} (epoch {record.epoch}, depth {record.depth}): {record.note}; training goes on",
            RuntimeWarning,
            stacklevel=4,
        )
        if state.faults >= cfg.growth_patience:
            self.history.stop_reason = f"numerical faults in {state.faults} consecutive stages"
            state.phase = "final"
            return
        state.stage += 1
        state.curve = []

    def _epoch(self, stage: int, train_source: DataSource, val_source: DataSource | None) -> EpochRecord:
        epoch = len(self.history.epochs) + 1
        sampler = getattr(train_source.loader, "sampler", None)
        if callable(getattr(sampler, "set_epoch", None)):  # DistributedSampler: a new shuffle each epoch
            sampler.set_epoch(epoch)
        try:
            train_loss = train_epoch(self._trainable(), train_source.loader, self.loss, self.optimizer, self._reduce)
        except FloatingPointError as error:
            raise FloatingPointError(self._diverged(epoch, stage, _one_line(error))) from None
        val_loss = evaluate_loss(self.model, val_source.loader, self.loss, self._reduce) if val_source else train_loss
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            problem = f"the {'validation' if math.isfinite(train_loss) else 'training'} loss became "
            problem += f"{val_loss if math.isfinite(train_loss) else train_loss}: lower the learning rate"
            raise FloatingPointError(self._diverged(epoch, stage, problem))
        record = EpochRecord(
            epoch=epoch,
            stage=stage,
            depth=self.model.depth,
            train_loss=train_loss,
            val_loss=val_loss,
        )
        self.history.epochs.append(record)
        self._bar.update(1)
        self._bar.set_postfix(depth=record.depth, train=f"{train_loss:.4f}", val=f"{val_loss:.4f}")
        return record

    def _diverged(self, epoch: int, stage: int, problem: str) -> str:
        """The message of a run stopped by a non-finite loss, naming the last good checkpoint."""
        where = f"epoch {epoch} (stage {stage}, depth {self.model.depth})"
        last = getattr(self, "_checkpointer", None)
        if last is None:
            kept = "no checkpoint was being written"
        elif last.last is None:
            kept = "no checkpoint had been written yet"
        else:
            kept = f"the last good checkpoint is {last.last}"
        return f"{where}: {problem}; the run stopped; {kept}"

    def _topological_derivative(
        self, train_source: DataSource
    ) -> TopologicalDerivative | MatrixFreeTopologicalDerivative:
        cfg = self.config
        if cfg.block is not None:
            return matrix_free_topological_derivative(
                self.model,
                train_source.data,
                self.loss,
                lambda location: make_block(cfg.block, self.model, location),
                k=max(2, cfg.neurons or 1),
                batch_size=cfg.td_batch_size,
                keep_operators=self.strategy.keep_blocks,
                tol=1e-3,
            )
        return topological_derivative(
            self.model,
            train_source.data,
            self.loss,
            batch_size=self.config.td_batch_size,
            keep_blocks=self.strategy.keep_blocks,
            reduce=self._reduce,
        )

    def _insert(self, proposal: Proposal, train_source: DataSource) -> LineSearchResult:
        """Insert the proposed layer with the epsilon the line search picks; rebuild Adam."""
        reference = next(self.model.parameters())
        direction = proposal.direction.to(device=reference.device, dtype=reference.dtype)
        # Distributed: each process evaluates its share of the samples, the loss is averaged over all.
        subset = train_source.subset(math.ceil(self.config.line_search_samples / distributed.world_size()))
        name = proposal.block if proposal.block is not None else self.config.block
        if name is None:
            layer = self.model.insert_layer(proposal.location)
        else:
            block = make_block(name, self.model, proposal.location, generator=self._generator)
            layer = self.model.insert_block(proposal.location, ResidualBlock(block, name=name).zero_())

        def evaluate(epsilon: float) -> float:
            layer.load_direction(epsilon * direction)
            return evaluate_loss(self.model, subset, self.loss, self._reduce)

        before = evaluate(0.0)
        if proposal.line_search:
            search = line_search(evaluate, before, self.config.epsilons)
        else:
            search = LineSearchResult(1.0, before, evaluate(1.0), ())
        evaluate(search.epsilon)
        if self.strategy.freezes:
            self.progress.trainable = self.strategy.trainable(self.model, layer)
            self._set_trainable(self.progress.trainable)
        self.optimizer = rebuild_optimizer(
            self.optimizer, self.model.parameters(), self.config.lr, self.config.weight_decay
        )
        self._ddp = None  # the parameter set changed: wrap again before training
        return search

    def _set_trainable(self, names: list[str] | None, where: Path | None = None) -> None:
        """Only the parameters ``names`` train (``requires_grad``); ``None`` leaves them as they are."""
        if names is None:
            return
        parameters = dict(self.model.named_parameters())
        unknown = sorted(set(names) - set(parameters))
        if unknown:
            raise CheckpointError(f"{where or 'progress'}: trainable parameters {unknown[:3]} are not the model's")
        for name, parameter in parameters.items():
            parameter.requires_grad_(name in names)

    def _n_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def _check_compatible(self, source: DataSource, name: str) -> None:
        """Fail early, in one line naming the data set, if the data does not fit the model or loss.

        Checks the dtypes (floating inputs; floating targets for ``"mse"``; int64 class
        labels or floating class probabilities for ``"cross_entropy"``), that the model
        takes the inputs, the target shape and the label range. For an ``(X, y)`` pair
        every label is checked; for a DataLoader, the first batch.
        """
        if isinstance(source.data, (tuple, list)):
            x, y = source.data
        else:
            batch = next(iter(source.loader), None)
            if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                raise TypeError(
                    f"{name}: each batch of the DataLoader must be a pair (x, y), got {type(batch).__name__}"
                )
            x, y = batch
        if not x.is_floating_point():
            raise TypeError(f"{name}: X has dtype {x.dtype}; expected floating-point inputs (convert with X.float())")
        parameter = next(self.model.parameters())
        try:
            with torch.no_grad():
                prediction = self.model(x[:2].to(device=parameter.device, dtype=parameter.dtype))
        except (ValueError, RuntimeError, IndexError) as error:
            reason = re.sub(r", got \([\d, ]*\)$", "", _one_line(error))  # the probe's shape, not X's
            raise ValueError(f"{name}: the model cannot take X of shape {tuple(x.shape)}: {reason}") from None
        if name == "train" and self.config.block is not None and self.strategy.grows:
            self._check_block(x[:2].to(device=parameter.device, dtype=parameter.dtype))
        loss = self._loss_name
        if loss == "mse" and not y.is_floating_point():
            raise TypeError(
                f"{name}: y has dtype {y.dtype} but the 'mse' loss needs floating-point targets of shape "
                f"(N, {', '.join(map(str, prediction.shape[1:]))}) (convert with y.float())"
            )
        if loss == "cross_entropy":
            if y.is_floating_point():
                if tuple(y.shape[1:]) != tuple(prediction.shape[1:]):
                    raise ValueError(
                        f"{name}: the 'cross_entropy' loss needs int64 class labels of shape (N,) or class "
                        f"probabilities of shape (N, {prediction.shape[1]}), got {y.dtype} of shape {tuple(y.shape)}"
                    )
            elif y.dtype != torch.int64:
                raise TypeError(
                    f"{name}: class labels have dtype {y.dtype}; the 'cross_entropy' loss needs int64 "
                    "(convert with y.long())"
                )
            elif y.ndim != 1:
                raise ValueError(f"{name}: class labels must have shape (N,), got {tuple(y.shape)}")
        if y.is_floating_point():
            if tuple(y.shape[1:]) != tuple(prediction.shape[1:]):
                raise ValueError(
                    f"{name}: targets have shape {tuple(y.shape[1:])} per sample but the model predicts "
                    f"{tuple(prediction.shape[1:])}"
                )
        elif y.dtype == torch.bool or y.is_complex():
            raise TypeError(f"{name}: y has dtype {y.dtype}; expected floating-point targets or int64 class labels")
        elif y.ndim == 1 and prediction.ndim == 2 and len(y) > 0:
            low, high = int(y.min()), int(y.max())
            if low < 0 or high >= prediction.shape[1]:
                raise ValueError(f"{name}: class labels must be in 0..{prediction.shape[1] - 1}, got {low}..{high}")

    def _check_block(self, x: torch.Tensor) -> None:
        """Fail before training if the configured block does not fit the model's states."""
        if not callable(getattr(self.model, "forward_states", None)):
            return
        block_name = self.config.block
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            _, states = self.model.forward_states(x)
            try:
                block = make_block(block_name, self.model, 0).to(device=x.device, dtype=x.dtype)
                out = block(states[0])
            except (TypeError, ValueError, RuntimeError) as error:
                raise ValueError(
                    f"block {block_name!r} does not fit {type(self.model).__name__}: on its states of shape "
                    f"{tuple(states[0].shape)} it fails ({_one_line(error)})"
                ) from None
        if not isinstance(out, torch.Tensor) or out.shape != states[0].shape:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"block {block_name!r} does not fit {type(self.model).__name__}: it maps states of shape "
                f"{tuple(states[0].shape)} to {shape}"
            )
