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

Training: after each insertion the trainable parameters train for ``epochs // n_layers``
epochs with Adam; the remainder ``epochs % n_layers`` is added after the last insertion,
so ``epochs`` is the total. Without insertions (``n_layers = 0``, ``"head-only"``,
``"full"``) all ``epochs`` train at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from topogrow._validation import unknown_name_error
from topogrow.core.losses import Loss, resolve_loss
from topogrow.core.topological_derivative import topological_derivative
from topogrow.growth.history import EpochRecord
from topogrow.growth.line_search import DEFAULT_EPSILONS, LineSearchResult, line_search
from topogrow.growth.strategies import make_strategy
from topogrow.growth.training import DataSource, TensorBatches, evaluate_loss, rebuild_optimizer, train_epoch
from topogrow.nn.lora import add_low_rank_adapters, rank_for_budget

TRANSFER_STRATEGIES: tuple[str, ...] = ("td", "random-location", "zero-location", "head-only", "full", "lora")
INSERTING = ("td", "random-location", "zero-location")


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
        return len(self.locations)


def head_modules(model: nn.Module) -> list[nn.Module]:
    """The modules a model uses as its head: ``model.head``, and the final ``model.norm``
    (a ViT's LayerNorm before the head) when there is one."""
    modules = [model.head]
    norm = getattr(model, "norm", None)
    if isinstance(norm, nn.Module):
        modules.append(norm)
    return modules


