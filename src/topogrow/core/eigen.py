"""Leading eigenpairs of many small symmetric blocks at once."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LeadingEigenpairs:
    """The largest eigenvalue of each block and its unit eigenvector.

    ``values`` has shape ``(..., n)`` (one per block), ``vectors`` ``(..., n, m)``.
    """

    values: torch.Tensor
    vectors: torch.Tensor


def leading_block_eigenpairs(blocks: torch.Tensor) -> LeadingEigenpairs:
    """Leading eigenpair of every symmetric block in ``blocks`` of shape ``(..., m, m)``.

    Uses one batched ``torch.linalg.eigh`` (O(m^3) per block). The blocks are
    symmetrised first so round-off in their accumulation cannot matter.
    """
    if blocks.ndim < 2 or blocks.shape[-1] != blocks.shape[-2]:
        raise ValueError(f"expected square blocks (..., m, m), got shape {tuple(blocks.shape)}")
    if not torch.isfinite(blocks).all():
        raise FloatingPointError("the Hessian blocks contain NaN or inf: the adjoints are not finite")
    symmetric = 0.5 * (blocks + blocks.transpose(-1, -2))
    values, vectors = torch.linalg.eigh(symmetric)
    return LeadingEigenpairs(values=values[..., -1], vectors=vectors[..., :, -1])


def select_leading(values: torch.Tensor, k: int | None = 1, rel_threshold: float | None = None) -> torch.Tensor:
    """Indices into ``values`` ``(n,)``, largest first: the top ``k``, or (``k=None``) every
    value that is positive and at least ``rel_threshold`` times the largest (at least one)."""
    order = torch.argsort(values, descending=True)
    if k is None:
        if rel_threshold is None:
            raise ValueError("give either k or rel_threshold")
        top = values[order[0]]
        keep = (values[order] > 0) & (values[order] >= rel_threshold * top)
        return order[: max(int(keep.sum()), 1)]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= values.shape[0]:
        raise ValueError(f"k must be an integer in 1..{values.shape[0]}, got {k!r}")
    return order[:k]
