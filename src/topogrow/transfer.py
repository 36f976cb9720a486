"""Transfer learning by growth (METHOD.md section 5): freeze a pretrained network, insert
new layers where the topological derivative on the *target* data is largest, initialised
by its eigenvectors, and train only the new layers (and the head).

:func:`adapt` does this, and runs the baselines it is compared with through ``strategy``:

- ``"td"``: ``n_layers`` insertions, one at a time. Each one computes the topological
  derivative of the (frozen network plus the layers inserted so far) on the target data,
  takes the best location, the rows ``[W | b]`` of its leading eigenvectors
  (``neurons`` of them, or every block above ``rel_threshold`` times the largest), inserts
  a zero layer (the identity) and picks epsilon by the line search on the target loss,
  which never accepts an increase (epsilon = 0 when nothing lowers it).
- ``"random-location"``: a random location and PyTorch's default random initialisation
  (uniform in +-1/sqrt(fan_in)), inserted as drawn, without a line search.
- ``"zero-location"``: a random location and a zero layer. Since sigma'(0) = 0, a zero
  layer gets zero gradients and stays the identity however long it trains: only the head
  learns. :attr:`AdaptResult.notes` says so after the run.
- ``"head-only"``: no insertion (``n_layers`` is ignored); only the head trains.
- ``"full"``: no insertion; every parameter is fine-tuned.
- ``"lora"``: no insertion; a low-rank adapter ``W + B A`` (:mod:`topogrow.nn.lora`) on every
  weight of every residual layer trains (and the head). Its rank (``lora_rank``, by default
  the one whose adapters have closest to as many parameters as ``n_layers`` inserted layers,
  the mean layer size over the locations) makes it a like-for-like baseline for ``"td"``.

Training: with ``epochs=None`` (the default) to convergence under the growth loop's default
rule: ``epochs_per_stage`` epochs after each insertion but the last, then until the loss has not
improved for ``stop_patience`` epochs while the learning rate is halved on plateaus, the best
epoch restored. With a number of ``epochs``, a fixed budget at a constant learning rate: after
each insertion the trainable parameters train for ``epochs // n_layers`` epochs with Adam; the
remainder ``epochs % n_layers`` is added after the last insertion, so ``epochs`` is the total.
Without insertions (``n_layers = 0``, ``"head-only"``, ``"full"``) all of it trains at once.

An application of :mod:`topogrow.growth` (it imports the growth loop; the loop never imports it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from topogrow._validation import check_bool, check_int, check_optional_int, unknown_name_error
from topogrow.core.losses import Loss, resolve_loss
from topogrow.growth.callbacks import Callback, EarlyStopping, FixedArchitecture, Freeze
from topogrow.growth.config import GrowthConfig
from topogrow.growth.grower import Grower
from topogrow.growth.history import EpochRecord
from topogrow.growth.line_search import DEFAULT_EPSILONS, LINE_SEARCHES, LineSearchResult
from topogrow.growth.registries import STRATEGIES
from topogrow.growth.schedules import StageEpochs
from topogrow.growth.strategies import inserts_layers, transfer_strategies
from topogrow.nn.lora import add_low_rank_adapters, rank_for_budget
from topogrow.training.data import DataSource, TensorBatches
from topogrow.training.epochs import evaluate_loss

__all__ = ["AdaptResult", "adapt"]


@dataclass
class AdaptResult:
    """What :func:`adapt` did.

    Attributes:
        model: the adapted model (the one passed in, modified in place).
        strategy: the strategy used.
        locations: where each layer was inserted, in order (locations of the model as it was
            at that insertion).
        epsilons: the epsilon of each insertion (the line search's for ``"td"``, 1.0 for a
            random layer, 0.0 for a zero layer).
        eigenvalues: for ``"td"``, the leading mu_l at every location before each insertion.
        line_searches: for ``"td"``, each insertion's line search (target loss before and after).
        predicted_changes: for ``"td"``, the second-order prediction ``-(eps^2/2) sum mu`` of each.
        lora_rank: for ``"lora"``, the adapters' rank.
        n_trainable: parameters that trained (the new layers, plus the head if asked).
        n_parameters: all parameters of the adapted model.
        initial_loss: the target loss before adaptation.
        final_loss: the target loss after adaptation.
        best_epoch: with ``restore_best``, the epoch of the last stage (1-based index into
            ``history``) whose parameters were kept; the number of epochs before that stage when
            none improved on its starting point.
        history: the losses after every epoch (``stage`` is the insertion it followed, 0-based;
            ``val_loss`` is the training loss when no ``val_data`` was given).
        notes: remarks on the run (e.g. that a zero layer cannot train).
    """

    model: nn.Module
    strategy: str
    locations: list[int] = field(default_factory=list)
    epsilons: list[float] = field(default_factory=list)
    eigenvalues: list[list[float]] = field(default_factory=list)
    line_searches: list[LineSearchResult] = field(default_factory=list)
    predicted_changes: list[float] = field(default_factory=list)
    lora_rank: int | None = None
    n_trainable: int = 0
    n_parameters: int = 0
    initial_loss: float = math.nan
    final_loss: float = math.nan
    best_epoch: int | None = None
    history: list[EpochRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def n_inserted(self) -> int:
        """The number of layers inserted."""
        return len(self.locations)


class ForcedLocations(Callback):
    """Insert at the given locations, one per stage, with the strategy's layer there
    (:meth:`~topogrow.growth.strategies.Strategy.propose_at`) instead of where it would choose."""

    def __init__(self, locations: Sequence[int]) -> None:
        self.locations = list(locations)
        self.used = 0

    def on_stage_end(self, grower, context):
        if context.stop_reason is None and self.used < len(self.locations):
            context.proposal = context.strategy.propose_at(context, self.locations[self.used])
            self.used += 1


class LowRankAdapters(Callback):
    """Attach low-rank adapters ``W + B A`` (:mod:`topogrow.nn.lora`) to every residual layer at
    the start of the fit, drawing ``A`` from the grower's generator."""

    def __init__(self, rank: int) -> None:
        self.rank = rank

    def on_fit_start(self, grower):
        adapters = add_low_rank_adapters(grower.model, self.rank, grower.generator)
        grower.add_parameters([p for adapter in adapters for p in adapter.parameters()])


