"""Detection heads: the anchor head on the BEV feature map (PointPillars, SECOND) and PointRCNN's
per-point stage-1 head and stage-2 RoI head."""
from pointdistiller.detectors.heads.anchor_head import AnchorHead, AnchorHeadConfig, HeadOutput
from pointdistiller.detectors.heads.point_rcnn_roi_head import (PointRCNNRoIHead, RoIHeadConfig,
                                                                RoIOutput, RoITargets)
from pointdistiller.detectors.heads.point_rpn_head import PointRPNHead, PointRPNHeadConfig, Proposals

__all__ = ["AnchorHead", "AnchorHeadConfig", "HeadOutput", "PointRPNHead", "PointRPNHeadConfig",
           "Proposals", "PointRCNNRoIHead", "RoIHeadConfig", "RoIOutput", "RoITargets"]
