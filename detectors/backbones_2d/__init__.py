"""2D BEV backbones and necks (SECOND-style blocks, transposed-conv FPN neck)."""
from .second_backbone import SECONDBackbone
from .second_fpn import SECONDFPN

__all__ = ["SECONDBackbone", "SECONDFPN"]
