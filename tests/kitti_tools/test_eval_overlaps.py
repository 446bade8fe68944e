"""Overlaps of the KITTI evaluator against an exact rational polygon oracle, plus properties."""
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pointdistiller.kitti_tools.evaluation import bev_iou, image_iou, iou3d


# ---------------------------------------------------------------------------------------------
# oracle: exact intersection of the float64 corner polygons (vertices inside the other polygon
# plus edge-edge crossings, then the convex hull), all in Fractions
# ---------------------------------------------------------------------------------------------
def _corners(box):
    """The 4 BEV corners (x, z) of a camera box, as the doc defines them, counter-clockwise."""
    x, _, z, _, w, l, ry = (float(v) for v in box)
    c, s = math.cos(ry), math.sin(ry)
    local = [(l / 2, w / 2), (-l / 2, w / 2), (-l / 2, -w / 2), (l / 2, -w / 2)]
    return [(Fraction(c * u + s * v + x), Fraction(-s * u + c * v + z)) for u, v in local]


def _cross(o, a, b):
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def _inside(p, poly):
    return all(_cross(poly[k], poly[(k + 1) % len(poly)], p) >= 0 for k in range(len(poly)))


def _crossing(p0, p1, q0, q1):
    d = (p1[0] - p0[0]) * (q1[1] - q0[1]) - (p1[1] - p0[1]) * (q1[0] - q0[0])
    if d == 0:
        return None
    t = ((q0[0] - p0[0]) * (q1[1] - q0[1]) - (q0[1] - p0[1]) * (q1[0] - q0[0])) / d
    u = ((q0[0] - p0[0]) * (p1[1] - p0[1]) - (q0[1] - p0[1]) * (p1[0] - p0[0])) / d
    if 0 <= t <= 1 and 0 <= u <= 1:
        return (p0[0] + t * (p1[0] - p0[0]), p0[1] + t * (p1[1] - p0[1]))
    return None


def _hull_area(points):
    pts = sorted(set(points))
    if len(pts) < 3:
        return Fraction(0)
    lower, upper = [], []
    for p in pts:
        while len(lower) >= 2 and _cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(pts):
        while len(upper) >= 2 and _cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    hull = lower[:-1] + upper[:-1]
    return abs(sum(hull[k][0] * hull[(k + 1) % len(hull)][1]
                   - hull[(k + 1) % len(hull)][0] * hull[k][1] for k in range(len(hull)))) / 2


def oracle_intersection(a, b):
    pa, pb = _corners(a), _corners(b)
    pts = [p for p in pa if _inside(p, pb)] + [p for p in pb if _inside(p, pa)]
    for i in range(4):
        for j in range(4):
            x = _crossing(pa[i], pa[(i + 1) % 4], pb[j], pb[(j + 1) % 4])
            if x is not None:
                pts.append(x)
    return float(_hull_area(pts))


def oracle_bev_iou(a, b):
    inter = oracle_intersection(a, b)
    return inter / (a[4] * a[5] + b[4] * b[5] - inter) if inter > 0 else 0.0


def oracle_iou3d(a, b):
    inter = oracle_intersection(a, b)
    dh = max(0.0, min(a[1], b[1]) - max(a[1] - a[3], b[1] - b[3]))
    vol = inter * dh
    return vol / (a[3] * a[4] * a[5] + b[3] * b[4] * b[5] - vol) if vol > 0 else 0.0


# ---------------------------------------------------------------------------------------------
# strategies: a coarse grid (shared and collinear edges, identical footprints, right angles)
# mixed with arbitrary values
# ---------------------------------------------------------------------------------------------
_ANGLES = [0.0, math.pi / 2, math.pi, -math.pi / 2, math.pi / 4, 3 * math.pi / 4, -math.pi]
coarse = st.sampled_from([-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0])
size = st.one_of(st.sampled_from([0.5, 1.0, 2.0, 3.0]), st.floats(0.2, 5.0))
angle = st.one_of(st.sampled_from(_ANGLES), st.floats(-math.pi, math.pi))
position = st.one_of(coarse, st.floats(-3.0, 3.0))


@st.composite
def boxes(draw):
    x, z = draw(position), draw(position)
    y = draw(st.sampled_from([1.0, 1.5, 2.0]))
    return np.array([x, y, z, draw(size), draw(size), draw(size), draw(angle)])


@settings(max_examples=300, deadline=None)
@given(boxes(), boxes())
def test_bev_and_3d_against_exact_oracle(a, b):
    got_bev = bev_iou(a[None], b[None])[0, 0]
    got_3d = iou3d(a[None], b[None])[0, 0]
    assert got_bev == pytest.approx(oracle_bev_iou(a, b), abs=1e-9)
    assert got_3d == pytest.approx(oracle_iou3d(a, b), abs=1e-9)
    assert 0.0 <= got_bev <= 1.0 + 1e-12 and 0.0 <= got_3d <= 1.0 + 1e-12


