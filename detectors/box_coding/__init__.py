"""Anchor generation, residual box coding and anchor-to-ground-truth assignment of the anchor head."""
from pointdistiller.detectors.box_coding.anchors import AnchorGenerator
from pointdistiller.detectors.box_coding.assigner import AnchorAssigner, AssignResult, nearest_bev_iou
from pointdistiller.detectors.box_coding.coder import ResidualCoder, direction_bins, limit_period

__all__ = [
    "AnchorGenerator",
    "AnchorAssigner",
    "AssignResult",
    "nearest_bev_iou",
    "ResidualCoder",
    "direction_bins",
    "limit_period",
]
