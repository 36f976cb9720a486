"""Where and how to insert a layer: named strategies in one registry.

Every strategy returns a :class:`Proposal`: a location and a *direction* ``phi``
(the new layer's ``[W | b]`` at epsilon = 1); the grower then picks epsilon by a
line search. Strategies that use the topological derivative receive it; the
others receive ``None``.

- ``td``: the paper. Location with the largest mu_l, eigenvector initialisation.
- ``td-where``: TD location, random initialisation (ablation: only *where* from TD).
- ``td-how``: random location, TD eigenvector there (ablation: only *how* from TD).
- ``random``: random location, random initialisation.

"Random initialisation" is PyTorch's default for a new ``nn.Linear``
(uniform in +-1/sqrt(n)), inserted as drawn, without a line search: that is what
a user who grows by hand gets. (A line search over a random direction is no
fix: half the time phi^T Q phi < 0, every epsilon raises the loss, and the
search returns epsilon = 0, a zero layer that can never train.)
- ``zero``: zero layer right before the head (the function-preserving insertion
  of Net2DeeperNet / AutoGrow). With sigma'(0) = 0 a zero layer has zero gradient,
  so it stays zero: the baseline shows what first-order growth misses.
- ``scratch``: never grows; used to train a fixed architecture from scratch.

Published baselines:

- ``forward-thinking``: Hettinger, Christensen, Ehlert, Humpherys, Jarvis and Wade
  (2017), "Forward Thinking: Building and Training Neural Networks One Layer at a
  Time", arXiv:1706.02480. Append a layer right before the head (the last location)
  with the default random initialisation, inserted as drawn, then *freeze* every
  earlier parameter: only the new layer and the head (for a ViT the head and its final
  ``norm``) train. The freeze stays in force in the final training phase, since the
  method trains layer by layer and never fine-tunes the whole network. The head is kept
  and trained on (warm start) rather than replaced by a fresh one. Frozen parameters
  get ``requires_grad=False``; the grower records their names, so a checkpointed run
  resumes with the same ones frozen (see :attr:`Strategy.freezes`).
- ``sensli``: layer insertion by first-order sensitivity, after Kreis, Leugering,
  Mazumder and Heinrich (2023), "Layer insertion for deep neural networks via
  sensitivities" (the idea also of Evci et al. 2022, "GradMax", for width). At every
  location ``l`` a candidate residual block ``x + W2 act(W1 x + b1)`` with a standard
  activation (tanh) has ``W1, b1`` at their default (random) initialisation and zero
  output weights ``W2 = 0``, so that the network is unchanged; its sensitivity is
  ``||dJ/dW2||_F = ||sum_s p_l,s act(W1 x_l,s + b1)^T||_F`` at ``W2 = 0`` (states
  ``x_l`` and adjoints ``p_l = -dJ/dx_l``, streamed over mini-batches). The candidate of
  the largest sensitivity is inserted as it is, with ``W2 = 0`` and no step, so the
  insertion preserves the function exactly and the next training stage moves ``W2``
  along ``-dJ/dW2`` (which is not zero there, unlike a zero closed-form layer). The block
  is the registered ``"sensli-mlp"`` (``(B, n)`` and ``(B, tokens, d)`` states: the MLP,
  the ViT) or ``"sensli-conv"`` (a "same" convolution then a 1 x 1 one, for the CNN),
  whatever ``GrowthConfig.block`` says.

Net2DeeperNet (Chen, Goodfellow and Shlens, 2016, "Net2Net: Accelerating Learning via
Knowledge Transfer") and AutoGrow (Wen et al., 2020, "AutoGrow: Automatic Layer Growing
in Deep Convolutional Networks") insert identity layers; for residual layers that is
``zero`` above.

With a registered *block* (``GrowthConfig.block``, see :mod:`topogrow.nn.blocks`)
the direction is the block's flat parameter vector instead of rows, the
topological derivative is the matrix-free one, and "random initialisation" is the
block's own default initialisation, flattened.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from topogrow._validation import unknown_name_error
from topogrow.core import MatrixFreeTopologicalDerivative, TopologicalDerivative
from topogrow.core.adjoint import states_and_adjoints
from topogrow.core.batches import iter_batches
from topogrow.core.layer_kinds import Conv2d
from topogrow.core.losses import Loss, resolve_loss
from topogrow.nn.blocks import SensliMLP, make_block


@dataclass(frozen=True)
class Proposal:
    """A layer to insert: ``location`` and its parameters ``direction`` at epsilon = 1.

    For closed-form layer kinds the direction is the rows ``[W | b]`` ``(n, m)``; for a
    block, its flat parameter vector. The inserted layer's ``load_direction`` accepts it.

    ``curvature`` is ``phi^T Q phi`` when known and ``slope`` the first-order rate
    ``G . phi`` (zero unless a block's expansion is first order), so that the
    predicted loss change of the insertion at epsilon is
    ``-epsilon * slope - (epsilon^2 / 2) * curvature``. With ``line_search=False`` the
    layer is inserted as given (epsilon = 1).

    ``block`` names the registered block (:data:`topogrow.nn.blocks.BLOCKS`) to insert
    when the strategy picks its own (``sensli``); ``None`` inserts what the run grows by
    (``GrowthConfig.block``, or the closed-form layer).
    """

    location: int
    direction: torch.Tensor
    curvature: float | None = None
    line_search: bool = True
    slope: float = 0.0
    block: str | None = None

    def predicted_change(self, epsilon: float) -> float | None:
        """The model of the loss change at ``epsilon`` (``None`` if the curvature is unknown)."""
        if self.curvature is None:
            return None
        return -epsilon * self.slope - 0.5 * epsilon**2 * self.curvature


@dataclass(frozen=True)
class Strategy:
    """Base class: a named rule for where and how to grow.

    ``needs_data``: :meth:`propose` takes the training data (``data=``, ``loss=``,
    ``batch_size=``, ``reduce=`` keywords). ``freezes``: after each insertion only the new
    layer and the head train (:meth:`trainable`).
    """

    name: str = "base"
    uses_td: bool = False
    grows: bool = True
    neurons: int | None = None
    rel_threshold: float = 0.1
    keep_blocks: bool = field(default=False, repr=False)
    block: str | None = None
    needs_data: bool = field(default=False, repr=False)
    freezes: bool = field(default=False, repr=False)

    def propose(
        self, model, td: TopologicalDerivative | MatrixFreeTopologicalDerivative | None, generator: torch.Generator
    ) -> Proposal:
        raise NotImplementedError

    def check_model(self, model: nn.Module) -> None:
        """Raise (naming the model) if this strategy cannot grow ``model``; before training."""

    def trainable(self, model: nn.Module, layer: nn.Module) -> list[str]:
        """Names of the parameters that train after ``layer`` was inserted (``freezes`` only)."""
        raise NotImplementedError

    # Shared pieces -------------------------------------------------------------
    def _td_proposal(self, td, location: int) -> Proposal:
        """The TD direction at ``location``, with its predicted-change terms."""
        rows = td.rows(location, 1.0, self.neurons, self.rel_threshold)
        if isinstance(td, MatrixFreeTopologicalDerivative):
            return Proposal(
                location,
                rows,
                td.curvature(location, self.neurons, self.rel_threshold),
                slope=td.slope(location),
            )
        chosen = td.neurons(location, self.neurons, self.rel_threshold)
        return Proposal(location, rows, float(td.block_eigenvalues[location][chosen].sum()))

    def _random_init(self, model, location: int, generator: torch.Generator) -> torch.Tensor:
        """PyTorch's default ``nn.Linear``/``nn.Conv2d`` initialisation: uniform in
        +-1/sqrt(fan_in), for weights and biases alike; for a block, its own default
        initialisation (drawn from ``generator``), flattened."""
        if self.block is not None:
            block = make_block(self.block, model, location, generator=generator)
            return torch.nn.utils.parameters_to_vector(block.parameters()).detach().double()
        n, m = model.insertion_shape(location)
        return (2 * torch.rand(n, m, generator=generator, dtype=torch.float64) - 1) * (m - 1) ** -0.5

    def _zero_direction(self, model, location: int) -> torch.Tensor:
        if self.block is not None:
            block = make_block(self.block, model, location, generator=torch.Generator())  # global RNG untouched
            return torch.zeros(sum(p.numel() for p in block.parameters()), dtype=torch.float64)
        return torch.zeros(model.insertion_shape(location))

    @staticmethod
    def _random_location(model, generator: torch.Generator) -> int:
        return int(torch.randint(len(model.locations), (1,), generator=generator))


@dataclass(frozen=True)
class TD(Strategy):
    name: str = "td"
    uses_td: bool = True

    def propose(self, model, td, generator):
        return self._td_proposal(td, td.best_location)


@dataclass(frozen=True)
class TDWhere(Strategy):
    name: str = "td-where"
    uses_td: bool = True
    keep_blocks: bool = field(default=True, repr=False)

    def propose(self, model, td, generator):
        location = td.best_location
        rows = self._random_init(model, location, generator)
        if isinstance(td, MatrixFreeTopologicalDerivative) and td.slope(location) > 0:
            # first order there: the model is the linear term alone (see FirstOrder)
            return Proposal(location, rows, 0.0, line_search=False, slope=td.linear_form(location, rows))
        return Proposal(location, rows, td.quadratic_form(location, rows), line_search=False)


@dataclass(frozen=True)
class TDHow(Strategy):
    name: str = "td-how"
    uses_td: bool = True

    def propose(self, model, td, generator):
        return self._td_proposal(td, self._random_location(model, generator))


@dataclass(frozen=True)
class Random(Strategy):
    name: str = "random"

    def propose(self, model, td, generator):
        location = self._random_location(model, generator)
        return Proposal(location, self._random_init(model, location, generator), line_search=False)


@dataclass(frozen=True)
class Zero(Strategy):
    name: str = "zero"

    def propose(self, model, td, generator):
        location = model.locations[-1]
        return Proposal(location, self._zero_direction(model, location), 0.0, line_search=False)


@dataclass(frozen=True)
class Scratch(Strategy):
    name: str = "scratch"
    grows: bool = False


#: The modules after the last state of the built-in models: the head (and a ViT's final norm).
HEAD_MODULES = ("norm", "head")


@dataclass(frozen=True)
class ForwardThinking(Strategy):
    """Forward Thinking (Hettinger et al., 2017): append a random layer before the head and
    train only it and the head; every earlier parameter stays frozen from then on."""

    name: str = "forward-thinking"
    freezes: bool = field(default=True, repr=False)

    def propose(self, model, td, generator):
        location = model.locations[-1]
        return Proposal(location, self._random_init(model, location, generator), line_search=False)

    def check_model(self, model):
        if not any(isinstance(getattr(model, name, None), nn.Module) for name in HEAD_MODULES):
            raise TypeError(
                f"strategy 'forward-thinking' trains the new layer and the head, but {type(model).__name__} has "
                f"no module named {' or '.join(repr(n) for n in HEAD_MODULES)}"
            )

    def trainable(self, model, layer):
        keep = {id(p) for p in layer.parameters()}
        for name in HEAD_MODULES:
            module = getattr(model, name, None)
            if isinstance(module, nn.Module):
                keep.update(id(p) for p in module.parameters())
        return [name for name, p in model.named_parameters() if id(p) in keep]


@dataclass(frozen=True)
class Sensli(Strategy):
    """Layer insertion by first-order sensitivity (after Kreis et al., 2023): at the location
    where ``||dJ/dW2||`` of a zero-output candidate block is largest, insert that block
    (``W1, b1`` random, ``W2 = 0``)."""

    name: str = "sensli"
    needs_data: bool = field(default=True, repr=False)

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

    def gradients(
        self,
        model,
        candidates: list[SensliMLP],
        data,
        loss: str | Loss = "mse",
        batch_size: int = 1024,
        reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> list[torch.Tensor]:
        """``dJ/dW2`` (float64) of each candidate at ``W2 = 0``, J the mean loss over ``data``.

        One forward and backward pass of the model per mini-batch gives the states and
        adjoints; then ``dJ/dW2 = -sum_s p_s h_s^T`` with ``h_s = act(W1 x_s + b1)`` (summed
        over token or pixel positions too) is the gradient of ``-sum_s <p_s, g(x_s)>``,
        taken by autograd on each block. With ``reduce`` the sums run over all processes.
        """
        loss_fn = resolve_loss(loss)
        reference = next(model.parameters())
        totals = [torch.zeros(b.output_weight.shape, dtype=torch.float64, device=reference.device) for b in candidates]
        count = 0
        was_training = model.training
        model.eval()
        try:
            for x, y in iter_batches(data, batch_size):
                x = x.to(device=reference.device, dtype=reference.dtype)
                y = y.to(device=reference.device, dtype=reference.dtype if y.is_floating_point() else y.dtype)
                _, states, adjoints = states_and_adjoints(model, x, y, loss_fn)
                for total, block, state, adjoint in zip(totals, candidates, states, adjoints, strict=True):
                    weight = block.output_weight
                    with torch.enable_grad():
                        (grad,) = torch.autograd.grad((block(state) * adjoint).sum(), weight)
                    total -= x.shape[0] * grad.double()  # batch size times d(batch-mean loss)/dW2
                count += x.shape[0]
        finally:
            model.train(was_training)
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

    def propose(self, model, td, generator, data=None, loss="mse", batch_size=1024, reduce=None):
        if data is None:
            raise TypeError("strategy 'sensli' needs the training data: propose(..., data=(X, y), loss=...)")
        candidates = self.candidates(model, generator)
        grads = self.gradients(model, candidates, data, loss, batch_size, reduce)
        sensitivities = torch.stack([g.norm() for g in grads])
        if not torch.isfinite(sensitivities).all():
            raise FloatingPointError("the sensitivities dJ/dW2 are not finite")
        location = int(sensitivities.argmax())
        block = candidates[location]
        direction = torch.nn.utils.parameters_to_vector(block.parameters()).detach().double()
        # W2 = 0: the insertion changes nothing (predicted change 0), inserted as is
        return Proposal(location, direction, 0.0, line_search=False, block=self.block_name(model, location))


STRATEGIES: dict[str, type[Strategy]] = {
    "td": TD,
    "td-where": TDWhere,
    "td-how": TDHow,
    "random": Random,
    "zero": Zero,
    "scratch": Scratch,
    "forward-thinking": ForwardThinking,
    "sensli": Sensli,
}


def make_strategy(
    name: str, neurons: int | None = None, rel_threshold: float = 0.1, block: str | None = None
) -> Strategy:
    """The strategy registered under ``name`` (see :data:`STRATEGIES`), growing by the
    closed-form layer (``block=None``) or by a registered block."""
    if name not in STRATEGIES:
        raise unknown_name_error("strategy", name, STRATEGIES)
    return STRATEGIES[name](neurons=neurons, rel_threshold=rel_threshold, block=block)