@settings(max_examples=200, deadline=None)
@given(st.lists(boxes(), min_size=1, max_size=4), st.lists(boxes(), min_size=1, max_size=4))
def test_symmetry(first, second):
    a, b = np.stack(first), np.stack(second)
    np.testing.assert_allclose(bev_iou(a, b), bev_iou(b, a).T, atol=1e-12)
    np.testing.assert_allclose(iou3d(a, b), iou3d(b, a).T, atol=1e-12)


@settings(max_examples=200, deadline=None)
@given(boxes(), st.sampled_from([0.0, math.pi, -math.pi, 2 * math.pi]))
def test_identical_boxes_give_one(box, turn):
    twin = box.copy()
    twin[6] += turn  # the same footprint, corners listed from another start
    assert bev_iou(box[None], twin[None])[0, 0] == pytest.approx(1.0, abs=1e-12)
    assert iou3d(box[None], twin[None])[0, 0] == pytest.approx(1.0, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(boxes(), boxes(), st.floats(0.0, 2 * math.pi))
def test_disjoint_boxes_give_zero(a, b, direction):
    reach = (math.hypot(a[4], a[5]) + math.hypot(b[4], b[5])) / 2
    b = b.copy()
    b[0] = a[0] + (reach + 0.01) * math.cos(direction)
    b[2] = a[2] + (reach + 0.01) * math.sin(direction)
    assert bev_iou(a[None], b[None])[0, 0] == 0.0
    assert iou3d(a[None], b[None])[0, 0] == 0.0


def test_square_turned_a_right_angle_is_identical():
    square = np.array([[3.0, 1.5, 20.0, 1.5, 2.0, 2.0, 0.0]])
    turned = square.copy()
    turned[0, 6] = math.pi / 2  # cos = 6e-17: edges collinear up to rounding
    assert bev_iou(square, turned)[0, 0] == pytest.approx(1.0, abs=1e-12)


def test_known_values():
    a = np.array([[0.0, 2.0, 0.0, 2.0, 1.0, 2.0, 0.0]])
    shifted = a.copy()
    shifted[0, 0] = 1.0  # half the length: 1 / 3 of the union
    assert bev_iou(a, shifted)[0, 0] == pytest.approx(1 / 3, abs=1e-15)
    touching = a.copy()
    touching[0, 2] = 1.0  # shares the long edge only
    assert bev_iou(a, touching)[0, 0] == 0.0
    lower = a.copy()
    lower[0, 1] = 3.0  # spans [1, 3] against [0, 2]: half the height
    assert iou3d(a, lower)[0, 0] == pytest.approx(1 / 3, abs=1e-15)
    crossed = a.copy()
    crossed[0, 6] = math.pi / 2  # a 2 x 1 cross: 1 / (2 + 2 - 1)
    assert bev_iou(a, crossed)[0, 0] == pytest.approx(1 / 3, abs=1e-12)


def test_non_positive_sizes_overlap_nothing():
    a = np.array([[0.0, 2.0, 0.0, 2.0, 1.0, 2.0, 0.0]])
    for column in (4, 5):
        flat = a.copy()
        flat[0, column] = -1.0
        assert bev_iou(a, flat)[0, 0] == 0.0 and iou3d(a, flat)[0, 0] == 0.0
    no_height = a.copy()
    no_height[0, 3] = 0.0
    assert bev_iou(a, no_height)[0, 0] == 1.0 and iou3d(a, no_height)[0, 0] == 0.0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 100), st.floats(0, 100), st.floats(0, 50), st.floats(0, 50)),
                min_size=2, max_size=2),
       st.sampled_from([-1, 0, 1]))
def test_image_overlap_formula(pair, criterion):
    (x1, y1, w1, h1), (x2, y2, w2, h2) = pair
    a, b = np.array([[x1, y1, x1 + w1, y1 + h1]]), np.array([[x2, y2, x2 + w2, y2 + h2]])
    (ax1, ay1, ax2, ay2), (bx1, by1, bx2, by2) = a[0].tolist(), b[0].tolist()
    iw = min(ax2, bx2) - max(ax1, bx1)
    ih = min(ay2, by2) - max(ay1, by1)
    inter = iw * ih if iw > 0 and ih > 0 else 0.0
    area_a, area_b = (ax2 - ax1) * (ay2 - ay1), (bx2 - bx1) * (by2 - by1)
    denom = {-1: area_a + area_b - inter, 0: area_a, 1: area_b}[criterion]
    expected = inter / denom if inter > 0 else 0.0
    assert image_iou(a, b, criterion)[0, 0] == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="query_boxes"):
        bev_iou(np.zeros((1, 7)), np.zeros((1, 5)))
    with pytest.raises(ValueError, match="criterion"):
        image_iou(np.zeros((1, 4)), np.zeros((1, 4)), criterion=2)
