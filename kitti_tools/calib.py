"""KITTI calibration: LiDAR <-> reference camera <-> rectified camera <-> image of camera 2.

Frames: LiDAR (x forward, y left, z up); rectified camera (x right, y down, z forward); image pixels
(u right, v down, 0-based). ``Tr_velo_to_cam`` maps LiDAR to the reference camera, ``R0_rect``
rectifies it, ``P2`` projects rectified points into the left colour image.
"""
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np


def _affine(points: np.ndarray, mat: np.ndarray) -> np.ndarray:
    """``[N, 3]`` points -> ``[N, R]``: ``mat[:, :3] @ p + mat[:, 3]`` for every point.

    Written as column products rather than a matmul: BLAS on skinny ``[N, 4]`` arrays is slow and,
    with its thread pool on a busy machine, up to ~100x slower than these element-wise ops.
    """
    return (points[:, 0:1] * mat[:, 0] + points[:, 1:2] * mat[:, 1] + points[:, 2:3] * mat[:, 2]
            + mat[:, 3])


@dataclass
class Calib:
    """Calibration of one KITTI frame (float64 matrices).

    Attributes:
        P2: ``[3, 4]`` projection of camera 2 (rectified -> pixels).
        R0_rect: ``[3, 3]`` rectifying rotation.
        Tr_velo_to_cam: ``[3, 4]`` LiDAR -> reference camera.
        P0, P1, P3: ``[3, 4]`` other cameras' projections (None if absent).
        Tr_imu_to_velo: ``[3, 4]`` IMU -> LiDAR (None if absent).
    """

    P2: np.ndarray
    R0_rect: np.ndarray
    Tr_velo_to_cam: np.ndarray
    P0: Optional[np.ndarray] = None
    P1: Optional[np.ndarray] = None
    P3: Optional[np.ndarray] = None
    Tr_imu_to_velo: Optional[np.ndarray] = None

    @property
    def velo_to_rect(self) -> np.ndarray:
        """``[4, 4]`` LiDAR -> rectified camera."""
        r0 = np.eye(4)
        r0[:3, :3] = self.R0_rect
        v2c = np.eye(4)
        v2c[:3, :] = self.Tr_velo_to_cam
        return r0 @ v2c

    @property
    def rect_to_velo(self) -> np.ndarray:
        """``[4, 4]`` rectified camera -> LiDAR."""
        return np.linalg.inv(self.velo_to_rect)

    def lidar_to_rect(self, points: np.ndarray) -> np.ndarray:
        """``[N, 3]`` LiDAR points -> ``[N, 3]`` rectified camera points (float64)."""
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        return _affine(pts, self.velo_to_rect[:3])

    def rect_to_lidar(self, points: np.ndarray) -> np.ndarray:
        """``[N, 3]`` rectified camera points -> ``[N, 3]`` LiDAR points (float64)."""
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        return _affine(pts, self.rect_to_velo[:3])

    def rect_to_image(self, points: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """``[N, 3]`` rectified points -> (``[N, 2]`` pixels (u, v), ``[N]`` depth in camera 2)."""
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        proj = _affine(pts, self.P2)
        depth = proj[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = proj[:, :2] / depth[:, None]
        return uv, depth

    def lidar_to_image(self, points: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """``[N, 3]`` LiDAR points -> (``[N, 2]`` pixels, ``[N]`` depth)."""
        return self.rect_to_image(self.lidar_to_rect(points))
