"""2D BEV backbones and necks (SECOND-style blocks, transposed-conv FPN neck)."""
from pointdistiller.detectors.backbones_2d.second_backbone import SECONDBackbone
from pointdistiller.detectors.backbones_2d.second_fpn import SECONDFPN

__all__ = ["SECONDBackbone", "SECONDFPN"]
