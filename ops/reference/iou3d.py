"""Slow, obviously-correct float64 references of ``pointdistiller.ops.iou3d`` (tests only).

The BEV intersection of two rotated rectangles is the convex hull of: the corners of each
rectangle that lie inside (or on) the other, and the crossing points of their edges. This is a
different construction from the native kernels' half-plane clipping, so the tests compare two
independent computations. Pairs whose circumscribed circles are disjoint cannot overlap and are
skipped (found with vectorised NumPy); every other pair is computed in plain Python.
Inputs are array-likes (NumPy arrays or CPU/CUDA tensors) of boxes ``[*, 7] = (x, y, z_centre, l,
w, h, yaw)``; outputs are NumPy float64 / int64 arrays.
"""
import math
from typing import List, Optional, Sequence, Tuple

import numpy as np

Point = Tuple[float, float]
_EPS = 1e-9  # metres: tolerance for "on the boundary"


def _as_boxes(boxes) -> np.ndarray:
    if hasattr(boxes, "detach"):
        boxes = boxes.detach().cpu().numpy()
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 7:
        raise ValueError(f"boxes must have shape [*, 7], got {arr.shape}")
    return arr


def bev_corners(box: Sequence[float]) -> List[Point]:
    """Counter-clockwise corners of the BEV rectangle (x, y, l, w, yaw) of one box."""
    x, y, _, length, width, _, yaw = (float(v) for v in box)
    c, s = math.cos(yaw), math.sin(yaw)
    half = [(length / 2, width / 2), (-length / 2, width / 2),
            (-length / 2, -width / 2), (length / 2, -width / 2)]
    return [(x + c * u - s * v, y + s * u + c * v) for u, v in half]


def _cross(o: Point, a: Point, b: Point) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def _inside_convex(p: Point, poly: List[Point]) -> bool:
    """True when p is inside or within _EPS of a counter-clockwise convex polygon."""
    for k in range(len(poly)):
        a, b = poly[k], poly[(k + 1) % len(poly)]
        edge = math.hypot(b[0] - a[0], b[1] - a[1])
        if _cross(a, b, p) < -_EPS * edge:
            return False
    return True


def _segment_crossing(p1: Point, p2: Point, q1: Point, q2: Point) -> Optional[Point]:
    """The crossing point of segments p1p2 and q1q2, or None (parallel segments give None:
    their shared points are endpoints, which the corner tests already collect)."""
    d = (p2[0] - p1[0]) * (q2[1] - q1[1]) - (p2[1] - p1[1]) * (q2[0] - q1[0])
    if d == 0.0:
        return None
    t = ((q1[0] - p1[0]) * (q2[1] - q1[1]) - (q1[1] - p1[1]) * (q2[0] - q1[0])) / d
    u = ((q1[0] - p1[0]) * (p2[1] - p1[1]) - (q1[1] - p1[1]) * (p2[0] - p1[0])) / d
    if -1e-12 <= t <= 1 + 1e-12 and -1e-12 <= u <= 1 + 1e-12:
        return (p1[0] + t * (p2[0] - p1[0]), p1[1] + t * (p2[1] - p1[1]))
    return None


def _convex_hull(points: List[Point]) -> List[Point]:
    """Andrew's monotone chain; counter-clockwise, collinear points dropped."""
    pts = sorted(set(points))
    if len(pts) < 3:
        return pts
    lower: List[Point] = []
    for p in pts:
        while len(lower) >= 2 and _cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: List[Point] = []
    for p in reversed(pts):
        while len(upper) >= 2 and _cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return lower[:-1] + upper[:-1]


def _polygon_area(poly: List[Point]) -> float:
    return 0.5 * sum(poly[k][0] * poly[(k + 1) % len(poly)][1]
                     - poly[(k + 1) % len(poly)][0] * poly[k][1] for k in range(len(poly)))