class _Recorder(Callback):
    """Collects what :class:`AdaptResult` reports about each insertion."""

    def __init__(self, result: AdaptResult) -> None:
        self.result = result
        self.layers: list[nn.Module] = []

    def on_insert(self, grower, insertion):
        self.layers.append(insertion.layer)
        result, record = self.result, insertion.record
        result.locations.append(insertion.location)
        result.epsilons.append(float(insertion.epsilon))
        if record.eigenvalues is not None:  # the strategy used the topological derivative
            result.eigenvalues.append(record.eigenvalues)
            result.line_searches.append(insertion.search)
            result.predicted_changes.append(record.predicted_change)


def _check_arguments(
    model,
    strategy,
    n_layers,
    train_head,
    epochs,
    lr,
    batch_size,
    seed,
    neurons,
    rel_threshold,
    epsilons,
    line_search,
    lora_rank,
    restore_best,
    val_data,
    locations,
) -> None:
    if not isinstance(strategy, str) or strategy not in transfer_strategies():
        STRATEGIES.check(strategy)
        raise ValueError(
            f"strategy {strategy!r} does not adapt a pretrained network; expected one of: "
            f"{', '.join(transfer_strategies())}"
        )
    for attribute in ("insert_layer", "forward_states", "insertion_shape", "head_modules", "locations"):
        if not hasattr(model, attribute):
            raise TypeError(
                f"expected a growable model (ResidualMLP, ResidualCNN, ViT, or a network of your own made growable "
                f"with topogrow.nn.as_growable(stem, blocks, head)) with {attribute}, got {type(model).__name__}"
            )
    check_int("n_layers", n_layers, minimum=0)
    if epochs is not None:
        check_int("epochs", epochs, minimum=0)
    check_int("batch_size", batch_size, minimum=1)
    check_int("seed", seed, minimum=0)
    check_bool("train_head", train_head)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    check_optional_int("neurons", neurons, minimum=1)
    if rel_threshold is not None and (
        isinstance(rel_threshold, bool) or not isinstance(rel_threshold, (int, float)) or not 0 <= rel_threshold <= 1
    ):
        raise ValueError(f"rel_threshold must be a number in [0, 1] or None, got {rel_threshold!r}")
    if neurons is None and rel_threshold is None:
        raise ValueError("give neurons (the top k eigenvectors) or rel_threshold")
    if isinstance(epsilons, (str, bytes)) or not isinstance(epsilons, Sequence) or len(epsilons) == 0:
        raise ValueError(f"epsilons must be a non-empty sequence of numbers > 0, got {epsilons!r}")
    for eps in epsilons:
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (math.isfinite(eps) and eps > 0):
            raise ValueError(f"epsilons must be finite numbers > 0, got {eps!r}")
    if line_search not in LINE_SEARCHES:
        raise unknown_name_error("line search", line_search, LINE_SEARCHES)
    check_optional_int("lora_rank", lora_rank, minimum=1)
    if strategy == "lora" and n_layers == 0 and lora_rank is None:
        raise ValueError(
            "strategy 'lora' matches the parameters of n_layers inserted layers: give n_layers >= 1 or lora_rank"
        )
    if strategy == "head-only" and not train_head:
        raise ValueError("strategy 'head-only' trains the head: train_head=False leaves nothing to train")
    if locations is not None:
        inserting = [name for name in transfer_strategies() if inserts_layers(name)]
        if strategy not in inserting:
            raise ValueError(f"locations applies to the inserting strategies {inserting}, not {strategy!r}")
        if isinstance(locations, (str, bytes)) or not isinstance(locations, Sequence) or len(locations) != n_layers:
            raise ValueError(f"locations must list one location per inserted layer ({n_layers}), got {locations!r}")
        for index, location in enumerate(locations):
            n_locations = len(model.locations) + index
            if isinstance(location, bool) or not isinstance(location, int) or not 0 <= location < n_locations:
                raise ValueError(
                    f"locations[{index}] must be an integer in 0..{n_locations - 1} (the model then has "
                    f"{n_locations} locations), got {location!r}"
                )
    if restore_best is not None:
        check_bool("restore_best", restore_best)
    if restore_best and val_data is None:
        raise ValueError("restore_best needs val_data (the loss it keeps the best epoch by)")


