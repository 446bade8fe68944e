"""Ray casting of the synthetic scenes: a terrain (road, curbs, raised sidewalks) and a list of
primitives (oriented boxes, vertical cylinders, ellipsoids), first hit along each ray.

The primitives of a scene are rows of one ``[M, PRIM_FIELDS]`` float64 array (see the ``F_*``
column indices). Kernels are numba ``@njit(cache=True)`` loops, serial and deterministic: the same
inputs give bit-identical outputs. Porous primitives (vegetation) let a ray through with
probability ``1 - density`` and return it a little inside the surface, both decided by a hash of
(ray id, primitive index), so no random state is involved.

Hit ids: ``>= 0`` primitive row, ``HIT_ROAD``, ``HIT_SIDEWALK``, ``HIT_CURB`` terrain, ``HIT_NONE``
no return within the maximum range.
"""
import math

import numpy as np
from numba import njit

# Primitive kinds.
BOX, CYLINDER, ELLIPSOID = 0, 1, 2
# Columns of a primitive row. Boxes and ellipsoids: centre, half sizes (a, b, c) along their local
# x (heading), y, z axes, heading cos/sin about +z. Cylinders (vertical): centre, radius a, half
# height c.
F_KIND, F_X, F_Y, F_Z, F_A, F_B, F_C, F_COS, F_SIN = 0, 1, 2, 3, 4, 5, 6, 7, 8
F_REFL = 9      # surface reflectivity in [0, 1]
F_OWNER = 10    # index of the scene object it belongs to, -1 for background
F_DENSITY = 11  # probability that a ray crossing it returns (1 for solid surfaces)
F_DEPTH = 12    # porous primitives: how far inside the surface a return may lie (metres)
PRIM_FIELDS = 13

HIT_NONE, HIT_ROAD, HIT_SIDEWALK, HIT_CURB = -1, -2, -3, -4

# Terrain parameter vector: height z = Z0 + SX * x + QX * x**2 + SY * y on the road
# (|y - ROAD_Y| <= ROAD_HALF), CURB metres higher beyond it.
G_Z0, G_SX, G_QX, G_SY, G_ROAD_Y, G_ROAD_HALF, G_CURB = 0, 1, 2, 3, 4, 5, 6
GROUND_FIELDS = 7

_EPS = 1e-6
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)
_GOLD = np.uint64(0x9E3779B97F4A7C15)
_TO_UNIT = 1.0 / 18446744073709551616.0


@njit(cache=True)
def _hash01(a, b, salt):
    """Uniform in [0, 1) from two non-negative integers and a salt (splitmix64 finaliser)."""
    x = np.uint64(a) * _GOLD + np.uint64(b) * _M1 + np.uint64(salt) * _M2
    x = (x ^ (x >> _S30)) * _M1
    x = (x ^ (x >> _S27)) * _M2
    x = x ^ (x >> _S31)
    return float(x) * _TO_UNIT


def hash01(a: int, b: int, salt: int) -> float:
    """Python entry to the kernels' hash (tests)."""
    return _hash01(a, b, salt)


@njit(cache=True)
def _terrain_height(g, x, y):
    z = g[G_Z0] + g[G_SX] * x + g[G_QX] * x * x + g[G_SY] * y
    if abs(y - g[G_ROAD_Y]) > g[G_ROAD_HALF]:
        z += g[G_CURB]
    return z


@njit(cache=True)
def _surface_t(g, ox, oy, oz, dx, dy, dz, raise_by):
    """Smallest t > 0 where the ray meets z = terrain(x, y) + raise_by (curbs ignored), or inf."""
    a = g[G_QX] * dx * dx
    b = 2.0 * g[G_QX] * ox * dx + g[G_SX] * dx + g[G_SY] * dy - dz
    c = g[G_Z0] + g[G_SX] * ox + g[G_QX] * ox * ox + g[G_SY] * oy + raise_by - oz
    if abs(a) < 1e-12:
        if abs(b) < 1e-12:
            return np.inf
        t = -c / b
        return t if t > _EPS else np.inf
    disc = b * b - 4.0 * a * c
    if disc < 0.0:
        return np.inf
    sq = math.sqrt(disc)
    t1 = (-b - sq) / (2.0 * a)
    t2 = (-b + sq) / (2.0 * a)
    if t1 > t2:
        t1, t2 = t2, t1
    if t1 > _EPS:
        return t1
    if t2 > _EPS:
        return t2
    return np.inf