def overlap_bev_pair(box_a: Sequence[float], box_b: Sequence[float]) -> float:
    """BEV intersection area (m^2) of two boxes (x, y, z, l, w, h, yaw)."""
    area_a = float(box_a[3]) * float(box_a[4])
    area_b = float(box_b[3]) * float(box_b[4])
    if area_a <= 0 or area_b <= 0:
        return 0.0
    ca, cb = bev_corners(box_a), bev_corners(box_b)
    points = [p for p in ca if _inside_convex(p, cb)] + [p for p in cb if _inside_convex(p, ca)]
    for i in range(4):
        for j in range(4):
            p = _segment_crossing(ca[i], ca[(i + 1) % 4], cb[j], cb[(j + 1) % 4])
            if p is not None:
                points.append(p)
    hull = _convex_hull(points)
    if len(hull) < 3:
        return 0.0
    return min(max(_polygon_area(hull), 0.0), area_a, area_b)


def _candidate_pairs(a: np.ndarray, b: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Index pairs whose circumscribed BEV circles meet (all others have zero overlap)."""
    ra = 0.5 * np.hypot(a[:, 3], a[:, 4])
    rb = 0.5 * np.hypot(b[:, 3], b[:, 4])
    d2 = (a[:, None, 0] - b[None, :, 0]) ** 2 + (a[:, None, 1] - b[None, :, 1]) ** 2
    return np.nonzero(d2 <= (ra[:, None] + rb[None, :]) ** 2 * (1 + 1e-12))


def boxes_overlap_bev(boxes_a, boxes_b) -> np.ndarray:
    """``[N, M]`` float64 BEV intersection areas of boxes ``[N, 7]`` and ``[M, 7]``."""
    a, b = _as_boxes(boxes_a), _as_boxes(boxes_b)
    out = np.zeros((a.shape[0], b.shape[0]), dtype=np.float64)
    for i, j in zip(*_candidate_pairs(a, b)):
        out[i, j] = overlap_bev_pair(a[i], b[j])
    return out


def boxes_iou_bev(boxes_a, boxes_b) -> np.ndarray:
    """``[N, M]`` float64 rotated BEV IoU."""
    a, b = _as_boxes(boxes_a), _as_boxes(boxes_b)
    inter = boxes_overlap_bev(a, b)
    union = (a[:, 3] * a[:, 4])[:, None] + (b[:, 3] * b[:, 4])[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(inter > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return np.clip(iou, 0.0, 1.0)


def boxes_iou_3d(boxes_a, boxes_b) -> np.ndarray:
    """``[N, M]`` float64 3D IoU: BEV overlap x z-overlap / union volume."""
    a, b = _as_boxes(boxes_a), _as_boxes(boxes_b)
    top = np.minimum((a[:, 2] + a[:, 5] / 2)[:, None], (b[:, 2] + b[:, 5] / 2)[None, :])
    bottom = np.maximum((a[:, 2] - a[:, 5] / 2)[:, None], (b[:, 2] - b[:, 5] / 2)[None, :])
    inter = boxes_overlap_bev(a, b) * np.maximum(top - bottom, 0.0)
    vol_a = a[:, 3] * a[:, 4] * a[:, 5]
    vol_b = b[:, 3] * b[:, 4] * b[:, 5]
    union = vol_a[:, None] + vol_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(inter > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return np.clip(iou, 0.0, 1.0)


def nms_bev(boxes, scores, iou_threshold: float, pre_max_size: Optional[int] = None,
            post_max_size: Optional[int] = None) -> np.ndarray:
    """Greedy rotated-BEV NMS; ``[K]`` int64 indices into ``boxes`` in descending score order
    (equal scores: lower index first). A box is kept unless its IoU with a kept box is
    > iou_threshold."""
    b = _as_boxes(boxes)
    if hasattr(scores, "detach"):
        scores = scores.detach().cpu().numpy()
    s = np.asarray(scores, dtype=np.float64)
    order = sorted(range(len(s)), key=lambda i: (-s[i], i))
    if pre_max_size is not None:
        order = order[:pre_max_size]
    keep: List[int] = []
    for i in order:
        if post_max_size is not None and len(keep) >= post_max_size:
            break
        if all(boxes_iou_bev(b[i:i + 1], b[k:k + 1])[0, 0] <= iou_threshold for k in keep):
            keep.append(i)
    return np.asarray(keep, dtype=np.int64)
