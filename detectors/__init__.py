"""LiDAR 3D detectors (PointPillars, SECOND) built from configs, split by pipeline stage."""