def _int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_arguments(
    model: Any,
    strategy: Any,
    n_layers: Any,
    train_head: Any,
    epochs: Any,
    lr: Any,
    batch_size: Any,
    seed: Any,
    neurons: Any,
    rel_threshold: Any,
    epsilons: Any,
    lora_rank: Any,
) -> None:
    if not isinstance(strategy, str) or strategy not in TRANSFER_STRATEGIES:
        raise unknown_name_error("strategy", strategy, TRANSFER_STRATEGIES)
    for attribute in ("insert_layer", "forward_states", "insertion_shape", "head", "locations"):
        if not hasattr(model, attribute):
            raise TypeError(
                f"expected a growable model (ResidualMLP, ResidualCNN, ViT) with {attribute}, "
                f"got {type(model).__name__}"
            )
    _int("n_layers", n_layers, 0)
    _int("epochs", epochs, 0)
    _int("batch_size", batch_size, 1)
    _int("seed", seed, 0)
    if not isinstance(train_head, bool):
        raise ValueError(f"train_head must be True or False, got {train_head!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if neurons is not None:
        _int("neurons", neurons, 1)
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
    if lora_rank is not None:
        _int("lora_rank", lora_rank, 1)
    if strategy == "lora" and n_layers == 0 and lora_rank is None:
        raise ValueError(
            "strategy 'lora' matches the parameters of n_layers inserted layers: give n_layers >= 1 or lora_rank"
        )
    if strategy == "head-only" and not train_head:
        raise ValueError("strategy 'head-only' trains the head: train_head=False leaves nothing to train")


def _evaluation_batches(source: DataSource, batch_size: int):
    """Fixed (unshuffled) batches over all the target data, for the line search and the losses."""
    data = source.data
    if isinstance(data, (tuple, list)):
        return TensorBatches(data[0], data[1], batch_size, shuffle=False, seed=0)
    return source.loader


def adapt(
    model: nn.Module,
    target_data,
    loss: str | Loss = "mse",
    n_layers: int = 2,
    train_head: bool = True,
    epochs: int = 20,
    lr: float = 1e-3,
    batch_size: int = 64,
    val_data=None,
    strategy: str = "td",
    seed: int = 0,
    neurons: int | None = None,
    rel_threshold: float | None = 0.1,
    epsilons: Sequence[float] = DEFAULT_EPSILONS,
    lora_rank: int | None = None,
    restore_best: bool = False,
    locations: Sequence[int] | None = None,
) -> AdaptResult:
    """Adapt a pretrained growable model to ``target_data`` by inserting new layers.

    The model is modified in place: its pretrained parameters are frozen
    (``requires_grad=False``) and left unchanged (except with ``strategy="full"``), the
    new layers and (``train_head``) the head (:func:`head_modules`) train. See the module
    docstring for the strategies and the epoch schedule.

    Args:
        model: a pretrained ``ResidualMLP``, ``ResidualCNN`` or ``ViT``.
        target_data: an ``(X, y)`` pair or a DataLoader of the target task.
        loss: ``"mse"``, ``"cross_entropy"`` or a callable returning the batch mean.
        n_layers: layers to insert, one at a time (ignored by ``"head-only"`` and ``"full"``).
        train_head: also train the head (always true for ``"full"``).
        epochs: total training epochs (``epochs // n_layers`` after each insertion, the
            remainder after the last).
        lr: Adam's learning rate.
        batch_size: mini-batch size for training and evaluation on a pair.
        val_data: optional ``(X, y)`` pair or DataLoader for the per-epoch validation loss.
        strategy: ``"td"``, ``"random-location"``, ``"zero-location"``, ``"head-only"``, ``"full"``.
        seed: seeds the shuffling and the random locations and initialisations.
        neurons: for ``"td"``, the number of leading eigenvectors per layer (``None``:
            every block whose eigenvalue is at least ``rel_threshold`` times the largest).
        rel_threshold: see ``neurons``.
        epsilons: the line search's candidates (both signs are tried).
        lora_rank: for ``"lora"``, the adapters' rank (``None``: matched to ``n_layers`` layers).
        locations: for the inserting strategies, where each insertion goes (one location of the
            model as it is at that insertion, per layer) instead of where the strategy would
            choose: ``"td"`` then still initialises by the eigenvectors there (an ablation of *how*
            without *where*), ``"random-location"`` by a random layer there.
        restore_best: early stopping: at the end of each stage (the training after an
            insertion), restore the parameters of its epoch with the lowest ``val_data`` loss,
            the state before its first epoch included, before the next insertion (needs ``val_data``).

    Returns:
        an :class:`AdaptResult`.
    """
    _check_arguments(
        model, strategy, n_layers, train_head, epochs, lr, batch_size, seed, neurons, rel_threshold, epsilons, lora_rank
    )
    if locations is not None:
        if strategy not in INSERTING:
            raise ValueError(f"locations applies to the inserting strategies {list(INSERTING)}, not {strategy!r}")
        if isinstance(locations, (str, bytes)) or not isinstance(locations, Sequence) or len(locations) != n_layers:
            raise ValueError(f"locations must list one location per inserted layer ({n_layers}), got {locations!r}")
        for index, location in enumerate(locations):
            n_locations = len(model.locations) + index
            if isinstance(location, bool) or not isinstance(location, int) or not 0 <= location < n_locations:
                raise ValueError(
                    f"locations[{index}] must be an integer in 0..{n_locations - 1} (the model then has "
                    f"{n_locations} locations), got {location!r}"
                )
    if not isinstance(restore_best, bool):
        raise ValueError(f"restore_best must be True or False, got {restore_best!r}")
    if restore_best and val_data is None:
        raise ValueError("restore_best needs val_data (the loss it keeps the best epoch by)")
    loss_fn = resolve_loss(loss)
    source = DataSource.from_data(target_data, "target_data", batch_size, shuffle=True, seed=seed)
    val_source = DataSource.from_data(val_data, "val_data", batch_size, False, seed) if val_data is not None else None
    evaluation = _evaluation_batches(source, batch_size)
    generator = torch.Generator().manual_seed(seed)
    if strategy == "full":
        train_head = True
    inserts = n_layers if strategy in INSERTING else 0

    result = AdaptResult(model=model, strategy=strategy)
    result.initial_loss = evaluate_loss(model, evaluation, loss_fn)

    # Freeze (or, for "full", unfreeze) the pretrained network.
    for parameter in model.parameters():
        parameter.requires_grad_(strategy == "full")
    if train_head:
        for module in head_modules(model):
            for parameter in module.parameters():
                parameter.requires_grad_(True)

    if strategy == "lora":
        if lora_rank is None:
            sizes = [math.prod(model.insertion_shape(loc)) for loc in model.locations]
            layer_size = sum(sizes) / len(sizes)
            lora_rank = rank_for_budget(model, round(n_layers * layer_size))
        add_low_rank_adapters(model, lora_rank, generator)
        result.lora_rank = lora_rank

    new_layers: list[nn.Module] = []
    optimizer = None
    per_stage, remainder = (epochs // inserts, epochs % inserts) if inserts else (epochs, 0)
    for stage in range(max(inserts, 1)):
        if inserts:
            forced = None if locations is None else locations[stage]
            layer = _insert(
                model,
                strategy,
                source,
                evaluation,
                loss_fn,
                generator,
                neurons,
                rel_threshold,
                epsilons,
                result,
                forced,
            )
            new_layers.append(layer)
            for parameter in layer.parameters():
                parameter.requires_grad_(True)
        trainable = [p for p in model.parameters() if p.requires_grad]
        stage_epochs = per_stage + (remainder if stage == max(inserts, 1) - 1 else 0)
        if not trainable or stage_epochs == 0:
            continue
        optimizer = rebuild_optimizer(optimizer, trainable, lr, 0.0)
        if restore_best:
            best = (evaluate_loss(model, val_source.loader, loss_fn), _copy_state(model), len(result.history))
        for _ in range(stage_epochs):
            train_loss = train_epoch(model, source.loader, loss_fn, optimizer)
            val_loss = evaluate_loss(model, val_source.loader, loss_fn) if val_source is not None else train_loss
            result.history.append(
                EpochRecord(
                    epoch=len(result.history) + 1,
                    stage=stage,
                    depth=model.depth,
                    train_loss=train_loss,
                    val_loss=val_loss,
                )
            )
            if restore_best and val_loss < best[0]:
                best = (val_loss, _copy_state(model), len(result.history))
        if restore_best:
            model.load_state_dict(best[1])
            result.best_epoch = best[2]

    result.n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    result.n_parameters = sum(p.numel() for p in model.parameters())
    result.final_loss = evaluate_loss(model, evaluation, loss_fn)
    if strategy == "zero-location":
        still_zero = all(bool((p == 0).all()) for layer in new_layers for p in layer.parameters())
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


def _copy_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def _frozen_topological_derivative(model: nn.Module, data, loss_fn: Loss):
    """The topological derivative of a (partly) frozen model.

    ``states_and_adjoints`` differentiates the loss with respect to the states, which
    fails when a frozen stem makes the first states independent of any parameter that
    requires a gradient. Every parameter requires one for the pass (``autograd.grad``
    leaves their ``.grad`` untouched); the flags are restored afterwards.
    """
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for parameter, _ in flags:
            parameter.requires_grad_(True)
        return topological_derivative(model, data, loss_fn)
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)


def _insert(
    model: nn.Module,
    strategy: str,
    source: DataSource,
    evaluation,
    loss_fn: Loss,
    generator: torch.Generator,
    neurons: int | None,
    rel_threshold: float | None,
    epsilons: Sequence[float],
    result: AdaptResult,
    forced: int | None = None,
) -> nn.Module:
    """One insertion of ``strategy`` (at ``forced`` when given), recorded in ``result``; returns the new layer."""
    reference = next(model.parameters())
    if strategy == "td":
        td = _frozen_topological_derivative(model, source.data, loss_fn)
        location = td.best_location if forced is None else forced
        direction = td.rows(location, 1.0, neurons, rel_threshold).to(device=reference.device, dtype=reference.dtype)
        layer = model.insert_layer(location)

        def evaluate(epsilon: float) -> float:
            layer.load_direction(epsilon * direction)
            return evaluate_loss(model, evaluation, loss_fn)

        search = line_search(evaluate, evaluate(0.0), epsilons)
        layer.load_direction(search.epsilon * direction)
        result.eigenvalues.append(td.eigenvalues.tolist())
        result.line_searches.append(search)
        result.predicted_changes.append(td.predicted_change(location, search.epsilon, neurons, rel_threshold))
        epsilon = search.epsilon
    else:
        location = int(torch.randint(len(model.locations), (1,), generator=generator))
        location = location if forced is None else forced
        if strategy == "random-location":  # nn.Linear's / nn.Conv2d's default initialisation
            rows = make_strategy("random")._random_init(model, location, generator)
            layer = model.insert_layer(location)
            layer.load_direction(rows.to(device=reference.device, dtype=reference.dtype))
            epsilon = 1.0
        else:
            layer = model.insert_layer(location)
            epsilon = 0.0
    result.locations.append(location)
    result.epsilons.append(float(epsilon))
    return layer
