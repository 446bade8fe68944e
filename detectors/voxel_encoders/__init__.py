"""Voxel encoders: per-voxel (pillar) features from the points grouped in each voxel."""
from pointdistiller.detectors.voxel_encoders.mean_vfe import MeanVFE
from pointdistiller.detectors.voxel_encoders.pillar_feature_net import PillarFeatureNet
from pointdistiller.detectors.voxel_encoders.voxelization import VoxelizationSettings, grid_size

__all__ = ["MeanVFE", "PillarFeatureNet", "VoxelizationSettings", "grid_size"]
