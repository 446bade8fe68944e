"""Voxel encoders: per-voxel (pillar) features from the points grouped in each voxel."""
from .mean_vfe import MeanVFE
from .pillar_feature_net import PillarFeatureNet
from .voxelization import VoxelizationSettings, grid_size

__all__ = ["MeanVFE", "PillarFeatureNet", "VoxelizationSettings", "grid_size"]
