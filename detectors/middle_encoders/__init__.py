"""Middle encoders: from per-voxel features to a dense bird's-eye-view (BEV) feature map."""
from .pillar_scatter import PointPillarsScatter
from .sparse_encoder import SparseEncoder

__all__ = ["PointPillarsScatter", "SparseEncoder"]
