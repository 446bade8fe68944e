"""The simulated sensors: an HDL-64E-like spinning LiDAR and KITTI's camera 2 with its calibration."""
from dataclasses import dataclass, field
from typing import Tuple

import numpy as np

from pointdistiller.kitti_tools.calib import Calib

IMAGE_SHAPE = (375, 1242)  # (height, width) of KITTI's colour images


def hdl64_elevations() -> np.ndarray:
    """``[64]`` beam elevations in degrees, top to bottom: the HDL-64E's two blocks, 32 lasers from
    +2 to -8.33 deg (1/3 deg apart) and 32 from -8.83 to -24.9 deg (about 1/2 deg apart)."""
    return np.concatenate([np.linspace(2.0, -8.33, 32), np.linspace(-8.83, -24.9, 32)])


@dataclass(frozen=True)
class LidarModel:
    """A spinning multi-beam LiDAR at the origin of the LiDAR frame.

    Attributes:
        elevations_deg: ``[B]`` beam elevations, degrees.
        num_columns: azimuth columns over 360 deg (4000: 0.09 deg steps).
        interleave: beam ``b`` fires on the columns with ``(c + b) % interleave == 0``: neighbouring
            beams sample alternate columns, like the HDL-64E's two blocks firing in turn, so every
            beam has a 0.18 deg step and the scan about 128k rays (KITTI's 100-130k points).
        max_range: metres; farther surfaces return nothing.
        mount_height: metres of the sensor above the road at the origin (the road is at
            ``z = -mount_height``).
        range_noise: sigma of the Gaussian range noise, metres.
        dropout: probability that a return is lost, plus ``dropout_far * (range / max_range)**2``.
        dropout_far: extra loss at the maximum range.
    """

    elevations_deg: Tuple[float, ...] = field(default_factory=lambda: tuple(hdl64_elevations()))
    num_columns: int = 4000
    interleave: int = 2
    max_range: float = 120.0
    mount_height: float = 1.73
    range_noise: float = 0.02
    dropout: float = 0.02
    dropout_far: float = 0.15

    def __post_init__(self):
        object.__setattr__(self, "elevations_deg", tuple(float(v) for v in self.elevations_deg))
        if self.num_columns < 8 or self.num_columns % self.interleave:
            raise ValueError(f"LidarModel: num_columns ({self.num_columns}) must be >= 8 and a "
                             f"multiple of interleave ({self.interleave})")
        if not 0.0 <= self.dropout < 1.0 or self.max_range <= 0 or self.range_noise < 0:
            raise ValueError("LidarModel: need 0 <= dropout < 1, max_range > 0, range_noise >= 0")

    @property
    def elevations(self) -> np.ndarray:
        """``[B]`` float64 elevations, radians."""
        return np.radians(np.asarray(self.elevations_deg, np.float64))

    def directions(self) -> np.ndarray:
        """``[B, C, 3]`` float64 unit directions of every (beam, column) cell."""
        el = self.elevations[:, None]
        az = (np.arange(self.num_columns) * (2.0 * np.pi / self.num_columns))[None, :]
        return np.stack(np.broadcast_arrays(np.cos(el) * np.cos(az), np.cos(el) * np.sin(az),
                                            np.sin(el)), axis=-1)


def kitti_calib() -> Calib:
    """The calibration of KITTI's 2011_09_26 drives (f = 721.5 px, principal point (609.6, 172.9),
    LiDAR 0.27 m behind and 0.08 m above camera 0), used for every synthetic frame."""
    p = lambda tx, ty, tz: np.array([[721.5377, 0.0, 609.5593, tx], [0.0, 721.5377, 172.854, ty],
                                     [0.0, 0.0, 1.0, tz]])
    return Calib(
        P0=p(0.0, 0.0, 0.0), P1=p(-387.5744, 0.0, 0.0),
        P2=p(44.85728, 0.2163791, 0.002745884), P3=p(-339.5242, 2.199936, 0.002729905),
        R0_rect=np.array([[0.9999239, 0.00983776, -0.007445048],
                          [-0.009869795, 0.9999421, -0.004278459],
                          [0.007402527, 0.004351614, 0.9999631]]),
        Tr_velo_to_cam=np.array([[0.007533745, -0.9999714, -0.000616602, -0.004069766],
                                 [0.01480249, 0.0007280733, -0.9998902, -0.07631618],
                                 [0.9998621, 0.00752379, 0.01480755, -0.2717806]]),
        Tr_imu_to_velo=np.array([[0.9999976, 0.0007553071, -0.002035826, -0.8086759],
                                 [-0.0007854027, 0.9998898, -0.01482298, 0.3195559],
                                 [0.002024406, 0.01482454, 0.9998881, -0.7997231]]))


def camera_rays(calib: Calib, uv: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Rays of camera 2 through pixels, in the LiDAR frame.

    Args:
        uv: ``[R, 2]`` pixel coordinates (u right, v down).

    Returns:
        (``[3]`` camera centre, ``[R, 3]`` unit directions), LiDAR frame.
    """
    m = calib.P2[:, :3]
    centre_rect = -np.linalg.solve(m, calib.P2[:, 3])
    to_velo = calib.rect_to_velo
    centre = calib.rect_to_lidar(centre_rect[None])[0]
    uv = np.asarray(uv, np.float64).reshape(-1, 2)
    pix = np.concatenate([uv, np.ones((len(uv), 1))], axis=1)
    d = np.linalg.solve(m, pix.T).T @ to_velo[:3, :3].T
    return centre, d / np.linalg.norm(d, axis=1, keepdims=True)
