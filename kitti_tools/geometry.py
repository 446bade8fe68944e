"""Box geometry between KITTI camera labels and LiDAR boxes, projection to the image, field-of-view
filtering and points-in-boxes.

LiDAR box: ``(x, y, z_centre, l, w, h, yaw)``, yaw about +z, 0 when the length points along +x.
Camera box (KITTI label): bottom centre ``location`` in rectified camera coordinates, size
``(h, w, l)``, ``rotation_y`` about the camera's y (down) axis. With KITTI's calibration the yaws are
related by ``yaw = -rotation_y - pi/2`` (camera x = -LiDAR y, camera z = LiDAR x).
"""
from typing import Tuple

import numpy as np

from pointdistiller.kitti_tools.calib import Calib


def limit_period(angle, offset: float = 0.5, period: float = 2 * np.pi):
    """Wraps ``angle`` into ``[-offset * period, (1 - offset) * period)``."""
    return angle - np.floor(angle / period + offset) * period


def camera_to_lidar_boxes(location: np.ndarray, hwl: np.ndarray, rotation_y: np.ndarray,
                          calib: Calib) -> np.ndarray:
    """KITTI camera boxes -> ``[n, 7]`` float64 LiDAR boxes.

    Args:
        location: ``[n, 3]`` bottom centres (rectified camera, metres).
        hwl: ``[n, 3]`` sizes in label order (h, w, l).
        rotation_y: ``[n]`` yaw about camera y.
    """
    location = np.asarray(location, np.float64).reshape(-1, 3)
    hwl = np.asarray(hwl, np.float64).reshape(-1, 3)
    ry = np.asarray(rotation_y, np.float64).reshape(-1)
    centre = calib.rect_to_lidar(location)
    h, w, l = hwl[:, 0], hwl[:, 1], hwl[:, 2]
    centre[:, 2] += h / 2
    yaw = limit_period(-ry - np.pi / 2)
    return np.stack([centre[:, 0], centre[:, 1], centre[:, 2], l, w, h, yaw], axis=1)


def lidar_to_camera_boxes(boxes: np.ndarray, calib: Calib) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``[n, 7]`` LiDAR boxes -> (location ``[n, 3]`` bottom centres, hwl ``[n, 3]``, rotation_y ``[n]``)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 7)
    bottom = boxes[:, :3].copy()
    bottom[:, 2] -= boxes[:, 5] / 2
    location = calib.lidar_to_rect(bottom)
    hwl = boxes[:, [5, 4, 3]].copy()
    ry = limit_period(-boxes[:, 6] - np.pi / 2)
    return location, hwl, ry


def observation_angle(location: np.ndarray, rotation_y: np.ndarray) -> np.ndarray:
    """KITTI ``alpha`` = rotation_y - atan2(x, z) of the camera-frame location, in [-pi, pi)."""
    location = np.asarray(location, np.float64).reshape(-1, 3)
    return limit_period(np.asarray(rotation_y, np.float64) - np.arctan2(location[:, 0], location[:, 2]))


def lidar_box_corners(boxes: np.ndarray) -> np.ndarray:
    """``[n, 7]`` LiDAR boxes -> ``[n, 8, 3]`` corners: bottom face first (front-left, front-right,
    back-right, back-left seen from above with the heading as front), then the top face."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 7)
    sx = np.array([0.5, 0.5, -0.5, -0.5, 0.5, 0.5, -0.5, -0.5])
    sy = np.array([0.5, -0.5, -0.5, 0.5, 0.5, -0.5, -0.5, 0.5])
    sz = np.array([-0.5, -0.5, -0.5, -0.5, 0.5, 0.5, 0.5, 0.5])
    local = np.stack([boxes[:, 3:4] * sx, boxes[:, 4:5] * sy, boxes[:, 5:6] * sz], axis=2)
    c, s = np.cos(boxes[:, 6])[:, None], np.sin(boxes[:, 6])[:, None]
    x = local[..., 0] * c - local[..., 1] * s
    y = local[..., 0] * s + local[..., 1] * c
    return np.stack([x, y, local[..., 2]], axis=2) + boxes[:, None, :3]


def boxes_to_image(boxes: np.ndarray, calib: Calib, image_shape: Tuple[int, int],
                   clip: bool = True) -> Tuple[np.ndarray, np.ndarray]:
    """Projects LiDAR boxes into image 2.

    Args:
        boxes: ``[n, 7]`` LiDAR boxes.
        image_shape: ``(height, width)``.
        clip: clip the 2D boxes to the image.

    Returns:
        (``[n, 4]`` 2D boxes (x1, y1, x2, y2) in pixels, ``[n]`` bool: all 8 corners are in front of
        the camera). Boxes partly behind the camera are projected from their corners in front;
        boxes wholly behind get an all-zero 2D box and False.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 7)
    n = len(boxes)
    out = np.zeros((n, 4))
    valid = np.zeros(n, dtype=bool)
    if n == 0:
        return out, valid
    corners = lidar_box_corners(boxes).reshape(-1, 3)
    uv, depth = calib.lidar_to_image(corners)
    uv, depth = uv.reshape(n, 8, 2), depth.reshape(n, 8)
    front = depth > 0.1
    valid = front.all(axis=1)
    for i in np.nonzero(front.any(axis=1))[0]:
        pts = uv[i][front[i]]
        out[i] = [pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()]
    if clip:
        h, w = image_shape
        out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, w - 1)
        out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, h - 1)
    return out, valid