def adapt(
    model: nn.Module,
    target_data,
    loss: str | Loss = "mse",
    n_layers: int = 2,
    train_head: bool = True,
    epochs: int | None = None,
    lr: float = 1e-3,
    batch_size: int = 64,
    val_data=None,
    strategy: str | None = None,
    seed: int = 0,
    neurons: int | None = None,
    rel_threshold: float | None = 0.1,
    epsilons: Sequence[float] = DEFAULT_EPSILONS,
    lora_rank: int | None = None,
    restore_best: bool | None = None,
    locations: Sequence[int] | None = None,
    line_search: str = "grid",
) -> AdaptResult:
    """Adapt a pretrained growable model to ``target_data`` by inserting new layers.

    The model is modified in place: its pretrained parameters are frozen
    (``requires_grad=False``) and left unchanged (except with ``strategy="full"``), the
    new layers and (``train_head``) the head (``model.head_modules()``) train. See the module
    docstring for the strategies and the epoch schedule. This is the growth loop
    (:class:`~topogrow.growth.grower.Grower`) configured for transfer: target data, the
    pretrained parameters frozen (:class:`~topogrow.growth.callbacks.Freeze`), ``n_layers``
    insertions each followed by its share of the epochs, the line search on all the target
    samples, and (``restore_best``) :class:`~topogrow.growth.callbacks.EarlyStopping`.

    Args:
        model: a pretrained ``ResidualMLP``, ``ResidualCNN`` or ``ViT``.
        target_data: an ``(X, y)`` pair or a DataLoader of the target task.
        loss: ``"mse"``, ``"cross_entropy"`` or a callable returning the batch mean.
        n_layers: layers to insert, one at a time (ignored by ``"head-only"``, ``"full"``, ``"lora"``).
        train_head: also train the head (always true for ``"full"``).
        epochs: ``None``: train to convergence (the module docstring); else the total training
            epochs (``epochs // n_layers`` after each insertion, the remainder after the last)
            at a constant learning rate.
        lr: Adam's learning rate.
        batch_size: mini-batch size for training and evaluation on a pair.
        val_data: optional ``(X, y)`` pair or DataLoader for the per-epoch validation loss.
        strategy: ``"td"``, ``"td-eigenspace"``, ``"random-location"``, ``"zero-location"``,
            ``"head-only"``, ``"full"`` or ``"lora"`` (see
            :func:`~topogrow.growth.strategies.transfer_strategies`); ``None``: the library's
            default strategy (``GrowthConfig().strategy``).
        seed: seeds the shuffling and the random locations and initialisations.
        neurons: for ``"td"``, the number of leading eigenvectors per layer (``None``:
            every block whose eigenvalue is at least ``rel_threshold`` times the largest).
        rel_threshold: see ``neurons``.
        epsilons: the line search's candidates (both signs are tried).
        lora_rank: for ``"lora"``, the adapters' rank (``None``: matched to ``n_layers`` layers).
        restore_best: early stopping: at the end of each stage (the training after an
            insertion), restore the parameters of its epoch with the lowest ``val_data`` loss,
            the state before its first epoch included, before the next insertion (needs
            ``val_data``). ``None`` (the default): on when ``val_data`` is given.
        locations: for the inserting strategies, where each insertion goes (one location of the
            model as it is at that insertion, per layer) instead of where the strategy would
            choose: ``"td"`` then still initialises by the eigenvectors there (an ablation of *how*
            without *where*), ``"random-location"`` by a random layer there.
        line_search: ``"grid"`` (every candidate on all the target samples, as the transfer results
            were made) or ``"model"`` (the cheap search, :attr:`GrowthConfig.line_search`).

    Returns:
        an :class:`AdaptResult`.
    """
    strategy = GrowthConfig().strategy if strategy is None else strategy
    _check_arguments(
        model,
        strategy,
        n_layers,
        train_head,
        epochs,
        lr,
        batch_size,
        seed,
        neurons,
        rel_threshold,
        epsilons,
        line_search,
        lora_rank,
        restore_best,
        val_data,
        locations,
    )
    restore_best = val_data is not None if restore_best is None else restore_best
    loss_fn = resolve_loss(loss)
    source = DataSource.from_data(target_data, "target_data", batch_size, shuffle=True, seed=seed)
    if val_data is not None:
        DataSource.from_data(val_data, "val_data", batch_size, False, seed)  # named errors first
    pair = isinstance(source.data, (tuple, list))
    evaluation = TensorBatches(*source.data, batch_size, shuffle=False, seed=0) if pair else source.loader
    inserts = n_layers if inserts_layers(strategy) else 0

    result = AdaptResult(model=model, strategy=strategy)
    result.initial_loss = evaluate_loss(model, evaluation, loss_fn)
    nothing_trains = inserts == 0 and not train_head and strategy not in ("full", "lora")
    defaults = GrowthConfig()
    converge = epochs is None
    if converge:  # a stage after each insertion but the last, then the final phase
        per_stage, stages = defaults.epochs_per_stage, [defaults.epochs_per_stage] * max(inserts - 1, 0) + [0]
        final_epochs = 0 if nothing_trains else defaults.final_epochs
    else:
        per_stage, remainder = (epochs // inserts, epochs % inserts) if inserts else (epochs, 0)
        stages = [per_stage] * (inserts - 1) + [per_stage + remainder]
        final_epochs = 0 if inserts or nothing_trains else epochs
    config = GrowthConfig(
        strategy=strategy,
        max_depth=model.depth + max(inserts, 1),
        epochs_per_stage=max(per_stage, 1),
        final_epochs=final_epochs,
        tolerance=None,
        growth_patience=inserts + 2,
        neurons=neurons,
        rel_threshold=0.0 if rel_threshold is None else rel_threshold,
        lr=lr,
        batch_size=batch_size,
        eval_batch_size=batch_size,
        epsilons=tuple(epsilons),
        line_search=line_search,
        seed=seed,
        early_stopping=False,  # restore_best adds it (every stage, no patience)
        rollback=False,  # n_layers insertions, as asked
        lr_schedule=defaults.lr_schedule if converge else "constant",  # a fixed budget: shared, constant
        device=str(next(model.parameters()).device),
    )
    callbacks: list[Callback] = []
    if strategy != "full":
        callbacks.append(Freeze(pretrained=True, head=train_head))
    if strategy == "lora":
        if lora_rank is None:
            sizes = [math.prod(model.insertion_shape(location)) for location in model.locations]
            lora_rank = rank_for_budget(model, round(n_layers * sum(sizes) / len(sizes)))
        rank_for_budget(model, 1)  # a model without residual layers has nothing to adapt: say so now
        callbacks.append(LowRankAdapters(lora_rank))
        result.lora_rank = lora_rank
    if converge:  # the default rule's stop: no improvement for stop_patience epochs, the best kept
        callbacks.append(EarlyStopping(defaults.stop_patience, defaults.min_delta))
    elif restore_best:
        callbacks.append(EarlyStopping())
    if locations is not None:
        callbacks.append(ForcedLocations(locations))
    if inserts == 0:
        callbacks.append(FixedArchitecture())
    recorder = _Recorder(result)
    callbacks.append(recorder)
    depth = model.depth
    grower = Grower(
        model,
        loss,
        config,
        callbacks=callbacks,
        # the insertions come first: stage 0 has no epochs, then each insertion gets its share
        schedule=StageEpochs((0, *stages)) if inserts else None,
        generator=torch.Generator().manual_seed(seed),
    )
    grower.fit(target_data, val_data, line_search_data=evaluation)
    for record in grower.history.epochs:
        stage = max(record.depth - depth - 1, 0)
        result.history.append(EpochRecord(record.epoch, stage, record.depth, record.train_loss, record.val_loss))
    restorer = next((c for c in callbacks if isinstance(c, EarlyStopping)), None)
    result.best_epoch = None if restorer is None else restorer.best_epoch

    result.n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    result.n_parameters = sum(p.numel() for p in model.parameters())
    result.final_loss = evaluate_loss(model, evaluation, loss_fn)
    if strategy == "zero-location":
        still_zero = all(bool((p == 0).all()) for layer in recorder.layers for p in layer.parameters())
        state = "are still exactly zero (the identity)" if still_zero else "moved only by numerical noise"
        trained = "only the head trained" if train_head else "nothing trained"
        result.notes.append(
            f"zero-location: a zero layer has zero gradients (sigma'(0) = 0), so it cannot train; "
            f"the inserted layers {state}; {trained}"
        )
    if strategy == "td":
        zero = [i for i, eps in enumerate(result.epsilons) if eps == 0.0]
        if zero:
            result.notes.append(
                f"td: the line search found no epsilon that lowers the target loss at insertion(s) {zero}; "
                "those layers were inserted as the identity"
            )
    return result
