"""Turns a list of samples into one :class:`~pointdistiller.detectors.batch.Batch`, voxelizing each
point cloud in the data-loader worker (so the training process only moves tensors to the GPU)."""
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from pointdistiller.detectors.batch import Batch, offsets_from_counts


@dataclass
class Sample:
    """One scene as a dataset returns it (numpy, cheap to send from worker processes).

    Attributes:
        points: ``[N, C]`` float32 (x, y, z, reflectance, ...), LiDAR frame, metres.
        gt_boxes: ``[G, 7]`` float32 LiDAR boxes ``(x, y, z_centre, l, w, h, yaw)``.
        gt_labels: ``[G]`` int64 indices into the dataset's class names.
        frame_id: e.g. ``"000008"``.
        meta: extras carried into ``Batch.meta`` (calibration, image shape, augmentation record).
    """

    points: np.ndarray
    gt_boxes: np.ndarray
    gt_labels: np.ndarray
    frame_id: str
    meta: Dict[str, Any] = field(default_factory=dict)


def _default_voxelize():
    from pointdistiller.ops.voxelization import voxelize

    return voxelize


class VoxelCollator:
    """``collate_fn`` for the DataLoader: voxelizes every sample and concatenates them.

    Args:
        voxel_size: ``(vx, vy, vz)`` metres.
        point_range: ``(xmin, ymin, zmin, xmax, ymax, zmax)`` metres.
        max_points: points kept per voxel.
        max_voxels: voxels kept per sample.
        voxelize: a function with the signature of ``pointdistiller.ops.voxelization.voxelize``
            (``points [N, C] float32, voxel_size, point_range, max_points, max_voxels`` ->
            ``voxels [M, max_points, C], coords [M, 3] int32 (z, y, x), num_points [M] int32,
            point_to_voxel [N] int64``); default: that op.

    Calling it on ``List[Sample]`` returns a Batch whose ``voxel_coords`` are ``(b, z, y, x)``
    int32. A sample without points gets zero voxels, one without objects zero GT rows.
    """

    def __init__(self, voxel_size: Sequence[float], point_range: Sequence[float], max_points: int,
                 max_voxels: int, voxelize: Optional[Callable] = None):
        if len(voxel_size) != 3 or min(voxel_size) <= 0:
            raise ValueError(f"voxel_size: expected 3 positive values, got {voxel_size}")
        if len(point_range) != 6 or any(point_range[i] >= point_range[i + 3] for i in range(3)):
            raise ValueError(f"point_range: expected (xmin, ymin, zmin, xmax, ymax, zmax) with "
                             f"min < max, got {point_range}")
        if max_points < 1 or max_voxels < 1:
            raise ValueError(f"max_points and max_voxels must be >= 1, got {max_points}, "
                             f"{max_voxels}")
        self.voxel_size = [float(v) for v in voxel_size]
        self.point_range = [float(v) for v in point_range]
        self.max_points = int(max_points)
        self.max_voxels = int(max_voxels)
        self._voxelize = voxelize

    def __call__(self, samples: List[Sample]) -> Batch:
        if not samples:
            raise ValueError("samples: cannot collate an empty list")
        voxelize = self._voxelize or _default_voxelize()
        channels = {s.points.shape[1] for s in samples}
        if len(channels) != 1:
            raise ValueError(f"samples: point clouds have different channel counts {channels}")
        c = channels.pop()
        points, voxels, coords, num_points, voxel_counts = [], [], [], [], []
        boxes, labels = [], []
        for b, s in enumerate(samples):
            pts = torch.from_numpy(np.ascontiguousarray(s.points, dtype=np.float32))
            points.append(pts)
            if len(pts):
                vox, crd, num, _ = voxelize(pts, self.voxel_size, self.point_range,
                                            self.max_points, self.max_voxels)
            else:
                vox = pts.new_zeros((0, self.max_points, c))
                crd = torch.zeros((0, 3), dtype=torch.int32)
                num = torch.zeros(0, dtype=torch.int32)
            batch_col = torch.full((len(crd), 1), b, dtype=torch.int32)
            voxels.append(vox)
            coords.append(torch.cat([batch_col, crd.to(torch.int32)], dim=1))
            num_points.append(num.to(torch.int32))
            voxel_counts.append(len(vox))
            boxes.append(torch.from_numpy(np.asarray(s.gt_boxes, np.float32).reshape(-1, 7)))
            labels.append(torch.from_numpy(np.asarray(s.gt_labels, np.int64).reshape(-1)))
        return Batch(
            points=torch.cat(points),
            point_offsets=offsets_from_counts([len(p) for p in points]),
            voxels=torch.cat(voxels),
            voxel_coords=torch.cat(coords),
            voxel_num_points=torch.cat(num_points),
            voxel_offsets=offsets_from_counts(voxel_counts),
            gt_boxes=torch.cat(boxes),
            gt_labels=torch.cat(labels),
            gt_offsets=offsets_from_counts([len(x) for x in boxes]),
            frame_ids=[s.frame_id for s in samples],
            meta=[dict(s.meta) for s in samples],
        )


# The loader's collator for each kind of detector input (a detector class declares ``input_kind``).
COLLATORS = {"voxels": VoxelCollator}


def build_collator(model_cfg, training: bool):
    """The collator that feeds the detector of ``model_cfg`` (a validated ``model`` section): hard
    voxels of its voxelization settings with the train or test voxel budget."""
    from pointdistiller.detectors.build import input_kind, voxelization_settings

    kind = input_kind(model_cfg)
    if kind not in COLLATORS:
        raise ValueError(f"model.type {model_cfg['type']!r} takes {kind!r} input; collators exist for "
                         f"{sorted(COLLATORS)}")
    v = voxelization_settings(model_cfg)
    return COLLATORS[kind](v.voxel_size, v.point_range, v.max_points,
                           v.max_voxels[0 if training else 1])
