"""The growth loop of METHOD.md section 3: train, decide, insert, repeat."""

from __future__ import annotations

import time
from typing import Any

import torch
from tqdm.auto import tqdm

from topogrow.core import (
    MatrixFreeTopologicalDerivative,
    TopologicalDerivative,
    matrix_free_topological_derivative,
    resolve_loss,
    topological_derivative,
)
from topogrow.core.losses import Loss
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


class Grower:
    """Grow a model in depth while it trains.

    Each stage trains until the schedule says so, then (unless a stop rule fires)
    asks the strategy where and how to insert a layer, picks epsilon by a line
    search on the training loss, inserts, and rebuilds the optimiser. After growth
    stops, the final network trains ``final_epochs`` more epochs.

    Stop rules: ``max_depth`` reached; every mu_l <= ``tolerance`` (strategies that
    compute the topological derivative; with a block, also no first-order location);
    validation not improving for ``growth_patience`` stages.

    With ``config.block`` set (a name in :data:`topogrow.nn.blocks.BLOCKS`) the model
    grows by that block: the topological derivative is the matrix-free one and each
    insertion is a zero ``ResidualBlock`` put in by ``model.insert_block``.

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
        self.strategy = make_strategy(
            self.config.strategy, self.config.neurons, self.config.rel_threshold, block=self.config.block
        )
        if self.config.block is not None and not callable(getattr(model, "insert_block", None)):
            raise TypeError(
                f"config.block={self.config.block!r} grows by inserting blocks, but {type(model).__name__} has no "
                "insert_block(location, module); use block=None (its closed-form layer) or a model with insert_block"
            )
        self.device = resolve_device(self.config.device)
        self.model = model.to(self.device)
        self.history = GrowthHistory(strategy=self.config.strategy)
        self.optimizer: torch.optim.Optimizer | None = None
        self._generator = torch.Generator().manual_seed(self.config.seed + 1)
        cfg = self.config
        self.schedule = (
            FixedEpochs(cfg.epochs_per_stage)
            if cfg.schedule == "fixed"
            else Plateau(cfg.patience, cfg.min_delta, cfg.epochs_per_stage)
        )

    # ------------------------------------------------------------------ public
    def fit(self, train, val=None, progress: bool = False) -> GrowthHistory:
        """Run the whole growth loop on ``train`` (and ``val`` for the stop rules).

        ``train`` and ``val`` are ``(X, y)`` pairs of tensors or DataLoaders; without
        ``val`` the training loss stands in for the validation loss.
        """
        cfg = self.config
        train_source = DataSource.from_data(train, "train", cfg.batch_size, shuffle=True, seed=cfg.seed)
        val_source = (
            DataSource.from_data(val, "val", max(cfg.batch_size, 1024), shuffle=False, seed=cfg.seed)
            if val is not None
            else None
        )
        self._check_compatible(train_source, "train")
        if val_source is not None:
            self._check_compatible(val_source, "val")
        self._start = time.perf_counter()
        self.optimizer = rebuild_optimizer(None, self.model.parameters(), cfg.lr, cfg.weight_decay)
        self._bar = tqdm(desc=f"{cfg.strategy}", unit="epoch", disable=not progress, leave=False)
        try:
            stage = self._grow(train_source, val_source) if self.strategy.grows else 0
            if self.strategy.grows is False:
                self.history.stop_reason = "fixed architecture (no growth)"
            for _ in range(cfg.final_epochs):
                self._epoch(stage, train_source, val_source)
        finally:
            self._bar.close()
        self.history.wall_time = time.perf_counter() - self._start
        return self.history

    # --------------------------------------------------------------- internals
    def _grow(self, train_source: DataSource, val_source: DataSource | None) -> int:
        cfg, stage, best_val, stale = self.config, 0, float("inf"), 0
        while True:
            curve: list[float] = []
            while not self.schedule.stage_done(curve):
                curve.append(self._epoch(stage, train_source, val_source).val_loss)
            last = self.history.epochs[-1]
            if last.val_loss < best_val * (1 - cfg.min_delta):
                best_val, stale = last.val_loss, 0
            else:
                stale += 1
            record = StageRecord(
                stage=stage,
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
            elif stale >= cfg.growth_patience:
                reason = f"validation loss did not improve for {stale} stages"
            td = None
            if reason is None and self.strategy.uses_td:
                td = self._topological_derivative(train_source)
                record.eigenvalues = td.eigenvalues.tolist()
                first_order = isinstance(td, MatrixFreeTopologicalDerivative) and bool(td.first_order_locations)
                if float(td.eigenvalues.max()) <= cfg.tolerance and not first_order:
                    reason = f"max mu_l = {float(td.eigenvalues.max()):.3g} <= tolerance {cfg.tolerance:g}"
            if reason is not None:
                self.history.stop_reason = reason
                return stage
            proposal = self.strategy.propose(self.model, td, self._generator)
            search = self._insert(proposal, train_source)
            record.location = proposal.location
            record.epsilon = search.epsilon
            record.actual_change = search.change
            if proposal.curvature is not None:
                record.predicted_change = proposal.predicted_change(search.epsilon)
            record.wall_time = time.perf_counter() - self._start
            stage += 1

    def _epoch(self, stage: int, train_source: DataSource, val_source: DataSource | None) -> EpochRecord:
        train_loss = train_epoch(self.model, train_source.loader, self.loss, self.optimizer)
        val_loss = evaluate_loss(self.model, val_source.loader, self.loss) if val_source else train_loss
        record = EpochRecord(
            epoch=len(self.history.epochs) + 1,
            stage=stage,
            depth=self.model.depth,
            train_loss=train_loss,
            val_loss=val_loss,
        )
        self.history.epochs.append(record)
        self._bar.update(1)
        self._bar.set_postfix(depth=record.depth, train=f"{train_loss:.4f}", val=f"{val_loss:.4f}")
        return record

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
        )

    def _insert(self, proposal: Proposal, train_source: DataSource) -> LineSearchResult:
        """Insert the proposed layer with the epsilon the line search picks; rebuild Adam."""
        reference = next(self.model.parameters())
        direction = proposal.direction.to(device=reference.device, dtype=reference.dtype)
        subset = train_source.subset(self.config.line_search_samples)
        if self.config.block is None:
            layer = self.model.insert_layer(proposal.location)
        else:
            block = make_block(self.config.block, self.model, proposal.location, generator=self._generator)
            layer = self.model.insert_block(proposal.location, ResidualBlock(block).zero_())

        def evaluate(epsilon: float) -> float:
            layer.load_direction(epsilon * direction)
            return evaluate_loss(self.model, subset, self.loss)

        before = evaluate(0.0)
        if proposal.line_search:
            search = line_search(evaluate, before, self.config.epsilons)
        else:
            search = LineSearchResult(1.0, before, evaluate(1.0), ())
        evaluate(search.epsilon)
        self.optimizer = rebuild_optimizer(
            self.optimizer, self.model.parameters(), self.config.lr, self.config.weight_decay
        )
        return search

    def _n_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def _check_compatible(self, source: DataSource, name: str) -> None:
        """Fail early, with the shapes, if the data does not fit the model or loss.

        For an ``(X, y)`` pair every label is checked; for a DataLoader, the first batch.
        """
        if isinstance(source.data, (tuple, list)):
            x, y = source.data
        else:
            x, y = next(iter(source.loader))
        parameter = next(self.model.parameters())
        with torch.no_grad():
            prediction = self.model(x[:2].to(device=parameter.device, dtype=parameter.dtype))
        if y.is_floating_point():
            if tuple(y.shape[1:]) != tuple(prediction.shape[1:]):
                raise ValueError(
                    f"{name}: targets have shape {tuple(y.shape[1:])} per sample but the model predicts "
                    f"{tuple(prediction.shape[1:])}"
                )
        elif y.ndim == 1 and prediction.ndim == 2 and len(y) > 0:
            low, high = int(y.min()), int(y.max())
            if low < 0 or high >= prediction.shape[1]:
                raise ValueError(f"{name}: class labels must be in 0..{prediction.shape[1] - 1}, got {low}..{high}")
