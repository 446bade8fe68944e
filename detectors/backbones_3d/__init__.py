"""3D point backbones: PointNet++ set abstraction and feature propagation (PointRCNN)."""
from pointdistiller.detectors.backbones_3d.pointnet2 import (LevelGeometry, PointGeometry,
                                                             PointNet2SAMSG, PointNetFPNeck,
                                                             SALevel, SAModuleMSG, plan_geometry)

__all__ = ["SALevel", "LevelGeometry", "PointGeometry", "plan_geometry", "SAModuleMSG",
           "PointNet2SAMSG", "PointNetFPNeck"]
