"""The numba kernels of the torch-free runtime: point selection, hard voxelization and rotated
BEV NMS.

They reproduce the contracts of the toolkit's own code, so that a deployed model sees exactly
the input it saw in PyTorch and keeps exactly the boxes PyTorch keeps:

- :func:`select_mask`: ``kitti_tools.geometry.fov_mask`` then the point-range test of the data
  pipeline, in one pass with the same float64 operations in the same order (so the same points
  on the image border and the range faces).

- :func:`voxelize`: ``pointdistiller.ops.voxelization`` (spconv's quantisation in float32: a voxel per
  cell in order of first appearance, its first ``max_points`` points in input order, at most
  ``max_voxels`` voxels).
- :func:`nms_bev`: ``pointdistiller.ops.iou3d.nms_bev`` (stable descending score order, a box is
  kept unless its rotated BEV IoU with a kept box exceeds the threshold; the overlap is the
  Sutherland-Hodgman clip of box a by box b's edges in float64, in a frame centred on box a).
"""
import math

import numba
import numpy as np

_CACHE = True    # compiled once per machine (numba's cache), not at every start of the runtime


# --------------------------------------------------------------------------------------------------
# point selection
# --------------------------------------------------------------------------------------------------
@numba.njit(cache=_CACHE, nogil=True)
def _select(points, velo_to_rect, p2, width, height, use_fov, lo, hi, mask):
    n = points.shape[0]
    kept = 0
    for i in range(n):
        x, y, z = np.float64(points[i, 0]), np.float64(points[i, 1]), np.float64(points[i, 2])
        ok = lo[0] <= x < hi[0] and lo[1] <= y < hi[1] and lo[2] <= z < hi[2]
        if ok and use_fov:
            # kitti_tools.calib._affine twice, term by term: ((a x + b y) + c z) + d
            r0 = x * velo_to_rect[0, 0] + y * velo_to_rect[0, 1] + z * velo_to_rect[0, 2] + velo_to_rect[0, 3]
            r1 = x * velo_to_rect[1, 0] + y * velo_to_rect[1, 1] + z * velo_to_rect[1, 2] + velo_to_rect[1, 3]
            r2 = x * velo_to_rect[2, 0] + y * velo_to_rect[2, 1] + z * velo_to_rect[2, 2] + velo_to_rect[2, 3]
            depth = r0 * p2[2, 0] + r1 * p2[2, 1] + r2 * p2[2, 2] + p2[2, 3]
            if depth > 0:
                u = (r0 * p2[0, 0] + r1 * p2[0, 1] + r2 * p2[0, 2] + p2[0, 3]) / depth
                v = (r0 * p2[1, 0] + r1 * p2[1, 1] + r2 * p2[1, 2] + p2[1, 3]) / depth
                ok = 0 <= u < width and 0 <= v < height
            else:
                ok = False
        mask[i] = ok
        kept += ok
    return kept


def select_mask(points: np.ndarray, point_range, calib=None, image_shape=(375, 1242)) -> np.ndarray:
    """``[N]`` bool: the point lies in the field of view of camera 2 (``calib`` given: positive
    depth, ``0 <= u < width``, ``0 <= v < height``) and in the point range (``min <= p < max`` per
    axis, compared in float64). ``points`` ``[N, >= 3]`` float32."""
    points = np.ascontiguousarray(points, np.float32)
    lo = np.asarray(point_range[:3], np.float64)
    hi = np.asarray(point_range[3:], np.float64)
    mask = np.empty(points.shape[0], np.bool_)
    if calib is None:
        eye = np.zeros((3, 4))
        _select(points, eye, eye, 0.0, 0.0, False, lo, hi, mask)
    else:
        h, w = image_shape
        _select(points, np.ascontiguousarray(calib.velo_to_rect[:3], np.float64),
                np.ascontiguousarray(calib.P2, np.float64), float(w), float(h), True, lo, hi, mask)
    return mask


# --------------------------------------------------------------------------------------------------
# voxelization
# --------------------------------------------------------------------------------------------------
def grid_dims(voxel_size, point_range) -> np.ndarray:
    """Cells per axis (x, y, z) as the op computes them: ``round((max - min) / size)`` in float32,
    halves away from zero."""
    size = np.asarray(voxel_size, np.float32)
    lo, hi = np.asarray(point_range[:3], np.float32), np.asarray(point_range[3:], np.float32)
    q = (hi - lo) / size
    return np.floor(np.abs(q) + np.float32(0.5)).astype(np.int64) * np.sign(q).astype(np.int64)