@njit(cache=True)
def _terrain_hit(g, ox, oy, oz, dx, dy, dz):
    """(t, hit id, |cos incidence|) of the terrain: road, raised sidewalks and the curb faces."""
    t_side = _surface_t(g, ox, oy, oz, dx, dy, dz, g[G_CURB])
    if t_side < np.inf:
        y = oy + t_side * dy
        if abs(y - g[G_ROAD_Y]) > g[G_ROAD_HALF]:
            x = ox + t_side * dx
            nx = -(g[G_SX] + 2.0 * g[G_QX] * x)
            ny = -g[G_SY]
            inv = 1.0 / math.sqrt(nx * nx + ny * ny + 1.0)
            return t_side, HIT_SIDEWALK, abs(nx * dx + ny * dy + dz) * inv
    t_road = _surface_t(g, ox, oy, oz, dx, dy, dz, 0.0)
    if t_road == np.inf:
        return np.inf, HIT_NONE, 0.0
    y = oy + t_road * dy
    if abs(y - g[G_ROAD_Y]) <= g[G_ROAD_HALF]:
        x = ox + t_road * dx
        nx = -(g[G_SX] + 2.0 * g[G_QX] * x)
        ny = -g[G_SY]
        inv = 1.0 / math.sqrt(nx * nx + ny * ny + 1.0)
        return t_road, HIT_ROAD, abs(nx * dx + ny * dy + dz) * inv
    # Left the road below sidewalk level: the ray met the curb face on its way.
    if abs(dy) < 1e-12:
        return t_road, HIT_ROAD, abs(dz)
    edge = g[G_ROAD_Y] + g[G_ROAD_HALF] if y > g[G_ROAD_Y] else g[G_ROAD_Y] - g[G_ROAD_HALF]
    t_curb = (edge - oy) / dy
    if t_curb <= _EPS:
        t_curb = t_road
    return t_curb, HIT_CURB, abs(dy)


@njit(cache=True)
def _prim_hit(p, ox, oy, oz, dx, dy, dz, ray_id, prim_id):
    """(t, |cos incidence|) of one primitive row, t = inf on a miss."""
    kind = int(p[F_KIND])
    c, s = p[F_COS], p[F_SIN]
    rx, ry, rz = ox - p[F_X], oy - p[F_Y], oz - p[F_Z]
    lox = c * rx + s * ry
    loy = -s * rx + c * ry
    loz = rz
    ldx = c * dx + s * dy
    ldy = -s * dx + c * dy
    ldz = dz
    ha, hb, hc = p[F_A], p[F_B], p[F_C]
    t_hit = np.inf
    cos_hit = 0.0
    if kind == BOX:
        tnear = -np.inf
        tfar = np.inf
        axis = 0
        for k in range(3):
            if k == 0:
                o, d, h = lox, ldx, ha
            elif k == 1:
                o, d, h = loy, ldy, hb
            else:
                o, d, h = loz, ldz, hc
            if abs(d) < 1e-12:
                if o < -h or o > h:
                    return np.inf, 0.0
                continue
            t1 = (-h - o) / d
            t2 = (h - o) / d
            if t1 > t2:
                t1, t2 = t2, t1
            if t1 > tnear:
                tnear = t1
                axis = k
            if t2 < tfar:
                tfar = t2
            if tnear > tfar:
                return np.inf, 0.0
        if tnear > _EPS and tnear <= tfar:
            t_hit = tnear
            cos_hit = abs(ldx) if axis == 0 else (abs(ldy) if axis == 1 else abs(ldz))
    elif kind == CYLINDER:
        r = ha
        qa = ldx * ldx + ldy * ldy
        if qa > 1e-12:
            qb = 2.0 * (lox * ldx + loy * ldy)
            qc = lox * lox + loy * loy - r * r
            disc = qb * qb - 4.0 * qa * qc
            if disc >= 0.0:
                t = (-qb - math.sqrt(disc)) / (2.0 * qa)
                if t > _EPS:
                    z = loz + t * ldz
                    if -hc <= z <= hc:
                        t_hit = t
                        cos_hit = abs((lox + t * ldx) * ldx + (loy + t * ldy) * ldy) / r
        if abs(ldz) > 1e-12:
            for cap in (hc, -hc):
                t = (cap - loz) / ldz
                if _EPS < t < t_hit:
                    px = lox + t * ldx
                    py = loy + t * ldy
                    if px * px + py * py <= r * r:
                        t_hit = t
                        cos_hit = abs(ldz)
    else:
        ex, ey, ez = lox / ha, loy / hb, loz / hc
        fx, fy, fz = ldx / ha, ldy / hb, ldz / hc
        qa = fx * fx + fy * fy + fz * fz
        qb = 2.0 * (ex * fx + ey * fy + ez * fz)
        qc = ex * ex + ey * ey + ez * ez - 1.0
        disc = qb * qb - 4.0 * qa * qc
        if disc >= 0.0:
            t = (-qb - math.sqrt(disc)) / (2.0 * qa)
            if t > _EPS:
                nx = (ex + t * fx) / ha
                ny = (ey + t * fy) / hb
                nz = (ez + t * fz) / hc
                t_hit = t
                cos_hit = abs(nx * ldx + ny * ldy + nz * ldz) / math.sqrt(nx * nx + ny * ny + nz * nz)
    if t_hit < np.inf and p[F_DENSITY] < 1.0:
        if _hash01(ray_id, prim_id, 1) >= p[F_DENSITY]:
            return np.inf, 0.0
        t_hit += p[F_DEPTH] * _hash01(ray_id, prim_id, 2)
        cos_hit = 0.3 + 0.7 * _hash01(ray_id, prim_id, 3)
    return t_hit, cos_hit


