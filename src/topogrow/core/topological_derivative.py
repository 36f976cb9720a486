"""The topological derivative at every insertion location (METHOD.md section 2).

Inserting ``x_l -> x_l + sigma(eps W x_l + eps b)`` changes the loss by
``-(eps^2 / 2) phi^T Q_l phi + O(eps^3)``. The leading eigenvalue ``mu_l`` of
``Q_l`` says *where* to insert (the largest) and its eigenvector *how*.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from topogrow.core.adjoint import StatefulModel, states_and_adjoints
from topogrow.core.batches import Data, iter_batches
from topogrow.core.eigen import leading_block_eigenpairs, select_leading
from topogrow.core.hamiltonian import hamiltonian_blocks, quadratic_form
from topogrow.core.losses import Loss, resolve_loss

PATCH_BUDGET = 1 << 22  # state numbers per chunk when forming patches (about 16 MB in float32)


@dataclass(frozen=True)
class TopologicalDerivative:
    """Leading eigenpairs of the Hamiltonian-Hessian blocks at every location.

    Locations may differ in width (e.g. CNN stages), so per-location tensors are
    kept in tuples indexed by location l:

    Attributes:
        block_eigenvalues: ``block_eigenvalues[l]`` is ``(n_l,)``, the leading eigenvalue
            of the block of each output neuron/channel.
        block_eigenvectors: ``block_eigenvectors[l]`` is ``(n_l, m_l)``, the unit
            eigenvectors, each a row ``[w_c; b_c]`` of the new layer.
        loss: the loss J of the network as it is, over the data used.
        n_samples: S, the number of samples summed over.
        blocks: ``blocks[l]`` is ``(n_l, m_l, m_l)`` if asked for, else ``None``.
    """

    block_eigenvalues: tuple[torch.Tensor, ...]
    block_eigenvectors: tuple[torch.Tensor, ...]
    loss: float
    n_samples: int
    blocks: tuple[torch.Tensor, ...] | None = None

    @property
    def eigenvalues(self) -> torch.Tensor:
        """``(L,)``: the leading eigenvalue mu_l of Q_l at each location l = 0..T."""
        return torch.stack([values.max() for values in self.block_eigenvalues])

    @property
    def best_location(self) -> int:
        """The location with the largest leading eigenvalue: where to insert."""
        return int(torch.argmax(self.eigenvalues))

    @property
    def n_locations(self) -> int:
        return len(self.block_eigenvalues)

    def _check_location(self, location: int) -> None:
        if not 0 <= location < self.n_locations:
            raise ValueError(f"location must be in 0..{self.n_locations - 1}, got {location}")

    def neurons(self, location: int, k: int | None = 1, rel_threshold: float | None = None) -> torch.Tensor:
        """Indices of the neurons (blocks) to activate, largest eigenvalue first.

        Either the top ``k`` blocks, or (``k=None``) every block whose eigenvalue is
        positive and at least ``rel_threshold`` times the largest one (at least one).
        """
        self._check_location(location)
        return select_leading(self.block_eigenvalues[location], k, rel_threshold)

    def rows(
        self, location: int, epsilon: float, k: int | None = 1, rel_threshold: float | None = None
    ) -> torch.Tensor:
        """``(n, m)`` parameters ``[W | b]`` of the new layer: top eigenvectors times epsilon.

        Each chosen neuron c gets row ``epsilon * v_c``; the other rows are zero.
        The predicted loss change is ``-(epsilon^2 / 2) * sum of their mu``.
        """
        chosen = self.neurons(location, k, rel_threshold)
        vectors = self.block_eigenvectors[location]
        rows = torch.zeros_like(vectors)
        rows[chosen] = epsilon * vectors[chosen]
        return rows

    def layer(
        self, location: int, epsilon: float, k: int | None = 1, rel_threshold: float | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(weight (n, m - 1), bias (n,))`` of the new layer (see :meth:`rows`).

        For a dense layer the weight is ``(n, n)``; for a convolution reshape it to
        ``(C, C, k, k)`` (``insert_layer`` accepts either).
        """
        rows = self.rows(location, epsilon, k, rel_threshold)
        return rows[:, :-1].clone(), rows[:, -1].clone()

    def quadratic_form(self, location: int, rows: torch.Tensor) -> float:
        """``phi^T Q_l phi`` for a layer with parameters ``rows`` ``(n, m)`` (needs ``keep_blocks``)."""
        self._check_location(location)
        if self.blocks is None:
            raise ValueError("quadratic_form needs the blocks: call topological_derivative(..., keep_blocks=True)")
        blocks = self.blocks[location]
        return float(quadratic_form(blocks, rows.to(blocks.dtype)))

    def predicted_change(
        self, location: int, epsilon: float, k: int | None = 1, rel_threshold: float | None = None
    ) -> float:
        """Second-order model of the loss change ``J(eps) - J(0) = -(eps^2/2) sum mu``."""
        chosen = self.neurons(location, k, rel_threshold)
        return float(-0.5 * epsilon**2 * self.block_eigenvalues[location][chosen].sum())


