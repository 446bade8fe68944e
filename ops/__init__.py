"""Native ops of pointdistiller (C++ CPU kernels, CUDA kernels, meta kernels for tracing).

One module per op, each a documented wrapper of ``torch.ops.pointdistiller.<name>``:

- ``pointdistiller.ops.voxelize``: ``voxelize``, ``voxelize_dynamic``, ``grid_size``
- ``pointdistiller.ops.scatter``: ``scatter_reduce``
- ``pointdistiller.ops.knn``: ``knn``
- ``pointdistiller.ops.gather_edges``: ``gather_edges``
- ``pointdistiller.ops.iou3d``: ``boxes_overlap_bev``, ``boxes_iou_bev``, ``boxes_iou_3d``, ``nms_bev``

(Functions are not re-exported here: several share their module's name.) Pure-PyTorch references
live in ``pointdistiller.ops.reference`` and are used by the tests only. The first op call loads the
compiled library and says how to build it if it is missing.
"""
from ._loader import load_library  # noqa: F401
