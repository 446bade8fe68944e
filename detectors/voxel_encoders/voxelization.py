"""Voxel grid geometry shared by the detectors, the data pipeline and pd-profile."""
from dataclasses import dataclass
from typing import Tuple


def grid_size(point_range, voxel_size) -> Tuple[int, int, int]:
    """``(nx, ny, nz)`` voxels covering ``point_range`` (must be whole multiples of ``voxel_size``).

    Args:
        point_range: ``(x_min, y_min, z_min, x_max, y_max, z_max)`` metres.
        voxel_size: ``(vx, vy, vz)`` metres.
    """
    if len(point_range) != 6 or len(voxel_size) != 3:
        raise ValueError(f"point_range needs 6 values and voxel_size 3, got {list(point_range)} "
                         f"and {list(voxel_size)}")
    sizes = []
    for axis, name in enumerate("xyz"):
        extent = float(point_range[axis + 3]) - float(point_range[axis])
        v = float(voxel_size[axis])
        if v <= 0 or extent <= 0:
            raise ValueError(f"point_range/voxel_size: empty {name} extent or voxel "
                             f"({extent} m / {v} m)")
        n = round(extent / v)
        if abs(n * v - extent) > 1e-4 * max(1.0, extent):
            raise ValueError(f"point_range: the {name} extent {extent:g} m is not a whole number of "
                             f"voxels of {v:g} m")
        sizes.append(int(n))
    return tuple(sizes)


@dataclass(frozen=True)
class VoxelizationSettings:
    """How points become voxels for one detector (``model`` section of a config).

    Attributes:
        voxel_size: ``(vx, vy, vz)`` metres.
        point_range: ``(x_min, y_min, z_min, x_max, y_max, z_max)`` metres.
        max_points: points kept per voxel.
        max_voxels: ``(train, test)`` voxels kept per frame.
    """

    voxel_size: Tuple[float, float, float]
    point_range: Tuple[float, float, float, float, float, float]
    max_points: int
    max_voxels: Tuple[int, int]

    @property
    def grid_size(self) -> Tuple[int, int, int]:
        """``(nx, ny, nz)``."""
        return grid_size(self.point_range, self.voxel_size)

    def max_voxels_for(self, training: bool) -> int:
        return self.max_voxels[0] if training else self.max_voxels[1]
