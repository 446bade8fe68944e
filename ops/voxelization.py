"""Voxelization of one LiDAR point cloud: hard voxels (PointPillars / SECOND input) and dynamic
voxels (for scatter-based voxel feature encoders).

Both ops quantise exactly like spconv's ``PointToVoxel`` on CPU, in float32::

    grid[d] = round((max[d] - min[d]) / voxel_size[d])    (round half away from zero)
    cell[d] = floor((p[d] - min[d]) / voxel_size[d])       kept iff 0 <= cell[d] < grid[d]

so ``min`` is included and ``max`` excluded whenever ``(max - min) / voxel_size`` is a whole
number in float32 (otherwise the last cell ends at ``min + grid * voxel_size``). Voxels are
numbered in order of the first appearance of any of their points in the input. CPU and CUDA give
the same bits on every run.
"""
import math
from typing import NamedTuple, Sequence

import numpy as np
import torch

from pointdistiller.ops._loader import after_load, op

__all__ = ["HardVoxels", "DynamicVoxels", "voxelize", "voxelize_dynamic", "grid_size"]


class HardVoxels(NamedTuple):
    """Output of :func:`voxelize` (M voxels, N input points, C features per point).

    voxels:         [M, max_points, C] float32, the stored points of each voxel in input order,
                    unused rows zero.
    coords:         [M, 3] int32, voxel index as (z, y, x).
    num_points:     [M] int32, stored points per voxel, 1..max_points.
    point_to_voxel: [N] int64, the voxel of each point, -1 if out of range or its voxel was dropped
                    by max_voxels. A point of a full voxel keeps its voxel's id although it is not
                    stored (as spconv's ``pc_voxel_id``); the stored ones are the first
                    ``max_points`` points of each voxel in input order.
    """

    voxels: torch.Tensor
    coords: torch.Tensor
    num_points: torch.Tensor
    point_to_voxel: torch.Tensor


class DynamicVoxels(NamedTuple):
    """Output of :func:`voxelize_dynamic` (M voxels, N input points).

    point_coords:   [N, 3] int32, (z, y, x) voxel index of each point, a row of -1 if out of range.
    voxel_coords:   [M, 3] int32, (z, y, x) of each voxel, in order of first appearance.
    point_to_voxel: [N] int64, row of ``voxel_coords`` holding the point, -1 if out of range.
    """

    point_coords: torch.Tensor
    voxel_coords: torch.Tensor
    point_to_voxel: torch.Tensor


def _floats(value, name: str, length: int) -> list:
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    try:
        out = [float(v) for v in value]
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a sequence of {length} numbers, got {value!r}") from None
    if len(out) != length:
        raise ValueError(f"{name} must hold {length} numbers, got {len(out)}: {out}")
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name} must be finite, got {out}")
    return out


def _check_points(points) -> None:
    if not isinstance(points, torch.Tensor):
        raise TypeError(f"points must be a torch.Tensor, got {type(points).__name__}")
    if points.dtype != torch.float32:
        raise TypeError(f"points must be float32, got {points.dtype}")
    if points.dim() != 2 or points.shape[1] < 3:
        raise ValueError(f"points must have shape [N, C] with C >= 3, got {list(points.shape)}")
    if points.device.type not in ("cpu", "cuda"):
        raise ValueError(f"points must be on a CPU or CUDA device, got {points.device}")


def _check_grid(voxel_size, point_range):
    size = _floats(voxel_size, "voxel_size", 3)
    rng = _floats(point_range, "point_range", 6)
    for d, axis in enumerate("xyz"):
        if size[d] <= 0:
            raise ValueError(f"voxel_size[{d}] ({axis}) must be > 0, got {size[d]}")
        if rng[d + 3] <= rng[d]:
            raise ValueError(f"point_range {axis}max ({rng[d + 3]}) must be greater than "
                             f"{axis}min ({rng[d]})")
    return size, rng


