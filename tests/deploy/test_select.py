"""The runtime's one-pass point selection (numba) against the training pipeline's numpy code
(``kitti_tools.geometry.fov_mask`` + the point-range test) on real KITTI frames and on points
placed on the image borders and the range faces, where a different rounding would flip them."""
import os

import numpy as np
import pytest

from pointdistiller.deploy.kernels import select_mask
from pointdistiller.kitti_tools import io as kio
from pointdistiller.kitti_tools.geometry import fov_mask

RANGE = (0.0, -25.6, -3.0, 51.2, 25.6, 1.0)


def _reference(points, calib, shape):
    xyz = points[:, :3]
    keep = ((xyz >= np.asarray(RANGE[:3])) & (xyz < np.asarray(RANGE[3:]))).all(axis=1)
    if calib is not None:
        keep &= fov_mask(points, calib, shape)
    return keep


def _frames(kitti_sample):
    base = os.path.join(kitti_sample, "training")
    for name in sorted(os.listdir(os.path.join(base, "velodyne"))):
        frame = name[:-4]
        yield (kio.read_velodyne(os.path.join(base, "velodyne", name)),
               kio.read_calib(os.path.join(base, "calib", f"{frame}.txt")),
               kio.read_image_size(os.path.join(base, "image_2", f"{frame}.png")))


def test_equals_numpy_on_real_frames(kitti_sample):
    for points, calib, shape in _frames(kitti_sample):
        for c in (calib, None):
            ours, ref = select_mask(points, RANGE, c, shape), _reference(points, c, shape)
            assert ours.dtype == np.bool_ and np.array_equal(ours, ref)
        assert 0 < ours.sum() < len(points)


def test_equals_numpy_on_the_borders(kitti_sample):
    """Points back-projected from pixels on (and a rounding step around) the image borders, and
    points on the faces of the point range, plus NaN and inf points (never kept)."""
    points, calib, (h, w) = next(_frames(kitti_sample))
    rng = np.random.default_rng(0)
    n = 20000
    u = rng.choice([0.0, w, -1e-9, w - 1e-9, w + 1e-9, 1e-9], n) + rng.normal(0, 1e-7, n) * (rng.random(n) < .5)
    v = rng.uniform(0, h, n)
    v[: n // 2] = rng.choice([0.0, h, 1e-9, h - 1e-9], n // 2)
    u[: n // 4] = rng.uniform(0, w, n // 4)
    depth = rng.uniform(1, 50, n)
    p2 = calib.P2
    # rectified point with projection (u, v, depth): solve P2[:, :3] r = (u d, v d, d) - P2[:, 3]
    rhs = np.stack([u * depth, v * depth, depth], 1) - p2[:, 3]
    rect = np.linalg.solve(p2[:, :3], rhs.T).T
    lidar = calib.rect_to_lidar(rect).astype(np.float32)
    faces = rng.uniform(np.asarray(RANGE[:3]), np.asarray(RANGE[3:]), (600, 3)).astype(np.float32)
    for axis in range(3):
        faces[axis * 200:(axis * 200) + 100, axis] = np.float32(RANGE[axis])
        faces[axis * 200 + 100:(axis + 1) * 200, axis] = np.float32(RANGE[axis + 3])
    bad = np.array([[np.nan, 0, 0], [10, np.inf, 0], [10, 0, -np.inf]], np.float32)
    pts = np.concatenate([lidar, faces, bad])
    pts = np.concatenate([pts, rng.uniform(0, 1, (len(pts), 1)).astype(np.float32)], 1)
    ref = _reference(pts, calib, (h, w))
    flips = (fov_mask(pts, calib, (h, w)) != fov_mask(pts + np.float32(1e-3), calib, (h, w))).sum()
    assert flips > 100          # the case really sits on the borders
    assert 0 < ref.sum() < len(pts)
    for c in (calib, None):
        assert np.array_equal(select_mask(pts, RANGE, c, (h, w)), _reference(pts, c, (h, w)))


def test_hand_worked_exact_borders():
    """A calibration whose projections are exact in binary (LiDAR x forward = camera depth,
    focal 512, principal point (256, 128), image 512 x 256): points that land exactly on the
    image's borders and the range's faces, where ``<`` and ``<=`` differ."""
    from pointdistiller.kitti_tools.calib import Calib

    calib = Calib(P2=np.array([[512.0, 0, 256, 0], [0, 512, 128, 0], [0, 0, 1, 0]]),
                  R0_rect=np.eye(3),
                  Tr_velo_to_cam=np.array([[0.0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0]]))
    rng = (0.0, -8.0, -4.0, 16.0, 8.0, 4.0)
    # (x, y, z): u = 256 - 64 y, v = 128 - 64 z at depth x = 8
    cases = {(8, 4, 0): True,       # u = 0
             (8, -4, 0): False,     # u = 512 = width
             (8, 0, 2): True,       # v = 0
             (8, 0, -2): False,     # v = 256 = height
             (0, 0, 0): False,      # depth 0 (on the range's lower face, kept by the range)
             (-4, 0, 0): False,     # behind the camera and out of range
             (16, 0, 0): False,     # on the range's upper face
             (12, 0, 0): True}
    pts = np.array([[*k, 0.5] for k in cases], np.float32)
    assert select_mask(pts, rng, calib, (256, 512)).tolist() == list(cases.values())
    in_range = [0 <= k[0] < 16 and -8 <= k[1] < 8 and -4 <= k[2] < 4 for k in cases]
    assert select_mask(pts, rng, None).tolist() == in_range
    assert np.array_equal(select_mask(pts, rng, calib, (256, 512)),
                          fov_mask(pts, calib, (256, 512)) & np.array(in_range))
