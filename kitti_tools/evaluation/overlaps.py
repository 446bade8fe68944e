"""Box overlaps of the KITTI metric, in float64: axis-aligned IoU of 2D image boxes, rotated
bird's-eye-view (BEV) IoU and 3D IoU of camera-frame boxes.

Camera boxes are ``[n, 7]`` float64 rows ``(x, y, z, h, w, l, ry)``: ``location`` (bottom centre,
camera frame, y down, metres), then ``hwl``, then ``rotation_y`` - the column order of
:class:`~pointdistiller.kitti_tools.io.KittiObjects` (see :func:`camera_boxes`). The BEV footprint is
the rectangle in the (x, z) plane with corners ``R (+-l/2, +-w/2) + (x, z)``,
``R = [[cos ry, sin ry], [-sin ry, cos ry]]``; the box spans ``[y - h, y]`` vertically.

Rotated intersections clip one rectangle by the four half-planes of the other (Sutherland-Hodgman)
in float64, with coordinates taken relative to the first box's centre. Clipping a convex polygon by
half-planes only ever interpolates along an edge whose end points lie strictly on opposite sides, so
identical boxes, shared or collinear edges and touching corners need no special case: identical
boxes give IoU 1 to within a few ulps. A box with a non-positive BEV side (``l <= 0`` or ``w <= 0``,
e.g. the -1 sizes of a 2D-only detection) overlaps nothing in BEV and 3D; a non-positive height
overlaps nothing in 3D.

The numba kernels run on the CPU only and are compiled once and cached on disk.
"""
import numba
import numpy as np

# Clipping a quadrilateral by 4 half-planes: each pass at most doubles the vertex count (only with
# rounding noise; exact arithmetic adds at most one vertex per pass).
_CLIP_BUFFER = 64


@numba.njit(cache=True)
def _quad_corners(x, z, l, w, c, s, ox, oz, out_x, out_z):
    """Writes the 4 BEV corners of a rectangle, counter-clockwise, relative to ``(ox, oz)``."""
    hl = 0.5 * l
    hw = 0.5 * w
    cx = x - ox
    cz = z - oz
    # Local corners (hl, hw), (-hl, hw), (-hl, -hw), (hl, -hw): counter-clockwise; R is a rotation.
    for k in range(4):
        lx = hl if (k == 0 or k == 3) else -hl
        lz = hw if k < 2 else -hw
        out_x[k] = c * lx + s * lz + cx
        out_z[k] = -s * lx + c * lz + cz


@numba.njit(cache=True)
def _convex_clip_area(ax, az, bx, bz, sx, sz, tx, tz):
    """Area of the intersection of two counter-clockwise quadrilaterals ``a`` and ``b``.

    ``sx, sz, tx, tz`` are scratch buffers of ``_CLIP_BUFFER`` float64 each.
    """
    n = 4
    for k in range(4):
        sx[k] = ax[k]
        sz[k] = az[k]
    for e in range(4):
        if n == 0:
            return 0.0
        e0x = bx[e]
        e0z = bz[e]
        dx = bx[(e + 1) % 4] - e0x
        dz = bz[(e + 1) % 4] - e0z
        m = 0
        px = sx[n - 1]
        pz = sz[n - 1]
        pd = dx * (pz - e0z) - dz * (px - e0x)  # >= 0: left of the edge, inside
        for k in range(n):
            qx = sx[k]
            qz = sz[k]
            qd = dx * (qz - e0z) - dz * (qx - e0x)
            if qd >= 0.0:
                if pd < 0.0:
                    t = pd / (pd - qd)
                    tx[m] = px + t * (qx - px)
                    tz[m] = pz + t * (qz - pz)
                    m += 1
                tx[m] = qx
                tz[m] = qz
                m += 1
            elif pd >= 0.0:
                t = pd / (pd - qd)
                tx[m] = px + t * (qx - px)
                tz[m] = pz + t * (qz - pz)
                m += 1
            px = qx
            pz = qz
            pd = qd
        for k in range(m):
            sx[k] = tx[k]
            sz[k] = tz[k]
        n = m
    area = 0.0
    for k in range(n):
        k1 = (k + 1) % n
        area += sx[k] * sz[k1] - sx[k1] * sz[k]
    return max(0.5 * area, 0.0)