def topological_derivative(
    model: StatefulModel,
    data: Data,
    loss: str | Loss = "mse",
    *,
    batch_size: int = 1024,
    keep_blocks: bool = False,
) -> TopologicalDerivative:
    """Topological derivative of ``model`` at every location, streamed over ``data``.

    One forward and one backward pass per mini-batch give the states and adjoints;
    each batch adds its contribution to the blocks of every location and is then
    dropped, so memory does not grow with the number of samples. Blocks are
    accumulated and diagonalised in float64.

    Args:
        model: a growable model (see :class:`StatefulModel`), e.g. ``ResidualMLP``.
        data: a DataLoader of ``(x, y)`` batches, or an ``(X, y)`` pair of tensors.
        loss: ``"mse"``, ``"cross_entropy"`` or a callable returning the batch mean.
        batch_size: mini-batch size when ``data`` is a pair.
        keep_blocks: also return the blocks (memory ``n m^2`` per location).
    """
    if not isinstance(model, StatefulModel):
        raise TypeError(
            f"expected a growable model with forward_states(), insertion_kind() and activation_curvature, "
            f"got {type(model).__name__}"
        )
    loss_fn = resolve_loss(loss)
    parameter = next(model.parameters(), None) if hasattr(model, "parameters") else None
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None else torch.get_default_dtype()
    curvature = float(model.activation_curvature)

    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        blocks: list[torch.Tensor] | None = None
        total, loss_sum = 0, 0.0
        for x, y in iter_batches(data, batch_size):
            x = x.to(device=device, dtype=dtype)
            y = y.to(device=device, dtype=dtype if y.is_floating_point() else y.dtype)
            value, states, adjoints = states_and_adjoints(model, x, y, loss_fn, scale=x.shape[0])
            contributions = []
            for location, (state, adjoint) in enumerate(zip(states, adjoints, strict=True)):
                kind = model.insertion_kind(location)
                # Patches (unfolded convolutions) can be many times the state: a few samples at a time.
                step = max(1, PATCH_BUDGET // max(state[0].numel(), 1))
                block = sum(
                    hamiltonian_blocks(
                        kind.patches(state[i : i + step]), kind.adjoint_rows(adjoint[i : i + step]), curvature
                    ).double()
                    for i in range(0, state.shape[0], step)
                )
                contributions.append(block)
            blocks = contributions if blocks is None else [a + b for a, b in zip(blocks, contributions, strict=True)]
            total += x.shape[0]
            loss_sum += value * x.shape[0]
    finally:
        if was_training and hasattr(model, "train"):
            model.train()
    assert blocks is not None  # iter_batches raises on empty data
    blocks = [b / total for b in blocks]
    pairs = [leading_block_eigenpairs(b) for b in blocks]
    return TopologicalDerivative(
        block_eigenvalues=tuple(p.values for p in pairs),
        block_eigenvectors=tuple(p.vectors for p in pairs),
        loss=loss_sum / total,
        n_samples=total,
        blocks=tuple(blocks) if keep_blocks else None,
    )