@numba.njit(cache=_CACHE, nogil=True)
def _voxelize(points, lo, size, dims, max_points, max_voxels, table, voxels, coords, num_points):
    n, c = points.shape
    nx, ny = dims[0], dims[1]
    m = 0
    used = np.empty(min(n, max_voxels), np.int64)     # table cells to reset afterwards
    for i in range(n):
        x = math.floor(np.float32(np.float32(points[i, 0] - lo[0]) / size[0]))
        y = math.floor(np.float32(np.float32(points[i, 1] - lo[1]) / size[1]))
        z = math.floor(np.float32(np.float32(points[i, 2] - lo[2]) / size[2]))
        if not (0 <= x < nx and 0 <= y < ny and 0 <= z < dims[2]):
            continue
        key = (z * ny + y) * nx + x
        v = table[key]
        if v < 0:
            if m >= max_voxels:
                continue
            v = m
            table[key] = v
            used[m] = key
            coords[v, 0], coords[v, 1], coords[v, 2] = z, y, x
            m += 1
        k = num_points[v]
        if k < max_points:
            for j in range(c):
                voxels[v, k, j] = points[i, j]
            num_points[v] = k + 1
    for j in range(m):
        table[used[j]] = -1
    return m


class Voxelizer:
    """Hard voxelization of one frame with fixed settings; reuses its cell table between calls.

    ``__call__(points [N, C] float32) -> (voxels [M, max_points, C] float32, coords [M, 3] int32
    (z, y, x), num_points [M] int32)``.
    """

    def __init__(self, voxel_size, point_range, max_points: int, max_voxels: int):
        self.lo = np.asarray(point_range[:3], np.float32)
        self.size = np.asarray(voxel_size, np.float32)
        self.dims = grid_dims(voxel_size, point_range)
        if not np.all(self.dims >= 1):
            raise ValueError(f"voxelization: point_range {point_range} and voxel_size {voxel_size} "
                             f"give no cells")
        cells = int(np.prod(self.dims))
        if cells > 1 << 28:
            raise ValueError(f"voxelization: {cells} cells; the runtime handles grids of up to "
                             f"2^28 cells (PointPillars grids have under 10^6)")
        self.table = np.full(cells, -1, np.int64)
        self.max_points, self.max_voxels = int(max_points), int(max_voxels)

    def __call__(self, points: np.ndarray):
        points = np.ascontiguousarray(points, np.float32)
        if points.ndim != 2 or points.shape[1] < 3:
            raise ValueError(f"points: expected [N, C >= 3] float32, got shape {points.shape}")
        if not np.isfinite(points).all():
            row = int(np.nonzero(~np.isfinite(points).all(axis=1))[0][0])
            raise ValueError(f"points must be finite, but row {row} is {points[row].tolist()}")
        n, c = points.shape
        cap = min(n, self.max_voxels)
        voxels = np.zeros((cap, self.max_points, c), np.float32)
        coords = np.zeros((cap, 3), np.int32)
        num_points = np.zeros(cap, np.int32)
        m = _voxelize(points, self.lo, self.size, self.dims, self.max_points, self.max_voxels,
                      self.table, voxels, coords, num_points)
        return voxels[:m], coords[:m], num_points[:m]


# --------------------------------------------------------------------------------------------------
# rotated BEV NMS
# --------------------------------------------------------------------------------------------------
@numba.njit(cache=_CACHE, nogil=True)
def _geometry(boxes):
    """Per box: x, y, cos, sin, half length, half width, AABB half extents, circumradius, area."""
    n = boxes.shape[0]
    g = np.empty((n, 10), np.float64)
    for i in range(n):
        c, s = math.cos(np.float64(boxes[i, 6])), math.sin(np.float64(boxes[i, 6]))
        hl, hw = 0.5 * np.float64(boxes[i, 3]), 0.5 * np.float64(boxes[i, 4])
        g[i, 0], g[i, 1] = np.float64(boxes[i, 0]), np.float64(boxes[i, 1])
        g[i, 2], g[i, 3], g[i, 4], g[i, 5] = c, s, hl, hw
        g[i, 6] = abs(c) * hl + abs(s) * hw
        g[i, 7] = abs(s) * hl + abs(c) * hw
        g[i, 8] = math.sqrt(hl * hl + hw * hw)
        g[i, 9] = np.float64(boxes[i, 3]) * np.float64(boxes[i, 4])
    return g


