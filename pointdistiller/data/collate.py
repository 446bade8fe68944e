"""Turns a list of samples into one :class:`~pointdistiller.detectors.batch.Batch` in the data-loader
worker (so the training process only moves tensors to the GPU): voxelized for voxel detectors
(:class:`VoxelCollator`), cropped and resampled to a fixed point count for point-based ones
(:class:`PointCollator`)."""
import zlib
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
        boxes, labels, gt_offsets = _gt_tensors(samples)
        return Batch(
            points=torch.cat(points),
            point_offsets=offsets_from_counts([len(p) for p in points]),
            voxels=torch.cat(voxels),
            voxel_coords=torch.cat(coords),
            voxel_num_points=torch.cat(num_points),
            voxel_offsets=offsets_from_counts(voxel_counts),
            gt_boxes=boxes,
            gt_labels=labels,
            gt_offsets=gt_offsets,
            frame_ids=[s.frame_id for s in samples],
            meta=[dict(s.meta) for s in samples],
        )


def _gt_tensors(samples: List[Sample]):
    boxes = [torch.from_numpy(np.asarray(s.gt_boxes, np.float32).reshape(-1, 7)) for s in samples]
    labels = [torch.from_numpy(np.asarray(s.gt_labels, np.int64).reshape(-1)) for s in samples]
    return torch.cat(boxes), torch.cat(labels), offsets_from_counts([len(x) for x in boxes])


class PointCollator:
    """``collate_fn`` for point-based detectors (PointRCNN): each cloud is cropped to
    ``point_range`` and resampled to exactly ``num_points`` points, OpenPCDet's ``sample_points``
    rule: with too many points, every far point (range >= ``far_range``) is kept and the near ones
    are drawn without replacement to fill up (all points are drawn from when the far ones alone
    are too many); with too few, every point is kept and the rest are drawn again (without
    replacement while possible). The chosen points come in a random order, at test time too
    (mmdetection3d's ``PointSample`` + ``PointShuffle``): PointRCNN's RoI pooling takes the first
    points of a box in row order, and in scan order those are a few laser rings of a near car, not
    a sample of it (a teacher trained on shuffled clouds and tested in scan order found 9 % of the
    cars within 10 m).

    The draws and the order come from a generator seeded by the frame id and the cloud's bytes:
    the same sample gives the same points in the same order whatever the worker count (so D-FPS
    from row 0 and the detections are deterministic), and an augmented cloud new ones each epoch.

    Args:
        point_range: ``(xmin, ymin, zmin, xmax, ymax, zmax)`` metres.
        num_points: points per frame.
        far_range: metres from the sensor (3D) from which points are always kept.

    The Batch has ``points [B * num_points, C]`` and no voxels (``voxels [0, 1, C]``). A frame
    without points in range gets ``num_points`` zero rows and ``meta["no_points"] = True``.
    """

    def __init__(self, point_range: Sequence[float], num_points: int, far_range: float = 40.0):
        if len(point_range) != 6 or any(point_range[i] >= point_range[i + 3] for i in range(3)):
            raise ValueError(f"point_range: expected (xmin, ymin, zmin, xmax, ymax, zmax) with "
                             f"min < max, got {point_range}")
        if num_points < 1:
            raise ValueError(f"num_points must be >= 1, got {num_points}")
        self.point_range = np.asarray(point_range, np.float32)
        self.num_points, self.far_range = int(num_points), float(far_range)

    def choose(self, points: np.ndarray, frame_id: str) -> np.ndarray:
        """Row indices into ``points`` (already cropped): ``num_points`` of them, in random order."""
        n, m = len(points), self.num_points
        rng = np.random.default_rng([zlib.crc32(frame_id.encode()),
                                     zlib.crc32(np.ascontiguousarray(points).tobytes()), n])
        if n >= m:
            far = np.linalg.norm(points[:, :3], axis=1) >= self.far_range
            far_idx, near_idx = np.flatnonzero(far), np.flatnonzero(~far)
            if len(far_idx) < m:
                keep = np.concatenate([far_idx, rng.choice(near_idx, m - len(far_idx), replace=False)])
            else:
                keep = rng.choice(n, m, replace=False)
        else:
            keep = np.concatenate([np.arange(n), rng.choice(n, m - n, replace=m - n > n)])
        return rng.permutation(keep)

    def __call__(self, samples: List[Sample]) -> Batch:
        if not samples:
            raise ValueError("samples: cannot collate an empty list")
        channels = {s.points.shape[1] for s in samples}
        if len(channels) != 1:
            raise ValueError(f"samples: point clouds have different channel counts {channels}")
        c = channels.pop()
        lo, hi = self.point_range[:3], self.point_range[3:]
        points, metas = [], []
        for s in samples:
            pts = np.asarray(s.points, np.float32)
            pts = pts[((pts[:, :3] >= lo) & (pts[:, :3] < hi)).all(axis=1)]
            meta = dict(s.meta)
            if len(pts):
                pts = pts[self.choose(pts, s.frame_id)]
            else:
                pts = np.zeros((self.num_points, c), np.float32)
                meta["no_points"] = True
            points.append(torch.from_numpy(np.ascontiguousarray(pts)))
            metas.append(meta)
        boxes, labels, gt_offsets = _gt_tensors(samples)
        no_voxels = offsets_from_counts([0] * len(samples))
        return Batch(points=torch.cat(points),
                     point_offsets=offsets_from_counts([len(p) for p in points]),
                     voxels=torch.zeros((0, 1, c)), voxel_coords=torch.zeros((0, 4), dtype=torch.int32),
                     voxel_num_points=torch.zeros(0, dtype=torch.int32), voxel_offsets=no_voxels,
                     gt_boxes=boxes, gt_labels=labels, gt_offsets=gt_offsets,
                     frame_ids=[s.frame_id for s in samples], meta=metas)


def _voxel_collator(model_cfg, training: bool) -> VoxelCollator:
    from pointdistiller.detectors.build import voxelization_settings

    v = voxelization_settings(model_cfg)
    return VoxelCollator(v.voxel_size, v.point_range, v.max_points, v.max_voxels[0 if training else 1])


def _point_collator(model_cfg, training: bool) -> PointCollator:
    from pointdistiller.detectors.build import point_sampling_settings

    p = point_sampling_settings(model_cfg)
    return PointCollator(p.point_range, p.num_points[0 if training else 1])


# The loader's collator for each kind of detector input (a detector class declares ``input_kind``),
# built from the detector's own settings (its config and constructor defaults).
COLLATORS = {"voxels": _voxel_collator, "points": _point_collator}


def build_collator(model_cfg, training: bool):
    """The collator that feeds the detector of ``model_cfg`` (a validated ``model`` section): hard
    voxels with the train or test voxel budget, or points resampled to the train or test count."""
    from pointdistiller.detectors.build import input_kind

    kind = input_kind(model_cfg)
    if kind not in COLLATORS:
        raise ValueError(f"model.type {model_cfg['type']!r} takes {kind!r} input; collators exist for "
                         f"{sorted(COLLATORS)}")
    return COLLATORS[kind](model_cfg, training)
