"""PointPillars' pillar feature net: a shared linear layer over decorated points, max over the pillar."""
from typing import Sequence

import torch
from torch import Tensor, nn

# BatchNorm settings of mmdetection3d's PointPillars.
BN_EPS, BN_MOMENTUM = 1e-3, 0.01


class PillarFeatureNet(nn.Module):
    """Pillar features from the points of each pillar (PointPillars, Lang et al. 2019).

    Every valid point is decorated to 9 values: ``x, y, z, r``, its offset to the mean of the
    pillar's points (3) and its offset to the pillar's BEV centre (2). Linear (no bias) + BatchNorm1d
    + ReLU maps them to ``out_channels``; the pillar feature is the max over its points. Padding slots
    (``slot >= num_points``) take no part: neither in the BatchNorm statistics nor in the max.

    Args:
        voxel_size: ``(vx, vy, vz)`` metres.
        point_range: ``(x_min, y_min, z_min, x_max, y_max, z_max)`` metres.
        out_channels: width P of the pillar features.
        num_point_features: values per raw point (x, y, z, intensity = 4).
    """

    def __init__(self, voxel_size: Sequence[float], point_range: Sequence[float],
                 out_channels: int = 64, num_point_features: int = 4):
        super().__init__()
        self.num_point_features = num_point_features
        self.out_channels = out_channels
        self.voxel_size = tuple(float(v) for v in voxel_size)
        self.point_range = tuple(float(v) for v in point_range)
        in_channels = num_point_features + 3 + 2
        self.linear = nn.Linear(in_channels, out_channels, bias=False)
        self.norm = nn.BatchNorm1d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)

    def forward(self, voxels: Tensor, num_points: Tensor, coords: Tensor) -> Tensor:
        """
        Args:
            voxels: ``[V, M, C]`` float32, points of each pillar in its first ``num_points`` slots.
            num_points: ``[V]`` integer, points per pillar.
            coords: ``[V, 4]`` integer ``(batch, z, y, x)`` grid indices of the pillars.

        Returns:
            ``[V, out_channels]`` float32 pillar features, row-aligned with ``voxels``.
        """
        if voxels.dim() != 3 or voxels.shape[-1] != self.num_point_features:
            raise ValueError(f"voxels: expected [V, M, {self.num_point_features}], got "
                             f"{list(voxels.shape)}")
        num_voxels, max_points, _ = voxels.shape
        slots = torch.arange(max_points, device=voxels.device)
        mask = slots[None, :] < num_points[:, None]                           # [V, M]
        xyz = voxels[..., :3]
        count = num_points.clamp(min=1).to(voxels.dtype)[:, None]
        mean = (xyz * mask[..., None].to(voxels.dtype)).sum(dim=1) / count    # [V, 3]
        vx, vy = self.voxel_size[0], self.voxel_size[1]
        centre = torch.stack([coords[:, 3].to(voxels.dtype) * vx + (vx / 2 + self.point_range[0]),
                              coords[:, 2].to(voxels.dtype) * vy + (vy / 2 + self.point_range[1])],
                             dim=1)                                           # [V, 2]
        decorated = torch.cat([voxels, xyz - mean[:, None], xyz[..., :2] - centre[:, None]], dim=-1)

        pillar_index, slot_index = mask.nonzero(as_tuple=True)                 # valid points only
        point_features = torch.relu(self.norm(self.linear(decorated[pillar_index, slot_index])))
        # ReLU output is >= 0, so a zero start does not change the max of a non-empty pillar.
        out = point_features.new_zeros(num_voxels, self.out_channels)
        index = pillar_index[:, None].expand(-1, self.out_channels)
        return out.scatter_reduce(0, index, point_features, reduce="amax", include_self=True)