@numba.njit(cache=_CACHE, nogil=True, inline="always")
def _corners(g, ox, oy, out):
    cx, cy = g[0] - ox, g[1] - oy
    c, s, hl, hw = g[2], g[3], g[4], g[5]
    lx = (hl, -hl, -hl, hl)
    ly = (hw, hw, -hw, -hw)
    for k in range(4):
        out[k, 0] = cx + c * lx[k] - s * ly[k]
        out[k, 1] = cy + s * lx[k] + c * ly[k]


@numba.njit(cache=_CACHE, nogil=True)
def _clip(src, n, px, py, qx, qy, dst):
    m = 0
    if n == 0:
        return 0
    prev_x, prev_y = src[n - 1, 0], src[n - 1, 1]
    d_prev = (qx - px) * (prev_y - py) - (qy - py) * (prev_x - px)
    for i in range(n):
        cur_x, cur_y = src[i, 0], src[i, 1]
        d_cur = (qx - px) * (cur_y - py) - (qy - py) * (cur_x - px)
        if ((d_prev < 0.0 and d_cur > 0.0) or (d_prev > 0.0 and d_cur < 0.0)) and m < 16:
            t = d_prev / (d_prev - d_cur)
            dst[m, 0] = prev_x + t * (cur_x - prev_x)
            dst[m, 1] = prev_y + t * (cur_y - prev_y)
            m += 1
        if d_cur >= 0.0 and m < 16:
            dst[m, 0], dst[m, 1] = cur_x, cur_y
            m += 1
        prev_x, prev_y, d_prev = cur_x, cur_y, d_cur
    return m


@numba.njit(cache=_CACHE, nogil=True)
def _iou_bev(a, b, buf0, buf1, cb):
    if not (a[9] > 0.0) or not (b[9] > 0.0):
        return 0.0
    dx, dy = a[0] - b[0], a[1] - b[1]
    r = a[8] + b[8]
    if dx * dx + dy * dy > r * r or abs(dx) > a[6] + b[6] or abs(dy) > a[7] + b[7]:
        return 0.0
    _corners(a, a[0], a[1], buf0)
    _corners(b, a[0], a[1], cb)
    n = 4
    src, dst = buf0, buf1
    for e in range(4):
        if n == 0:
            break
        n = _clip(src, n, cb[e, 0], cb[e, 1], cb[(e + 1) % 4, 0], cb[(e + 1) % 4, 1], dst)
        src, dst = dst, src
    if n < 3:
        return 0.0
    twice = 0.0
    for i in range(n):
        j = (i + 1) % n
        twice += src[i, 0] * src[j, 1] - src[i, 1] * src[j, 0]
    inter = 0.5 * twice
    cap = min(a[9], b[9])
    if not (inter > 0.0):
        return 0.0
    inter = min(inter, cap)
    union = a[9] + b[9] - inter
    if not (union > 0.0):
        return 0.0
    return min(max(inter / union, 0.0), 1.0)


@numba.njit(cache=_CACHE, nogil=True)
def _nms(boxes, order, threshold):
    n = order.shape[0]
    g = _geometry(boxes[order])
    suppressed = np.zeros(n, np.bool_)
    keep = np.empty(n, np.int64)
    buf0, buf1, cb = np.empty((16, 2)), np.empty((16, 2)), np.empty((4, 2))
    k = 0
    for i in range(n):
        if suppressed[i]:
            continue
        keep[k] = order[i]
        k += 1
        for j in range(i + 1, n):
            if not suppressed[j] and _iou_bev(g[i], g[j], buf0, buf1, cb) > threshold:
                suppressed[j] = True
    return keep[:k]


def nms_bev(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the kept boxes, by descending score (ties: lower index first).

    ``boxes [N, 7]`` float32 ``(x, y, z_centre, l, w, h, yaw)``, ``scores [N]`` float32."""
    boxes = np.ascontiguousarray(boxes, np.float32)
    order = np.argsort(-np.asarray(scores, np.float32), kind="stable")
    return _nms(boxes, order, float(iou_threshold))


def bev_iou_matrix(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """``[N, M]`` rotated BEV IoU (float64) of two box sets, for tests and tools."""
    ga, gb = _geometry(np.asarray(boxes_a, np.float32)), _geometry(np.asarray(boxes_b, np.float32))
    return _iou_matrix(ga, gb)


@numba.njit(cache=_CACHE, nogil=True)
def _iou_matrix(ga, gb):
    out = np.zeros((ga.shape[0], gb.shape[0]))
    buf0, buf1, cb = np.empty((16, 2)), np.empty((16, 2)), np.empty((4, 2))
    for i in range(ga.shape[0]):
        for j in range(gb.shape[0]):
            out[i, j] = _iou_bev(ga[i], gb[j], buf0, buf1, cb)
    return out
