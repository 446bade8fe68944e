"""Detection heads on the BEV feature map."""
from pointdistiller.detectors.heads.anchor_head import AnchorHead, AnchorHeadConfig, HeadOutput

__all__ = ["AnchorHead", "AnchorHeadConfig", "HeadOutput"]
