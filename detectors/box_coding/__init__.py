"""Anchor generation, residual box coding and anchor-to-ground-truth assignment of the anchor head."""
from .anchors import AnchorGenerator
from .assigner import AnchorAssigner, AssignResult, nearest_bev_iou
from .coder import ResidualCoder, direction_bins, limit_period

__all__ = [
    "AnchorGenerator",
    "AnchorAssigner",
    "AssignResult",
    "nearest_bev_iou",
    "ResidualCoder",
    "direction_bins",
    "limit_period",
]
