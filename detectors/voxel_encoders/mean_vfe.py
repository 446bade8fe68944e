"""SECOND's voxel feature: the mean of the points in each voxel."""
import torch
from torch import Tensor, nn


class MeanVFE(nn.Module):
    """Mean of each voxel's points (no parameters).

    Args:
        num_point_features: values per point (x, y, z, intensity = 4).
    """

    def __init__(self, num_point_features: int = 4):
        super().__init__()
        self.num_point_features = num_point_features

    @property
    def out_channels(self) -> int:
        return self.num_point_features

    def forward(self, voxels: Tensor, num_points: Tensor) -> Tensor:
        """
        Args:
            voxels: ``[V, M, C]`` float, points of each voxel in its first ``num_points`` slots.
            num_points: ``[V]`` integer, points per voxel (0 gives a zero row).

        Returns:
            ``[V, C]`` float, mean of the valid points.
        """
        if voxels.dim() != 3 or voxels.shape[-1] != self.num_point_features:
            raise ValueError(f"voxels: expected [V, M, {self.num_point_features}], got "
                             f"{list(voxels.shape)}")
        slots = torch.arange(voxels.shape[1], device=voxels.device)
        mask = (slots[None, :] < num_points[:, None]).to(voxels.dtype)
        total = (voxels * mask[..., None]).sum(dim=1)
        return total / num_points.clamp(min=1).to(voxels.dtype)[:, None]
