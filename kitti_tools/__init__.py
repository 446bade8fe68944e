"""KITTI I/O, geometry, info/GT-database building, the official-compatible evaluator, and the
synthetic LiDAR scene generator that is the built-in default dataset."""
