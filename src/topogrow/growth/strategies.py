"""Where and how to insert a layer: named strategies in one registry.

A strategy answers :meth:`Strategy.propose` with a :class:`~topogrow.growth.context.Proposal`
(a location and a *direction* ``phi``, the new layer's ``[W | b]`` at epsilon = 1), from a
:class:`~topogrow.growth.context.StageContext` (model, data, loss, config, generator and a
lazily computed topological derivative). Returning ``None`` means "do not grow": the loop
goes to its final phase. Register your own with ``@register_strategy("name", help=...)``;
it then shows in ``topogrow run --help`` and ``compare --help`` and runs in ``compare``.

Growth strategies (``topogrow compare``):

- ``td``: the paper. Location with the largest mu_l, eigenvector initialisation.
- ``random``: random location, random initialisation.
- ``zero``: zero layer right before the head (the function-preserving insertion of
  Net2DeeperNet / AutoGrow). With sigma'(0) = 0 a zero layer has zero gradient, so it stays
  zero: the baseline shows what first-order growth misses.
- ``td-where``: TD location, random initialisation (ablation: only *where* from TD).
- ``td-how``: random location, TD eigenvector there (ablation: only *how* from TD).
- ``forward-thinking``: Hettinger et al. (2017), arXiv:1706.02480. Append a random layer right
  before the head, then train only it and the head (:class:`~topogrow.growth.callbacks.Freeze`):
  the method trains layer by layer and never fine-tunes the whole network.
- ``sensli``: layer insertion by first-order sensitivity, after Kreis, Leugering, Mazumder and
  Heinrich (2023) (the idea also of Evci et al. 2022, GradMax, for width). At every location a
  candidate block ``x + W2 tanh(W1 x + b1)`` has ``W1, b1`` at their default initialisation
  and ``W2 = 0``; its sensitivity is ``||dJ/dW2||`` there. The candidate of the largest one is
  inserted as it is (function preserving); the next stage moves ``W2`` along ``-dJ/dW2``.
  The block is ``"sensli-mlp"`` or ``"sensli-conv"`` (CNN), whatever ``GrowthConfig.block`` says.
- ``scratch``: never grows; trains a fixed architecture (``compare`` gives it the final
  architecture of the ``td`` run).

Transfer-learning baselines (:func:`~topogrow.transfer.adapt`):

- ``random-location``: as ``random``.
- ``zero-location``: a random location and a zero layer (epsilon 0): it cannot train.
- ``head-only``, ``full``, ``lora``: never grow; what trains is set by ``adapt``.

"Random initialisation" is PyTorch's default for a new ``nn.Linear``/``nn.Conv2d``
(uniform in +-1/sqrt(fan_in)), inserted as drawn, without a line search: that is what a
user who grows by hand gets. (A line search over a random direction is no fix: half the
time phi^T Q phi < 0, every epsilon raises the loss, and the search returns epsilon = 0, a
zero layer that can never train.) With a registered *block* (``GrowthConfig.block``) the
direction is the block's flat parameter vector, the topological derivative the matrix-free
one, and the random initialisation the block's own default, flattened.

One idea: the named strategies side by side in one registry, kept in one file because each is a
short frozen dataclass and a reader compares them (where, how, what trains) in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from topogrow.core import adjoint_batches
from topogrow.core.layer_kinds import Conv2d
from topogrow.growth.callbacks import Callback, FixedArchitecture, Freeze
from topogrow.growth.context import Proposal, StageContext, StopGrowth
from topogrow.growth.registries import STRATEGIES, register_strategy
from topogrow.nn.blocks import SensliMLP, make_block

__all__ = ["STRATEGIES", "Strategy", "make_strategy", "random_init", "register_strategy"]


def random_init(model, location: int, generator: torch.Generator, block: str | None = None) -> torch.Tensor:
    """PyTorch's default ``nn.Linear``/``nn.Conv2d`` initialisation of the layer at ``location``:
    rows ``[W | b]`` uniform in +-1/sqrt(fan_in), drawn from ``generator`` (float64); for a
    registered ``block``, its own default initialisation, flattened."""
    if block is not None:
        module = make_block(block, model, location, generator=generator)
        return torch.nn.utils.parameters_to_vector(module.parameters()).detach().double()
    n, m = model.insertion_shape(location)
    return (2 * torch.rand(n, m, generator=generator, dtype=torch.float64) - 1) * (m - 1) ** -0.5


def zero_direction(model, location: int, block: str | None = None) -> torch.Tensor:
    """The direction of a zero layer (or zero block) at ``location``."""
    if block is not None:
        module = make_block(block, model, location, generator=torch.Generator())  # global RNG untouched
        return torch.zeros(sum(p.numel() for p in module.parameters()), dtype=torch.float64)
    return torch.zeros(model.insertion_shape(location))


#: The widest patch (``m``, the patch length + 1) whose Hamiltonian blocks growth keeps: above it
#: the topological derivative runs on the iterative solver, which keeps none.
KEEP_LIMIT = 256


def widest_patch(model) -> int:
    """The largest ``m`` of the layers the model can insert (``insertion_shape(l)[1]``)."""
    return max(model.insertion_shape(location)[1] for location in model.locations)


def random_location(context: StageContext) -> int:
    """A location drawn uniformly (from the context's generator) among those it allows."""
    locations = context.locations
    if not locations:
        raise StopGrowth("every location is excluded")
    return locations[int(torch.randint(len(locations), (1,), generator=context.generator))]


def last_location(context: StageContext) -> int:
    """The last location (right before the head), unless it is excluded."""
    location = context.model.locations[-1]
    if location in context.excluded:
        raise StopGrowth(f"location {location} (before the head) is excluded")
    return location


@dataclass(frozen=True)
class Strategy:
    """Base class: a named rule for where and how to grow.

    Attributes:
        name: the registered name.
        neurons: active neurons of a TD layer (top-k blocks); ``None``: ``rel_threshold``.
        rel_threshold: blocks with eigenvalue >= this times the largest are active.
        block: the registered block the run grows by (``None``: the closed-form layer).

    ``for_growth`` and ``for_transfer`` say where the strategy is offered: ``topogrow
    compare`` runs the growth strategies by default, :func:`~topogrow.transfer.adapt`
    accepts the transfer ones; ``location_only`` that it needs only mu_l (what a budget plans for).
    """

    for_growth: ClassVar[bool] = True
    for_transfer: ClassVar[bool] = False
    #: whether it asks the topological derivative only for the location (the budgeted pass)
    location_only: ClassVar[bool] = False

    name: str = "base"
    neurons: int | None = None
    rel_threshold: float = 0.1
    block: str | None = None

    def propose(self, context: StageContext) -> Proposal | None:
        """Where and how to insert at the end of this stage (``None``: do not grow)."""
        raise NotImplementedError

    def propose_at(self, context: StageContext, location: int) -> Proposal:
        """The layer this strategy would insert at a given ``location`` (an ablation of *how*
        without *where*, e.g. ``adapt(..., locations=...)``)."""
        raise NotImplementedError(f"strategy {self.name!r} cannot insert at a given location")

    def check_model(self, model: nn.Module) -> None:
        """Raise (naming the model) if this strategy cannot grow ``model``; before training."""

    def callbacks(self) -> list[Callback]:
        """Callbacks the strategy needs on the loop (e.g. freezing); none by default."""
        return []

    # shared pieces ---------------------------------------------------------
    def td_proposal(self, context: StageContext, location: int) -> Proposal:
        """The topological derivative's layer at ``location``: its leading eigenvectors
        (``neurons`` / ``rel_threshold``), with the predicted-change terms."""
        td = context.topological_derivative()
        return Proposal(
            location,
            td.direction(location, self.neurons, self.rel_threshold),
            td.curvature(location, self.neurons, self.rel_threshold),
            slope=td.slope(location),
        )


@register_strategy("td", help="the paper: location with the largest eigenvalue, eigenvector initialisation")
@dataclass(frozen=True)
class TD(Strategy):
    for_transfer: ClassVar[bool] = True

    name: str = "td"

    def propose(self, context):
        return self.td_proposal(context, context.best_location(context.topological_derivative()))

    def propose_at(self, context, location):
        return self.td_proposal(context, location)


@register_strategy("random", help="random location, random initialisation")
@dataclass(frozen=True)
class Random(Strategy):
    name: str = "random"

    def propose(self, context):
        return self.propose_at(context, random_location(context))

    def propose_at(self, context, location):
        return Proposal(location, random_init(context.model, location, context.generator, self.block), epsilon=1.0)


@register_strategy("zero", help="zero layer before the head (Net2DeeperNet/AutoGrow identity insertion)")
@dataclass(frozen=True)
class Zero(Strategy):
    name: str = "zero"

    def propose(self, context):
        location = last_location(context)
        return Proposal(location, zero_direction(context.model, location, self.block), 0.0, epsilon=1.0)


@register_strategy("td-where", help="TD location, random initialisation (ablation)")
@dataclass(frozen=True)
class TDWhere(Strategy):
    """The TD location, a random layer there. It needs only the location (the budgeted
    location-only pass); the samples it read (or the blocks, or operators) are kept just for the
    predicted change of the drawn layer, and only where they are cheap (patches of at most
    :data:`KEEP_LIMIT`); wider layers get no prediction."""

    location_only: ClassVar[bool] = True

    name: str = "td-where"

    def propose(self, context):
        keep = widest_patch(context.model) <= KEEP_LIMIT
        td = context.topological_derivative(keep=keep, location_only=True)
        location = context.best_location(td)
        rows = random_init(context.model, location, context.generator, self.block)
        if td.slope(location) > 0:  # first order there: the model is the linear term alone
            return Proposal(location, rows, 0.0, slope=td.linear_form(location, rows), epsilon=1.0)
        return Proposal(location, rows, td.quadratic_form(location, rows) if keep else None, epsilon=1.0)


@register_strategy("td-how", help="random location, TD initialisation (ablation)")
@dataclass(frozen=True)
class TDHow(Strategy):
    name: str = "td-how"

    def propose(self, context):
        context.topological_derivative()  # first: a fault or the tolerance stops before the draw
        return self.td_proposal(context, random_location(context))


@register_strategy(
    "forward-thinking",
    help="random layer before the head, earlier layers frozen (Hettinger et al. 2017, Forward Thinking)",
)
@dataclass(frozen=True)
class ForwardThinking(Strategy):
    """Forward Thinking (Hettinger et al., 2017): append a random layer before the head and
    train only it and the head; every earlier parameter stays frozen from then on."""

    name: str = "forward-thinking"

    def propose(self, context):
        location = last_location(context)
        return Proposal(location, random_init(context.model, location, context.generator, self.block), epsilon=1.0)

    def check_model(self, model):
        if not callable(getattr(model, "head_modules", None)) or not model.head_modules():
            raise TypeError(
                f"strategy 'forward-thinking' trains the new layer and the head, but {type(model).__name__} "
                "declares no head modules (head_modules())"
            )

    def callbacks(self):
        return [Freeze(latest_only=True)]


@register_strategy(
    "sensli",
    help="tanh block with zero output weights where ||dJ/dW2|| is largest (Kreis et al. 2023, layer insertion "
    "by sensitivities)",
)
@dataclass(frozen=True)
class Sensli(Strategy):
    """Layer insertion by first-order sensitivity (after Kreis et al., 2023): at the location
    where ``||dJ/dW2||`` of a zero-output candidate block is largest, insert that block
    (``W1, b1`` random, ``W2 = 0``)."""

    name: str = "sensli"

    def block_name(self, model, location: int) -> str:
        """``"sensli-conv"`` where the model inserts convolutions, else ``"sensli-mlp"``."""
        return "sensli-conv" if isinstance(model.insertion_kind(location), Conv2d) else "sensli-mlp"

    def check_model(self, model):
        missing = [
            m for m in ("forward_states", "insertion_kind", "insert_block") if not callable(getattr(model, m, None))
        ]
        if missing:
            raise TypeError(
                f"strategy 'sensli' inserts residual blocks where the adjoints say, but {type(model).__name__} has "
                f"no {', '.join(missing)} (use ResidualMLP, ResidualCNN or ViT)"
            )

    def candidates(self, model, generator: torch.Generator) -> list[SensliMLP]:
        """One candidate block per location: ``W1, b1`` at the default initialisation (drawn
        from ``generator``), ``W2 = 0``; on the model's device and dtype."""
        reference = next(model.parameters())
        blocks = []
        for location in model.locations:
            block = make_block(self.block_name(model, location), model, location, generator=generator)
            block = block.to(device=reference.device, dtype=reference.dtype)
            with torch.no_grad():
                block.output_weight.zero_()
            blocks.append(block)
        return blocks

    def gradients(self, context: StageContext, candidates: list[SensliMLP]) -> list[torch.Tensor]:
        """``dJ/dW2`` (float64) of each candidate at ``W2 = 0``, J the mean loss over the data.

        One forward and backward pass of the model per mini-batch gives the states and
        adjoints; then ``dJ/dW2 = -sum_s p_s h_s^T`` with ``h_s = act(W1 x_s + b1)`` (summed
        over token or pixel positions too) is the gradient of ``-sum_s <p_s, g(x_s)>``,
        taken by autograd on each block. In a distributed run the sums cover every process.
        """
        model, reduce = context.model, context.reduce
        reference = next(model.parameters())
        totals = [torch.zeros(b.output_weight.shape, dtype=torch.float64, device=reference.device) for b in candidates]
        count = 0
        for batch in adjoint_batches(
            model, context.data, context.loss, context.config.td_batch_size, scale_by_batch=False
        ):
            for total, block, state, adjoint in zip(totals, candidates, batch.states, batch.adjoints, strict=True):
                weight = block.output_weight
                with torch.enable_grad():
                    (grad,) = torch.autograd.grad((block(state) * adjoint).sum(), weight)
                total -= batch.size * grad.double()  # batch size times d(batch-mean loss)/dW2
            count += batch.size
        if reduce is not None:
            flat = reduce(
                torch.cat(
                    [t.flatten() for t in totals]
                    + [torch.tensor([float(count)], dtype=torch.float64, device=reference.device)]
                )
            )
            count, offset = float(flat[-1]), 0
            for total in totals:
                total.copy_(flat[offset : offset + total.numel()].view_as(total))
                offset += total.numel()
        return [total / count for total in totals]

    def propose(self, context):
        model = context.model
        candidates = self.candidates(model, context.generator)
        sensitivities = torch.stack([g.norm() for g in self.gradients(context, candidates)])
        if not torch.isfinite(sensitivities).all():
            raise FloatingPointError("the sensitivities dJ/dW2 are not finite")
        sensitivities[list(context.excluded)] = -torch.inf
        location = int(sensitivities.argmax())
        direction = torch.nn.utils.parameters_to_vector(candidates[location].parameters()).detach().double()
        # W2 = 0: the insertion changes nothing (predicted change 0), inserted as is
        return Proposal(location, direction, 0.0, epsilon=1.0, block=self.block_name(model, location))


#: Scale of a "small" random layer against PyTorch's default initialisation.
SMALL_SCALE = 0.1


@register_strategy("small", help="random location, random layer at 0.1x PyTorch's default scale, inserted as drawn")
@dataclass(frozen=True)
class Small(Strategy):
    """A small random layer (``SMALL_SCALE`` times the default initialisation) at a random
    location: separates the effect of inserting *small* from that of the eigenvectors."""

    name: str = "small"

    def propose(self, context):
        return self.propose_at(context, random_location(context))

    def propose_at(self, context, location):
        rows = SMALL_SCALE * random_init(context.model, location, context.generator, self.block)
        return Proposal(location, rows, epsilon=1.0)


@register_strategy("small-where", help="TD location, random layer at 0.1x PyTorch's default scale")
@dataclass(frozen=True)
class SmallWhere(Small):
    """``small`` at the topological derivative's location: *where* from TD, a small random *how*.
    Only the location is needed: the budgeted location-only pass (``location_only=True``)."""

    for_transfer: ClassVar[bool] = True
    location_only: ClassVar[bool] = True

    name: str = "small-where"

    def propose(self, context):
        return self.propose_at(context, context.best_location(context.topological_derivative(location_only=True)))


@register_strategy(
    "td-eigenspace",
    help="TD location; every row drawn from its block's positive eigenspace, row ~ N(0, B_r+/mu_max)",
)
@dataclass(frozen=True)
class TDEigenspace(Strategy):
    """The positive-eigenspace rule: at the TD location, row ``r`` of ``[W | b]`` is drawn from
    ``N(0, B_r^+ / mu_max)``, ``B_r^+`` block ``r`` with its negative eigenvalues dropped and
    ``mu_max`` the location's largest eigenvalue, so no row is left at zero (where sigma'(0) = 0
    keeps it dead); a row whose block has no positive eigenvalue gets a small random row
    (``SMALL_SCALE`` times the default initialisation). Epsilon by the line search.

    Where the blocks are small (patch length ``m <= KEEP_LIMIT`` at every location) they are
    kept (the block solver) and ``B_r^+`` is exact. For wider layers the iterative solver's leading
    eigenpair of each block stands in (``B_r^+ ~ lambda_r v_r v_r^T``: row ``r`` is
    ``sqrt(lambda_r / mu_max) z_r v_r``), so the rule costs no more than ``td`` there. Growing by
    a registered block, the top eigenpairs of the matrix-free operator stand in likewise.
    """

    for_transfer: ClassVar[bool] = True
    #: The widest patch (m) whose blocks are kept for the exact rule.
    KEEP_LIMIT: ClassVar[int] = KEEP_LIMIT

    name: str = "td-eigenspace"

    def _derivative(self, context):
        if self.block is not None:  # the matrix-free operators, for the curvature of the drawn direction
            return context.topological_derivative(keep=True), False
        exact = widest_patch(context.model) <= self.KEEP_LIMIT
        return context.topological_derivative(keep=exact), exact

    def propose(self, context):
        return self.propose_at(context, context.best_location(self._derivative(context)[0]))

    def propose_at(self, context, location):
        td, exact = self._derivative(context)
        if self.block is not None:
            return self._matrix_free(context, td, location)
        if exact:
            values, vectors = torch.linalg.eigh(td.blocks[location])  # (n, m), (n, m, m)
        else:  # the leading eigenpair of each block: (n, 1), (n, m, 1)
            values = td.block_eigenvalues[location][:, None]
            vectors = td.block_eigenvectors[location][:, :, None]
        top = float(values.max())
        scale = (values.clamp(min=0) / top).sqrt() if top > 0 else torch.zeros_like(values)
        z = torch.randn(values.shape, generator=context.generator, dtype=torch.float64)
        rows = torch.einsum("rij,rj->ri", vectors, scale * z)
        dead = values.max(dim=1).values <= 0
        if dead.any():
            small = SMALL_SCALE * random_init(context.model, location, context.generator)
            rows[dead] = small[dead]
        # without the blocks: rows along unit eigenvectors give v^T B v = lambda each; a random row's is unknown
        known = None if dead.any() else float(((scale * z) ** 2 * values).sum())
        return Proposal(location, rows, td.quadratic_form(location, rows) if exact else known)

    def _matrix_free(self, context, td, location):
        values, vectors = td.block_eigenvalues[location], td.block_eigenvectors[location]  # (k,), (k, n)
        top = float(values.max())
        if top <= 0 or td.slope(location) > 0:  # nothing positive, or first order: the TD direction
            return self.td_proposal(context, location)
        z = torch.randn(values.shape, generator=context.generator, dtype=torch.float64)
        direction = ((values.clamp(min=0) / top).sqrt() * z) @ vectors
        return Proposal(location, direction, td.quadratic_form(location, direction))


@dataclass(frozen=True)
class NoGrowth(Strategy):
    """Never grows: trains the architecture as it is."""

    def propose(self, context):
        return None

    def callbacks(self):
        return [FixedArchitecture()]


@register_strategy("scratch", help="the final architecture of the td run, trained from scratch (compare only)")
@dataclass(frozen=True)
class Scratch(NoGrowth):
    name: str = "scratch"


@register_strategy("no-growth", help="the initial network, never grown, trained with the same budget (compare)")
@dataclass(frozen=True)
class NoGrowthBaseline(NoGrowth):
    name: str = "no-growth"


class SmallLayers(Callback):
    """At the start of a fresh fit, insert small random layers (``SMALL_SCALE`` times the default
    initialisation, as ``small`` inserts them) at random locations until the model has
    ``config.max_depth`` layers: a fixed network whose residual layers beyond the initial ones
    start small (the ReZero / SkipInit family of initialisations)."""

    def on_fit_start(self, grower):
        if grower.progress.phase != "grow" or grower.history.epochs:
            return  # resumed: the layers are in the checkpoint's model
        model, generator = grower.model, grower.generator
        reference = next(model.parameters())
        while model.depth < grower.config.max_depth:
            location = model.locations[int(torch.randint(len(model.locations), (1,), generator=generator))]
            rows = SMALL_SCALE * random_init(model, location, generator)
            layer = model.insert_layer(location)
            layer.load_direction(rows.to(device=reference.device, dtype=reference.dtype))
            grower.add_parameters(layer.parameters())


@register_strategy(
    "small-init",
    help="no growth: depth max_depth from the start, the extra layers small (compare: at the reference depth)",
)
@dataclass(frozen=True)
class SmallInit(NoGrowth):
    """A baseline that keeps growth honest: does growing help, or only starting layers small?"""

    name: str = "small-init"

    def callbacks(self):
        return [SmallLayers(), FixedArchitecture()]


@register_strategy("random-location", help="random location, random initialisation (as random)")
@dataclass(frozen=True)
class RandomLocation(Random):
    for_growth: ClassVar[bool] = False
    for_transfer: ClassVar[bool] = True

    name: str = "random-location"


@register_strategy("zero-location", help="random location, zero layer (it cannot train: only the head learns)")
@dataclass(frozen=True)
class ZeroLocation(Strategy):
    for_growth: ClassVar[bool] = False
    for_transfer: ClassVar[bool] = True

    name: str = "zero-location"

    def propose(self, context):
        return self.propose_at(context, random_location(context))

    def propose_at(self, context, location):
        return Proposal(location, zero_direction(context.model, location, self.block), 0.0, epsilon=0.0)


@dataclass(frozen=True)
class Pretrained(NoGrowth):
    """A transfer baseline that adapts a pretrained network without inserting layers; what
    trains (the head, everything, or low-rank adapters) is set by ``adapt``."""

    for_growth: ClassVar[bool] = False
    for_transfer: ClassVar[bool] = True


register_strategy("head-only", Pretrained, help="no insertion; only the head trains")
register_strategy("full", Pretrained, help="no insertion; every parameter is fine-tuned")
register_strategy("lora", Pretrained, help="no insertion; low-rank adapters on every residual layer train")


def growth_strategies() -> tuple[str, ...]:
    """The registered strategies ``topogrow compare`` runs by default, in registration order."""
    return tuple(name for name, cls in STRATEGIES.items() if cls.for_growth)


def inserts_layers(name: str) -> bool:
    """Whether the registered strategy ``name`` ever inserts a layer."""
    return not issubclass(STRATEGIES[name], NoGrowth)


def transfer_strategies() -> tuple[str, ...]:
    """The registered strategies :func:`~topogrow.transfer.adapt` accepts."""
    return tuple(name for name, cls in STRATEGIES.items() if cls.for_transfer)


def make_strategy(
    name: str, neurons: int | None = None, rel_threshold: float = 0.1, block: str | None = None
) -> Strategy:
    """The strategy registered under ``name`` (see :data:`STRATEGIES`), growing by the
    closed-form layer (``block=None``) or by a registered block."""
    return STRATEGIES[name](name=name, neurons=neurons, rel_threshold=rel_threshold, block=block)
