"""Middle encoders: from per-voxel features to a dense bird's-eye-view (BEV) feature map.

``sparse_encoder.SparseEncoder`` (SECOND) needs spconv; it is imported from its module, so that
PointPillars and everything else load without spconv.
"""
from pointdistiller.detectors.middle_encoders.pillar_scatter import PointPillarsScatter

__all__ = ["PointPillarsScatter"]
