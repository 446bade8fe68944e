"""The point collator of point-based detectors (OpenPCDet's ``sample_points`` rule: far points kept,
near points drawn to fill, too few points redrawn), on hand-built clouds and a real KITTI frame, and
the loader's choice of collator from a detector's declared input."""
import os

import numpy as np
import pytest
import torch

from pointdistiller.data import collate as C
from pointdistiller.data.collate import PointCollator, Sample, VoxelCollator, build_collator
from pointdistiller.detectors import build as B

RANGE = (0.0, -40.0, -3.0, 70.4, 40.0, 1.0)


def _sample(points, frame_id="000001"):
    return Sample(np.asarray(points, np.float32), np.zeros((1, 7), np.float32), np.zeros(1, np.int64),
                  frame_id)


def _rows(points):
    """Each row as a tuple (the clouds here have distinct rows)."""
    return [tuple(r) for r in np.asarray(points).tolist()]


def _cloud(n_near, n_far, seed=0):
    rng = np.random.default_rng(seed)
    near = np.c_[rng.uniform(1, 25, n_near), rng.uniform(-10, 10, n_near), rng.uniform(-2, 0, n_near)]
    far = np.c_[rng.uniform(45, 65, n_far), rng.uniform(-10, 10, n_far), rng.uniform(-2, 0, n_far)]
    pts = np.r_[near, far]
    pts = pts[rng.permutation(len(pts))]
    return np.c_[pts, np.arange(len(pts)) / len(pts)].astype(np.float32)   # intensity = row tag


def test_too_many_points_keep_every_far_point():
    cloud = _cloud(900, 150)
    batch = PointCollator(RANGE, 400)([_sample(cloud)])
    out = batch.points.numpy()
    assert out.shape == (400, 4) and batch.point_offsets.tolist() == [0, 400]
    rows = _rows(cloud)
    picked = [rows.index(r) for r in _rows(out)]
    assert len(set(picked)) == 400 and picked != sorted(picked)   # distinct, shuffled
    far = set(np.flatnonzero(np.linalg.norm(cloud[:, :3], axis=1) >= 40.0).tolist())
    assert len(far) == 150 and far <= set(picked)
    assert batch.voxels.shape == (0, 1, 4) and batch.voxel_offsets.tolist() == [0, 0]


def test_more_far_points_than_wanted_draw_from_all():
    cloud = _cloud(100, 500)
    out = PointCollator(RANGE, 300)([_sample(cloud)]).points.numpy()
    picked = [_rows(cloud).index(r) for r in _rows(out)]
    assert len(set(picked)) == 300


def test_too_few_points_are_all_kept_then_redrawn():
    cloud = _cloud(70, 10)
    out = PointCollator(RANGE, 130)([_sample(cloud)]).points.numpy()
    assert set(_rows(out)) == set(_rows(cloud))               # every point ...
    assert len(_rows(out)) == 130 and _rows(out)[:80] != _rows(cloud)   # ... in a random order
    from collections import Counter

    counts = Counter(_rows(out))      # 50 redrawn <= 80 points: drawn without replacement
    assert sorted(counts.values()) == [1] * 30 + [2] * 50
    tiny = PointCollator(RANGE, 20)([_sample(cloud[:3])]).points.numpy()
    assert tiny.shape == (20, 4) and set(_rows(tiny)) == set(_rows(cloud[:3]))


def test_crop_determinism_and_empty_frames():
    cloud = _cloud(300, 40)
    outside = np.array([[-1.0, 0, 0, 0.5], [10, 41, 0, 0.5], [10, 0, 1.5, 0.5], [70.4, 0, 0, 0.5]],
                       np.float32)
    collate = PointCollator(RANGE, 200)
    both = np.r_[cloud, outside]
    a = collate([_sample(both)]).points
    assert not set(_rows(a.numpy())) & set(_rows(outside))
    assert torch.equal(a, collate([_sample(both)]).points)             # same sample, same points
    assert not torch.equal(a, collate([_sample(both, "000002")]).points)
    moved = both.copy()
    moved[:, 0] += 0.01                                                # an augmented cloud
    assert not torch.equal(a, collate([_sample(moved)]).points - torch.tensor([0.01, 0, 0, 0]))
    batch = collate([_sample(np.zeros((0, 4))), _sample(cloud)])
    assert batch.point_offsets.tolist() == [0, 200, 400]
    assert (batch.points[:200] == 0).all() and batch.meta[0]["no_points"] and not batch.meta[1]
    assert batch.gt_offsets.tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="num_points"):
        PointCollator(RANGE, 0)
    with pytest.raises(ValueError, match="point_range"):
        PointCollator(RANGE[:5], 10)


def test_real_kitti_frame_to_16384_points(kitti_sample):
    path = os.path.join(kitti_sample, "training", "velodyne", "000000.bin")
    pts = np.fromfile(path, np.float32).reshape(-1, 4)
    pts = pts[pts[:, 0] > 0]                                  # the camera's half, as FOV reduction
    batch = PointCollator(RANGE, 16384)([_sample(pts, "000000")])
    out = batch.points.numpy()
    lo, hi = np.asarray(RANGE[:3]), np.asarray(RANGE[3:])
    inside = pts[((pts[:, :3] >= lo) & (pts[:, :3] < hi)).all(axis=1)]
    far = inside[np.linalg.norm(inside[:, :3], axis=1) >= 40.0]
    assert out.shape == (16384, 4) and len(inside) > 16384 and len(far) >= 20
    assert set(_rows(far)) <= set(_rows(out)) <= set(_rows(inside))


class _PointDetector:
    input_kind = "points"

    def __init__(self, point_range=RANGE, num_points=(16384, 12000), num_point_features=4):
        pass


def test_the_loader_builds_the_collator_of_the_declared_input(monkeypatch):
    monkeypatch.setitem(B.DETECTORS, "points_net", _PointDetector)
    train = build_collator({"type": "points_net"}, training=True)
    test = build_collator({"type": "points_net", "num_points": [2048, 1024]}, training=False)
    assert isinstance(train, PointCollator) and train.num_points == 16384
    assert test.num_points == 1024 and test.point_range.tolist() == pytest.approx(RANGE)
    voxels = build_collator({"type": "pointpillars"}, training=False)
    assert isinstance(voxels, VoxelCollator)

    class Ranged(_PointDetector):
        input_kind = "ranges"

    monkeypatch.setitem(B.DETECTORS, "range_net", Ranged)
    with pytest.raises(ValueError, match="takes 'ranges' input; collators exist for"):
        build_collator({"type": "range_net"}, training=True)
    assert set(C.COLLATORS) == {"voxels", "points"}
