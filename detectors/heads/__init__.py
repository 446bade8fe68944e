"""Detection heads on the BEV feature map."""
from .anchor_head import AnchorHead, HeadOutput

__all__ = ["AnchorHead", "HeadOutput"]
