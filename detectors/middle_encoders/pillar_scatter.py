"""Scatter of pillar features onto PointPillars' dense BEV canvas."""
from typing import Sequence

from torch import Tensor, nn


class PointPillarsScatter(nn.Module):
    """Places each pillar's feature vector at its ``(y, x)`` cell of a zero BEV canvas.

    One ``index_put`` on a flat ``[B * ny * nx, C]`` canvas, no loop over pillars (traceable and
    exportable). Pillars sharing a cell (never produced by the voxelizer) would keep one of them.

    Args:
        in_channels: pillar feature width C.
        grid_size: ``(nx, ny)`` BEV cells along x and y.
    """

    def __init__(self, in_channels: int, grid_size: Sequence[int]):
        super().__init__()
        self.in_channels = in_channels
        self.nx, self.ny = int(grid_size[0]), int(grid_size[1])

    def forward(self, pillar_features: Tensor, coords: Tensor, batch_size: int) -> Tensor:
        """
        Args:
            pillar_features: ``[V, C]`` float.
            coords: ``[V, 4]`` integer ``(batch, z, y, x)``, with ``0 <= y < ny``, ``0 <= x < nx``.
            batch_size: B.

        Returns:
            ``[B, C, ny, nx]`` float BEV map, zero where there is no pillar.
        """
        if pillar_features.dim() != 2 or pillar_features.shape[1] != self.in_channels:
            raise ValueError(f"pillar_features: expected [V, {self.in_channels}], got "
                             f"{list(pillar_features.shape)}")
        if coords.dim() != 2 or coords.shape != (pillar_features.shape[0], 4):
            raise ValueError(f"coords: expected [{pillar_features.shape[0]}, 4], got "
                             f"{list(coords.shape)}")
        coords = coords.long()
        flat_index = (coords[:, 0] * self.ny + coords[:, 2]) * self.nx + coords[:, 3]
        canvas = pillar_features.new_zeros(batch_size * self.ny * self.nx, self.in_channels)
        canvas = canvas.index_put((flat_index,), pillar_features)
        canvas = canvas.view(batch_size, self.ny, self.nx, self.in_channels)
        return canvas.permute(0, 3, 1, 2).contiguous()