def fov_mask(points: np.ndarray, calib: Calib, image_shape: Tuple[int, int]) -> np.ndarray:
    """``[N]`` bool: the LiDAR point projects inside image 2 (``0 <= u < width``, ``0 <= v < height``)
    with positive depth. This is the "velodyne_reduced" cut most KITTI detectors train on."""
    pts = np.asarray(points)[:, :3]
    uv, depth = calib.lidar_to_image(pts)
    h, w = image_shape
    return ((depth > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h))


def points_in_boxes(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """``[N, n]`` bool: point i lies inside LiDAR box j (borders included).

    Works in each box's frame: rotate the offset by -yaw and compare with half sizes. Memory is
    ``N * n``; callers with many boxes should chunk.
    """
    pts = np.asarray(points, np.float64)[:, :3]
    boxes = np.asarray(boxes, np.float64).reshape(-1, 7)
    if len(boxes) == 0 or len(pts) == 0:
        return np.zeros((len(pts), len(boxes)), dtype=bool)
    d = pts[:, None, :] - boxes[None, :, :3]
    c, s = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
    local_x = d[..., 0] * c + d[..., 1] * s
    local_y = -d[..., 0] * s + d[..., 1] * c
    return ((np.abs(local_x) <= boxes[:, 3] / 2) & (np.abs(local_y) <= boxes[:, 4] / 2)
            & (np.abs(d[..., 2]) <= boxes[:, 5] / 2))


def bev_corners(boxes: np.ndarray) -> np.ndarray:
    """``[n, 7]`` LiDAR boxes -> ``[n, 4, 2]`` BEV corners (x, y), counter-clockwise seen from above,
    starting at front-left (the heading is the front)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 7)
    sx = np.array([0.5, -0.5, -0.5, 0.5])
    sy = np.array([0.5, 0.5, -0.5, -0.5])
    lx, ly = boxes[:, 3:4] * sx, boxes[:, 4:5] * sy
    c, s = np.cos(boxes[:, 6])[:, None], np.sin(boxes[:, 6])[:, None]
    return np.stack([lx * c - ly * s + boxes[:, 0:1], lx * s + ly * c + boxes[:, 1:2]], axis=2)


def _bev_axes(yaw: np.ndarray) -> np.ndarray:
    """``[n, 2, 2]``: unit vectors along the length and the width of each box."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.stack([np.stack([c, s], 1), np.stack([-s, c], 1)], 1)


def boxes_overlap_bev(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """``[n, m]`` bool: the BEV rectangles of LiDAR boxes ``a[i]`` and ``b[j]`` overlap with positive
    area (boxes that only touch along an edge do not).

    Exact test by the separating-axis theorem (two convex rectangles are disjoint iff their
    projections are disjoint on one of the four edge normals). Used for the collision checks of GT
    sampling and per-object noise; memory is ``16 * n * m`` floats.
    """
    ca, cb = bev_corners(boxes_a), bev_corners(boxes_b)
    n, m = len(ca), len(cb)
    if n == 0 or m == 0:
        return np.zeros((n, m), dtype=bool)
    # Edge directions of each rectangle: its two axes (unit vectors along length and width).
    axes_a = _bev_axes(np.asarray(boxes_a, np.float64).reshape(-1, 7)[:, 6])
    axes_b = _bev_axes(np.asarray(boxes_b, np.float64).reshape(-1, 7)[:, 6])
    # axes[i, j, k, :] for k in 0..3: a's two axes then b's two axes.
    axes = np.concatenate([np.broadcast_to(axes_a[:, None], (n, m, 2, 2)),
                           np.broadcast_to(axes_b[None, :], (n, m, 2, 2))], axis=2)
    proj_a = np.einsum("ipd,ijkd->ijkp", ca, axes)  # [n, m, 4 axes, 4 corners]
    proj_b = np.einsum("jpd,ijkd->ijkp", cb, axes)
    eps = 1e-9
    separated = ((proj_a.max(-1) <= proj_b.min(-1) + eps) | (proj_b.max(-1) <= proj_a.min(-1) + eps))
    return ~separated.any(-1)


def rotate_points_z(points: np.ndarray, angle: float) -> np.ndarray:
    """Rotates the x, y columns of ``[N, C]`` points by ``angle`` (radians, counter-clockwise seen
    from above) about the z axis; returns a new array of the same dtype."""
    out = np.array(points, copy=True)
    c, s = np.cos(angle), np.sin(angle)
    x, y = points[:, 0].astype(np.float64), points[:, 1].astype(np.float64)
    out[:, 0] = x * c - y * s
    out[:, 1] = x * s + y * c
    return out