@njit(cache=True)
def _cast_lidar(sin_el, cos_el, cos_az, sin_az, interleave, col_ptr, col_idx, near, prims,
                ground, max_range, out_t, out_id, out_cos):
    n_beams = sin_el.shape[0]
    n_cols = cos_az.shape[0]
    for col in range(n_cols):
        for beam in range(n_beams):
            if (col + beam) % interleave != 0:
                continue
            dx = cos_el[beam] * cos_az[col]
            dy = cos_el[beam] * sin_az[col]
            dz = sin_el[beam]
            t_best, id_best, cos_best = _terrain_hit(ground, 0.0, 0.0, 0.0, dx, dy, dz)
            ray_id = beam * n_cols + col
            for k in range(col_ptr[col], col_ptr[col + 1]):
                j = col_idx[k]
                if near[j] >= t_best:
                    break
                t, cs = _prim_hit(prims[j], 0.0, 0.0, 0.0, dx, dy, dz, ray_id, j)
                if t < t_best:
                    t_best, id_best, cos_best = t, j, cs
            if t_best <= max_range:
                out_t[beam, col] = t_best
                out_id[beam, col] = id_best
                out_cos[beam, col] = cos_best
            else:
                out_t[beam, col] = np.inf
                out_id[beam, col] = HIT_NONE
                out_cos[beam, col] = 0.0


@njit(cache=True)
def _cast_rays(origins, dirs, ray_ids, prims, radius, ground, use_ground, max_range, out_t, out_id):
    m = prims.shape[0]
    for i in range(origins.shape[0]):
        ox, oy, oz = origins[i, 0], origins[i, 1], origins[i, 2]
        dx, dy, dz = dirs[i, 0], dirs[i, 1], dirs[i, 2]
        if use_ground:
            t_best, id_best, _ = _terrain_hit(ground, ox, oy, oz, dx, dy, dz)
        else:
            t_best, id_best = np.inf, HIT_NONE
        for j in range(m):
            # bounding-sphere rejection
            cx, cy, cz = prims[j, F_X] - ox, prims[j, F_Y] - oy, prims[j, F_Z] - oz
            tc = cx * dx + cy * dy + cz * dz
            r = radius[j]
            if tc + r < 0.0 or tc - r > t_best:
                continue
            if cx * cx + cy * cy + cz * cz - tc * tc > r * r:
                continue
            t, _ = _prim_hit(prims[j], ox, oy, oz, dx, dy, dz, ray_ids[i], j)
            if t < t_best:
                t_best, id_best = t, j
        if t_best <= max_range:
            out_t[i] = t_best
            out_id[i] = id_best
        else:
            out_t[i] = np.inf
            out_id[i] = HIT_NONE


def bounding_radii(prims: np.ndarray):
    """(``[M]`` 3D bounding-sphere radius, ``[M]`` horizontal bounding-circle radius) of primitives."""
    kind = prims[:, F_KIND]
    a, b, c = prims[:, F_A], prims[:, F_B], prims[:, F_C]
    box = kind == BOX
    cyl = kind == CYLINDER
    r3 = np.where(box, np.sqrt(a * a + b * b + c * c),
                  np.where(cyl, np.sqrt(a * a + c * c), np.maximum(np.maximum(a, b), c)))
    r2 = np.where(box, np.sqrt(a * a + b * b), np.where(cyl, a, np.maximum(a, b)))
    return r3, r2


