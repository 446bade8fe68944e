"""Detection heads on the BEV feature map."""
from .anchor_head import AnchorHead, AnchorHeadConfig, HeadOutput

__all__ = ["AnchorHead", "AnchorHeadConfig", "HeadOutput"]