def _check_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def grid_size(voxel_size: Sequence[float], point_range: Sequence[float]) -> tuple:
    """Number of cells along (x, y, z), computed as the ops compute it (float32, as spconv).

    Returns a tuple of 3 ints. SECOND's setting (range [0, -40, -3, 70.4, 40, 1], voxel
    [0.05, 0.05, 0.1]) gives (1408, 1600, 40).
    """
    size, rng = _check_grid(voxel_size, point_range)
    out = []
    for d in range(3):
        q = float((np.float32(rng[d + 3]) - np.float32(rng[d])) / np.float32(size[d]))
        out.append(int(math.floor(q + 0.5)))  # std::round: half away from zero (q > 0)
    return tuple(out)


def voxelize(points: torch.Tensor, voxel_size: Sequence[float], point_range: Sequence[float],
             max_points: int, max_voxels: int) -> HardVoxels:
    """Groups the points of one cloud into at most ``max_voxels`` voxels of at most
    ``max_points`` points (the input of PointPillars' pillar encoder and SECOND's mean VFE).

    Same output as spconv's ``PointToVoxel(voxel_size, point_range, C, max_voxels,
    max_points).generate_voxel_with_id(points)`` on CPU, bit for bit, on CPU and CUDA alike.

    Args:
        points: [N, C] float32, C >= 3, columns x, y, z (metres, LiDAR frame) then any features
            (e.g. intensity); CPU or CUDA. Every value must be finite.
        voxel_size: 3 floats (x, y, z), metres, > 0.
        point_range: 6 floats (xmin, ymin, zmin, xmax, ymax, zmax), metres, max > min.
        max_points: points stored per voxel, >= 1; further points of a full voxel are not stored.
        max_voxels: voxels kept, >= 1; voxels appearing after that many are dropped whole.

    Returns:
        :class:`HardVoxels` (voxels [M, max_points, C] float32, coords [M, 3] int32 (z, y, x),
        num_points [M] int32, point_to_voxel [N] int64), M <= max_voxels, voxels in order of first
        appearance of their points.

    Raises:
        TypeError / ValueError naming the argument (dtype, shape, device, sizes, NaN/inf points).
    """
    _check_points(points)
    size, rng = _check_grid(voxel_size, point_range)
    max_points = _check_int(max_points, "max_points")
    max_voxels = _check_int(max_voxels, "max_voxels")
    return HardVoxels(*op("voxelize")(points, size, rng, max_points, max_voxels))


def voxelize_dynamic(points: torch.Tensor, voxel_size: Sequence[float],
                     point_range: Sequence[float]) -> DynamicVoxels:
    """Voxel index of every point and the list of occupied voxels, with no cap on voxels or
    points per voxel (dynamic voxelization; pair with :func:`pointdistiller.ops.scatter.
    scatter_reduce` over ``point_to_voxel``).

    Args:
        points: [N, C] float32, C >= 3, columns x, y, z first; CPU or CUDA; finite.
        voxel_size: 3 floats (x, y, z), metres, > 0.
        point_range: 6 floats (xmin, ymin, zmin, xmax, ymax, zmax), metres, max > min.

    Returns:
        :class:`DynamicVoxels` (point_coords [N, 3] int32 (z, y, x) or -1 rows, voxel_coords
        [M, 3] int32 in order of first appearance, point_to_voxel [N] int64 or -1).
    """
    _check_points(points)
    size, rng = _check_grid(voxel_size, point_range)
    return DynamicVoxels(*op("voxelize_dynamic")(points, size, rng))


@after_load("voxelize")
def _register_fake_kernels() -> None:
    @torch.library.register_fake("pointdistiller::voxelize")
    def _voxelize_fake(points, voxel_size, point_range, max_points, max_voxels):
        m = torch.library.get_ctx().new_dynamic_size(max=max_voxels)
        return (points.new_empty((m, max_points, points.shape[1])),
                points.new_empty((m, 3), dtype=torch.int32),
                points.new_empty((m,), dtype=torch.int32),
                points.new_empty((points.shape[0],), dtype=torch.int64))

    @torch.library.register_fake("pointdistiller::voxelize_dynamic")
    def _voxelize_dynamic_fake(points, voxel_size, point_range):
        m = torch.library.get_ctx().new_dynamic_size()
        return (points.new_empty((points.shape[0], 3), dtype=torch.int32),
                points.new_empty((m, 3), dtype=torch.int32),
                points.new_empty((points.shape[0],), dtype=torch.int64))
