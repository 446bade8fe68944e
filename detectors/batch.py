"""The one batch container passed from the data loader to detectors, losses and the distiller.

Ragged per-sample data is stored concatenated with offsets (cumulative counts, ``[B + 1]`` int64,
``offsets[0] == 0``), Pointcept/pytorch3d style: sample ``b`` owns rows
``offsets[b]:offsets[b + 1]``.
"""
from dataclasses import dataclass, field, fields, replace
from typing import Any, Dict, List, Optional

import torch
from torch import Tensor


@dataclass
class Batch:
    """A batch of point clouds, their voxels and (for training) their ground-truth boxes.

    Attributes:
        points: ``[P, C]`` float32, all samples' points (x, y, z, intensity, ...) in the LiDAR frame,
            metres.
        point_offsets: ``[B + 1]`` int64.
        voxels: ``[V, max_points, C]`` float32, points grouped per voxel/pillar, unused slots zero.
        voxel_coords: ``[V, 4]`` int32, ``(batch_index, z, y, x)`` grid indices.
        voxel_num_points: ``[V]`` int32, points in each voxel (>= 1).
        voxel_offsets: ``[B + 1]`` int64; voxels of sample ``b`` are contiguous.
        gt_boxes: ``[G, 7]`` float32 LiDAR boxes ``(x, y, z_centre, l, w, h, yaw)``; yaw is about +z,
            0 when the length points along +x.
        gt_labels: ``[G]`` int64 class index into ``kitti_tools.classes.CLASS_NAMES``.
        gt_offsets: ``[B + 1]`` int64.
        frame_ids: the B frame ids (e.g. ``"000008"``).
        meta: per-sample extras (calibration, image shape, augmentation record), length B.
        cache: values computed from the inputs alone, keyed by what computed them, so that two
            models that see this batch compute them once (PointNet++ sampling and grouping indices
            depend on xyz only: a teacher and a student share them). Not carried over by
            :meth:`to` (a value computed on one device is recomputed on the other).
    """

    points: Tensor
    point_offsets: Tensor
    voxels: Tensor
    voxel_coords: Tensor
    voxel_num_points: Tensor
    voxel_offsets: Tensor
    gt_boxes: Optional[Tensor] = None
    gt_labels: Optional[Tensor] = None
    gt_offsets: Optional[Tensor] = None
    frame_ids: List[str] = field(default_factory=list)
    meta: List[Dict[str, Any]] = field(default_factory=list)
    cache: Dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def batch_size(self) -> int:
        return int(self.point_offsets.numel()) - 1

    def to(self, device, non_blocking: bool = False) -> "Batch":
        """Returns a copy with every tensor moved to ``device`` (``meta`` is left as is)."""
        changes = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Tensor):
                changes[f.name] = value.to(device, non_blocking=non_blocking)
        return replace(self, **changes, cache={})

    def sample_gt(self, b: int):
        """``(boxes [n, 7], labels [n])`` of sample ``b``."""
        if self.gt_boxes is None or self.gt_offsets is None:
            raise ValueError("this batch carries no ground truth")
        s, e = int(self.gt_offsets[b]), int(self.gt_offsets[b + 1])
        return self.gt_boxes[s:e], self.gt_labels[s:e]


def offsets_from_counts(counts) -> Tensor:
    """``[B + 1]`` int64 cumulative offsets from per-sample counts."""
    counts = torch.as_tensor(counts, dtype=torch.int64)
    return torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])


def check_offsets(owner: str, offsets, rows: int, name: str = "offsets") -> Tensor:
    """Validates the ragged offsets of ``rows`` rows: ``[B + 1]`` int64 with ``B >= 1``, starting
    at 0, never decreasing, ending at ``rows``; else a ValueError naming ``owner`` and ``name``.
    Returns the per-sample counts ``[B]``."""
    if not isinstance(offsets, Tensor) or offsets.dim() != 1 or offsets.dtype != torch.int64 \
            or offsets.numel() < 2:
        desc = (f"{tuple(offsets.shape)} {offsets.dtype}" if isinstance(offsets, Tensor)
                else type(offsets).__name__)
        raise ValueError(f"{owner}: {name} must be [B + 1] int64 with B >= 1, got {desc}")
    counts = offsets.diff()
    if int(offsets[0]) != 0 or int(offsets[-1]) != rows or bool((counts < 0).any()):
        raise ValueError(f"{owner}: {name} must be offsets from 0 to the {rows} rows, never "
                         f"decreasing, got {offsets.tolist()}")
    return counts