@numba.njit(cache=True)
def _bev_intersection(a, b, ca, sa, cb, sb, buf):
    """BEV intersection area of camera boxes ``a`` and ``b`` (7-vectors; ``c*``/``s*`` their cos/sin
    of ry). ``buf`` is ``[8, _CLIP_BUFFER]`` scratch. Boxes with a non-positive side give 0."""
    la, wa, lb, wb = a[5], a[4], b[5], b[4]
    if la <= 0.0 or wa <= 0.0 or lb <= 0.0 or wb <= 0.0:
        return 0.0
    dx = b[0] - a[0]
    dz = b[2] - a[2]
    reach = 0.5 * (np.sqrt(la * la + wa * wa) + np.sqrt(lb * lb + wb * wb))
    if dx * dx + dz * dz >= reach * reach:
        return 0.0
    _quad_corners(a[0], a[2], la, wa, ca, sa, a[0], a[2], buf[0], buf[1])
    _quad_corners(b[0], b[2], lb, wb, cb, sb, a[0], a[2], buf[2], buf[3])
    return _convex_clip_area(buf[0], buf[1], buf[2], buf[3], buf[4], buf[5], buf[6], buf[7])


@numba.njit(cache=True)
def _height_overlap(a, b):
    """Vertical overlap of two camera boxes spanning ``[y - h, y]`` (0 when disjoint)."""
    if a[3] <= 0.0 or b[3] <= 0.0:
        return 0.0
    return max(0.0, min(a[1], b[1]) - max(a[1] - a[3], b[1] - b[3]))


