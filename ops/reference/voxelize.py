"""Slow, obviously-correct references of ``pointdistiller.ops.voxelization`` (tests only).

Quantisation in float32 with NumPy, then one Python loop over the points with a dict, in input
order: the same rules as spconv's ``PointToVoxel`` on CPU (see ops/voxelization.py).
"""
import math
from typing import Sequence, Tuple

import numpy as np
import torch


def grid_and_cells(points: torch.Tensor, voxel_size: Sequence[float],
                   point_range: Sequence[float]) -> Tuple[Tuple[int, int, int], np.ndarray]:
    """Returns ((gx, gy, gz), cells [N, 3] int64 as (x, y, z), -1 rows for points out of range)."""
    size = np.asarray(voxel_size, dtype=np.float32)
    lo = np.asarray(point_range[:3], dtype=np.float32)
    hi = np.asarray(point_range[3:], dtype=np.float32)
    grid = tuple(int(math.floor(float(q) + 0.5)) for q in (hi - lo) / size)  # round half up, q > 0
    xyz = points[:, :3].cpu().numpy().astype(np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        q = np.floor((xyz - lo) / size)  # float32 throughout, like spconv
    inside = np.all((q >= 0) & (q < np.asarray(grid, dtype=np.float64)), axis=1)
    cells = np.full((xyz.shape[0], 3), -1, dtype=np.int64)
    cells[inside] = q[inside].astype(np.int64)
    return grid, cells


def voxelize(points: torch.Tensor, voxel_size: Sequence[float], point_range: Sequence[float],
             max_points: int, max_voxels: int):
    """Reference of ``ops.voxelize``: (voxels [M, P, C] float32, coords [M, 3] int32 (z, y, x),
    num_points [M] int32, point_to_voxel [N] int64)."""
    n, c = points.shape
    _, cells = grid_and_cells(points, voxel_size, point_range)
    pts = points.cpu()
    ids = {}
    voxel_points = []  # per voxel: list of stored point indices
    point_to_voxel = torch.full((n,), -1, dtype=torch.int64)
    coords = []
    for i in range(n):
        if cells[i, 0] < 0:
            continue
        cell = tuple(int(v) for v in cells[i])
        if cell not in ids:
            if len(ids) >= max_voxels:
                continue
            ids[cell] = len(ids)
            voxel_points.append([])
            coords.append((cell[2], cell[1], cell[0]))
        v = ids[cell]
        point_to_voxel[i] = v
        if len(voxel_points[v]) < max_points:
            voxel_points[v].append(i)
    m = len(ids)
    voxels = torch.zeros((m, max_points, c), dtype=torch.float32)
    for v, members in enumerate(voxel_points):
        for row, i in enumerate(members):
            voxels[v, row] = pts[i]
    num_points = torch.tensor([len(p) for p in voxel_points], dtype=torch.int32)
    coords_t = torch.tensor(coords, dtype=torch.int32).reshape(m, 3)
    return voxels, coords_t, num_points, point_to_voxel


def voxelize_dynamic(points: torch.Tensor, voxel_size: Sequence[float],
                     point_range: Sequence[float]):
    """Reference of ``ops.voxelize_dynamic``: (point_coords [N, 3] int32 (z, y, x) or -1,
    voxel_coords [M, 3] int32, point_to_voxel [N] int64 or -1)."""
    n = points.shape[0]
    _, cells = grid_and_cells(points, voxel_size, point_range)
    point_coords = torch.from_numpy(cells[:, ::-1].copy()).to(torch.int32)
    ids = {}
    point_to_voxel = torch.full((n,), -1, dtype=torch.int64)
    for i in range(n):
        if cells[i, 0] < 0:
            continue
        cell = (int(cells[i, 2]), int(cells[i, 1]), int(cells[i, 0]))
        point_to_voxel[i] = ids.setdefault(cell, len(ids))
    voxel_coords = torch.tensor(list(ids), dtype=torch.int32).reshape(len(ids), 3)
    return point_coords, voxel_coords, point_to_voxel
