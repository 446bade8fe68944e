"""Box coding and target assignment: anchors, residual coding and anchor assignment of the anchor
head; PointRCNN's per-point residual coder (class mean sizes) and RoI sampling / RoI-frame coding."""
from pointdistiller.detectors.box_coding.anchors import AnchorGenerator
from pointdistiller.detectors.box_coding.assigner import AnchorAssigner, AssignResult, nearest_bev_iou
from pointdistiller.detectors.box_coding.coder import ResidualCoder, direction_bins, limit_period
from pointdistiller.detectors.box_coding.point_coder import PointResidualCoder
from pointdistiller.detectors.box_coding.roi_sampler import (RoISample, RoISampler, canonical_points,
                                                             decode_roi_boxes, encode_roi_targets,
                                                             max_iou_assign, soft_iou_labels)

__all__ = [
    "AnchorGenerator",
    "AnchorAssigner",
    "AssignResult",
    "nearest_bev_iou",
    "ResidualCoder",
    "PointResidualCoder",
    "RoISample",
    "RoISampler",
    "canonical_points",
    "decode_roi_boxes",
    "encode_roi_targets",
    "max_iou_assign",
    "soft_iou_labels",
    "direction_bins",
    "limit_period",
]