@numba.njit(cache=True)
def _image_overlap(a, b, criterion):
    """Overlap of image boxes ``(x1, y1, x2, y2)`` without +1: criterion -1 IoU, 0 intersection over
    the area of ``a``, 1 over the area of ``b``."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    if iw <= 0.0:
        return 0.0
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if ih <= 0.0:
        return 0.0
    inter = iw * ih
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    if criterion == -1:
        denom = area_a + area_b - inter
    elif criterion == 0:
        denom = area_a
    else:
        denom = area_b
    return inter / denom if denom > 0.0 else 0.0


@numba.njit(cache=True)
def _rotated_overlaps(boxes, query, want_3d):
    """``[n, k]`` BEV IoU (``want_3d`` False) or 3D IoU (True) of camera boxes."""
    n = boxes.shape[0]
    k = query.shape[0]
    out = np.zeros((n, k))
    buf = np.empty((8, _CLIP_BUFFER))
    for i in range(n):
        a = boxes[i]
        ca = np.cos(a[6])
        sa = np.sin(a[6])
        for j in range(k):
            b = query[j]
            inter = _bev_intersection(a, b, ca, sa, np.cos(b[6]), np.sin(b[6]), buf)
            if inter <= 0.0:
                continue
            if want_3d:
                dh = _height_overlap(a, b)
                if dh <= 0.0:
                    continue
                inter *= dh
                union = a[3] * a[4] * a[5] + b[3] * b[4] * b[5] - inter
            else:
                union = a[4] * a[5] + b[4] * b[5] - inter
            out[i, j] = inter / union
    return out


@numba.njit(cache=True)
def _image_overlaps(boxes, query, criterion):
    n = boxes.shape[0]
    k = query.shape[0]
    out = np.zeros((n, k))
    for i in range(n):
        for j in range(k):
            out[i, j] = _image_overlap(boxes[i], query[j], criterion)
    return out


def _as_boxes(value, width: int, name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != width:
        raise ValueError(f"{name}: expected an [n, {width}] array, got shape {arr.shape}")
    return np.ascontiguousarray(arr)


def camera_boxes(objects) -> np.ndarray:
    """``[n, 7]`` float64 camera boxes ``(x, y, z, h, w, l, ry)`` of a ``KittiObjects``."""
    return np.ascontiguousarray(np.concatenate(
        [objects.location, objects.hwl, objects.rotation_y[:, None]], axis=1), dtype=np.float64)


def image_iou(boxes: np.ndarray, query_boxes: np.ndarray, criterion: int = -1) -> np.ndarray:
    """Overlaps of axis-aligned image boxes (pixels, ``x2 - x1`` wide, no +1).

    Args:
        boxes: ``[n, 4]`` float ``(x1, y1, x2, y2)``.
        query_boxes: ``[k, 4]`` float.
        criterion: -1 intersection over union; 0 intersection over the area of ``boxes[i]``;
            1 intersection over the area of ``query_boxes[j]``.

    Returns:
        ``[n, k]`` float64.
    """
    if criterion not in (-1, 0, 1):
        raise ValueError(f"criterion must be -1, 0 or 1, got {criterion!r}")
    return _image_overlaps(_as_boxes(boxes, 4, "boxes"), _as_boxes(query_boxes, 4, "query_boxes"),
                           criterion)


def bev_iou(boxes: np.ndarray, query_boxes: np.ndarray) -> np.ndarray:
    """Rotated bird's-eye-view IoU of camera boxes (footprints in the x-z plane).

    Args:
        boxes: ``[n, 7]`` float camera boxes ``(x, y, z, h, w, l, ry)`` (metres, radians).
        query_boxes: ``[k, 7]`` float.

    Returns:
        ``[n, k]`` float64 in [0, 1]; symmetric; 1 for identical footprints.
    """
    return _rotated_overlaps(_as_boxes(boxes, 7, "boxes"), _as_boxes(query_boxes, 7, "query_boxes"),
                             False)


def iou3d(boxes: np.ndarray, query_boxes: np.ndarray) -> np.ndarray:
    """3D IoU of camera boxes: BEV intersection area times the overlap of ``[y - h, y]``, over the
    union of the volumes.

    Args:
        boxes: ``[n, 7]`` float camera boxes ``(x, y, z, h, w, l, ry)`` (metres, radians).
        query_boxes: ``[k, 7]`` float.

    Returns:
        ``[n, k]`` float64 in [0, 1].
    """
    return _rotated_overlaps(_as_boxes(boxes, 7, "boxes"), _as_boxes(query_boxes, 7, "query_boxes"),
                             True)


@numba.njit(cache=True)
def frame_overlaps(gt_off, dt_off, pair_off, gt_bbox, gt_box, gt_used, gt_dontcare, dt_bbox, dt_box):
    """Overlaps of every detection with every GT object of the same frame, for a batch of frames.

    Frame ``f`` owns GT rows ``gt_off[f]:gt_off[f+1]``, detection rows ``dt_off[f]:dt_off[f+1]`` and
    pair slots ``pair_off[f] + j * n_gt + i`` (detection ``j``, GT ``i``, both frame-local).

    Args:
        gt_off, dt_off, pair_off: ``[F + 1]`` int64 offsets.
        gt_bbox: ``[G, 4]`` float64 image boxes; gt_box: ``[G, 7]`` float64 camera boxes.
        gt_used: ``[G]`` bool, GT whose overlaps are needed (others are left 0).
        gt_dontcare: ``[G]`` bool, DontCare regions.
        dt_bbox: ``[D, 4]`` float64; dt_box: ``[D, 7]`` float64.

    Returns:
        ``(iou_2d, iou_bev, iou_3d)``, each ``[pair_off[F]]`` float64, and ``dc_max`` ``[D]``
        float64: per detection the largest intersection-over-detection-area with a DontCare box of
        its frame (criterion 0).
    """
    num_frames = gt_off.shape[0] - 1
    total = pair_off[num_frames]
    iou_2d = np.zeros(total)
    iou_bev = np.zeros(total)
    iou_3d = np.zeros(total)
    dc_max = np.zeros(dt_bbox.shape[0])
    buf = np.empty((8, _CLIP_BUFFER))
    gt_cos = np.cos(gt_box[:, 6])
    gt_sin = np.sin(gt_box[:, 6])
    for f in range(num_frames):
        g0 = gt_off[f]
        ng = gt_off[f + 1] - g0
        d0 = dt_off[f]
        nd = dt_off[f + 1] - d0
        base = pair_off[f]
        for j in range(nd):
            db = dt_bbox[d0 + j]
            dbox = dt_box[d0 + j]
            cd = np.cos(dbox[6])
            sd = np.sin(dbox[6])
            for i in range(ng):
                gi = g0 + i
                if gt_dontcare[gi]:
                    o = _image_overlap(db, gt_bbox[gi], 0)
                    if o > dc_max[d0 + j]:
                        dc_max[d0 + j] = o
                    continue
                if not gt_used[gi]:
                    continue
                slot = base + j * ng + i
                iou_2d[slot] = _image_overlap(db, gt_bbox[gi], -1)
                gbox = gt_box[gi]
                inter = _bev_intersection(dbox, gbox, cd, sd, gt_cos[gi], gt_sin[gi], buf)
                if inter <= 0.0:
                    continue
                iou_bev[slot] = inter / (dbox[4] * dbox[5] + gbox[4] * gbox[5] - inter)
                dh = _height_overlap(dbox, gbox)
                if dh > 0.0:
                    vol = inter * dh
                    iou_3d[slot] = vol / (dbox[3] * dbox[4] * dbox[5] + gbox[3] * gbox[4] * gbox[5]
                                          - vol)
    return iou_2d, iou_bev, iou_3d, dc_max
