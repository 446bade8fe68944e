"""Native ops of pointdistiller (C++ CPU kernels, CUDA kernels, meta kernels for tracing).

Every op is importable from here (``from pointdistiller.ops import voxelize, knn``); each is a
documented wrapper of ``torch.ops.pointdistiller.<name>`` in the module of its family:

- ``voxelization``: ``voxelize``, ``voxelize_dynamic``, ``grid_size``
- ``scatter``: ``scatter_reduce``
- ``knn_search``: ``knn``
- ``graph_edges``: ``gather_edges``
- ``iou3d``: ``boxes_overlap_bev``, ``boxes_iou_bev``, ``boxes_iou_3d``, ``nms_bev``
- ``pointnet2``: ``furthest_point_sample``, ``ball_query``, ``group_points``, ``three_nn``,
  ``three_interpolate``, ``points_in_boxes``, ``roipoint_pool3d``

Pure-PyTorch references live in ``pointdistiller.ops.reference`` and are used by the tests only.
The first op call loads the compiled library and says how to build it if it is missing.
"""
from pointdistiller.ops._loader import load_library  # noqa: F401
from pointdistiller.ops.graph_edges import gather_edges
from pointdistiller.ops.iou3d import boxes_iou_3d, boxes_iou_bev, boxes_overlap_bev, nms_bev
from pointdistiller.ops.knn_search import knn
from pointdistiller.ops.pointnet2 import (ball_query, furthest_point_sample, group_points, points_in_boxes,
                        roipoint_pool3d, three_interpolate, three_nn)
from pointdistiller.ops.scatter import scatter_reduce
from pointdistiller.ops.voxelization import DynamicVoxels, HardVoxels, grid_size, voxelize, voxelize_dynamic

__all__ = ["voxelize", "voxelize_dynamic", "grid_size", "HardVoxels", "DynamicVoxels",
           "scatter_reduce", "knn", "gather_edges", "boxes_overlap_bev", "boxes_iou_bev",
           "boxes_iou_3d", "nms_bev", "furthest_point_sample", "ball_query", "group_points",
           "three_nn", "three_interpolate", "points_in_boxes", "roipoint_pool3d"]
