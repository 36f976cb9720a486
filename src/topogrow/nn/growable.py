"""What models whose residual layers form one list share: depth, locations, checks."""

from __future__ import annotations

from torch import nn


class LayerListModel(nn.Module):
    """Base for models with residual layers in ``self.layers`` (an ``nn.ModuleList``).

    Location l is the state after l layers: ``0..depth``.
    """

    layers: nn.ModuleList

    @property
    def depth(self) -> int:
        """The number of residual layers T."""
        return len(self.layers)

    @property
    def locations(self) -> range:
        """Insertion locations ``0..depth`` (state x_l after which a layer goes)."""
        return range(self.depth + 1)

    def _check_location(self, location: int) -> None:
        if isinstance(location, bool) or not isinstance(location, int) or not 0 <= location <= self.depth:
            raise ValueError(f"location must be an integer in 0..{self.depth}, got {location!r}")

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