def column_candidates(prims: np.ndarray, num_columns: int, max_range: float):
    """Per-azimuth-column candidate lists for a sensor at the origin.

    Column ``c`` looks along azimuth ``c * 2 pi / num_columns``. A primitive is a candidate of every
    column its horizontal bounding circle spans (one column of margin). Each column's list is
    sorted by ``near``, a lower bound of the range of any hit on the primitive, so a kernel can
    stop at the first candidate farther than its best hit.

    Returns:
        (``[num_columns + 1]`` int64 offsets, ``[E]`` int64 primitive indices, ``[M]`` float64 near).
    """
    m = len(prims)
    _, r2 = bounding_radii(prims)
    dist = np.hypot(prims[:, F_X], prims[:, F_Y])
    near = np.maximum(dist - r2, 0.0)
    step = 2.0 * np.pi / num_columns
    keep = near <= max_range
    full = keep & (dist <= r2 + 1e-3)
    part = keep & ~full
    half = np.zeros(m)
    half[part] = np.arcsin(np.clip(r2[part] / dist[part], 0.0, 1.0))
    centre = np.arctan2(prims[:, F_Y], prims[:, F_X])
    first = np.floor((centre - half) / step).astype(np.int64) - 1
    last = np.ceil((centre + half) / step).astype(np.int64) + 1
    count = np.where(full, num_columns, np.where(part, np.minimum(last - first + 1, num_columns), 0))
    prim_of = np.repeat(np.arange(m, dtype=np.int64), count)
    start = np.where(full, 0, first)
    offset_in = np.arange(len(prim_of), dtype=np.int64) - np.repeat(np.cumsum(count) - count, count)
    cols = (np.repeat(start, count) + offset_in) % num_columns
    order = np.lexsort((prim_of, near[prim_of], cols))
    col_idx = prim_of[order]
    col_ptr = np.zeros(num_columns + 1, dtype=np.int64)
    np.cumsum(np.bincount(cols, minlength=num_columns), out=col_ptr[1:])
    return col_ptr, np.ascontiguousarray(col_idx), near


def cast_lidar(prims: np.ndarray, ground: np.ndarray, elevations: np.ndarray, num_columns: int,
               interleave: int, max_range: float):
    """Casts a spinning LiDAR at the origin.

    Args:
        prims: ``[M, PRIM_FIELDS]`` float64 primitive rows.
        ground: ``[GROUND_FIELDS]`` float64 terrain parameters.
        elevations: ``[B]`` beam elevations, radians.
        num_columns: azimuth columns over 360 degrees (column c at azimuth ``c * 2 pi / C``).
        interleave: beam ``b`` fires on the columns with ``(c + b) % interleave == 0``.
        max_range: metres; farther hits are misses.

    Returns:
        (``[B, C]`` float64 range (inf where no ray or no return), ``[B, C]`` int32 hit id,
        ``[B, C]`` float32 |cos| of the incidence angle).
    """
    prims = np.ascontiguousarray(prims, dtype=np.float64).reshape(-1, PRIM_FIELDS)
    col_ptr, col_idx, near = column_candidates(prims, num_columns, max_range)
    az = np.arange(num_columns) * (2.0 * np.pi / num_columns)
    el = np.asarray(elevations, np.float64)
    shape = (len(el), num_columns)
    out_t = np.full(shape, np.inf)
    out_id = np.full(shape, HIT_NONE, dtype=np.int32)
    out_cos = np.zeros(shape, dtype=np.float32)
    _cast_lidar(np.sin(el), np.cos(el), np.cos(az), np.sin(az), int(interleave), col_ptr, col_idx,
                near, prims, np.asarray(ground, np.float64), float(max_range), out_t, out_id, out_cos)
    return out_t, out_id, out_cos


def cast_rays(origins: np.ndarray, dirs: np.ndarray, prims: np.ndarray, ground: np.ndarray,
              use_ground: bool = True, max_range: float = 1e9, ray_ids=None):
    """First hit of arbitrary rays (camera visibility grids).

    Args:
        origins: ``[R, 3]`` ray origins (LiDAR frame, metres).
        dirs: ``[R, 3]`` unit directions.
        prims: ``[M, PRIM_FIELDS]`` primitives; ground: terrain parameters.
        use_ground: whether the terrain can be hit.
        ray_ids: ``[R]`` non-negative int64 ids for the porous-surface hash (default 0..R-1).

    Returns:
        (``[R]`` float64 distance (inf on a miss), ``[R]`` int32 hit id).
    """
    origins = np.ascontiguousarray(origins, dtype=np.float64).reshape(-1, 3)
    dirs = np.ascontiguousarray(dirs, dtype=np.float64).reshape(-1, 3)
    prims = np.ascontiguousarray(prims, dtype=np.float64).reshape(-1, PRIM_FIELDS)
    if ray_ids is None:
        ray_ids = np.arange(len(origins), dtype=np.int64)
    radius, _ = bounding_radii(prims)
    out_t = np.full(len(origins), np.inf)
    out_id = np.full(len(origins), HIT_NONE, dtype=np.int32)
    _cast_rays(origins, dirs, np.ascontiguousarray(ray_ids, dtype=np.int64), prims,
               np.ascontiguousarray(radius), np.asarray(ground, np.float64), bool(use_ground),
               float(max_range), out_t, out_id)
    return out_t, out_id
