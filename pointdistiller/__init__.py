"""pointdistiller: structured knowledge distillation (PointDistiller) for LiDAR 3D detectors."""

__version__ = "0.1.0"
