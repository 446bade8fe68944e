"""Calibration transforms and box geometry, checked on the real KITTI frames and against
brute-force references."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pointdistiller.kitti_tools import geometry as geo
from pointdistiller.kitti_tools import io as kio

FRAMES = {"000000": "velodyne", "000001": "velodyne", "000002": "velodyne",
          "000008": "velodyne_reduced"}


def _frame(root, frame):
    paths = kio.frame_paths(root, frame, velodyne=FRAMES[frame])
    calib = kio.read_calib(paths["calib"])
    objects = kio.read_label(paths["label"])
    objects = objects.select(objects.name != "DontCare")
    return (kio.read_velodyne(paths["velodyne"]), objects, calib,
            kio.read_image_size(paths["image"]))


def _iou_2d(a, b):
    ix = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = ix * iy
    area = lambda r: (r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1])
    return inter / (area(a) + area(b) - inter)


@pytest.mark.parametrize("frame", sorted(FRAMES))
def test_point_transforms_round_trip(kitti_sample, frame):
    points, _, calib, _ = _frame(kitti_sample, frame)
    xyz = points[:2000, :3].astype(np.float64)
    np.testing.assert_allclose(calib.rect_to_lidar(calib.lidar_to_rect(xyz)), xyz, atol=1e-9)
    np.testing.assert_allclose(calib.velo_to_rect @ calib.rect_to_velo, np.eye(4), atol=1e-12)
    # camera z is (about) LiDAR x, camera x is (about) -LiDAR y
    rect = calib.lidar_to_rect(np.array([[10.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    assert rect[0, 2] > 9.5 and rect[1, 0] - calib.lidar_to_rect(np.zeros((1, 3)))[0, 0] < -0.99


@pytest.mark.parametrize("frame", sorted(FRAMES))
def test_box_transforms_round_trip(kitti_sample, frame):
    _, objects, calib, _ = _frame(kitti_sample, frame)
    boxes = geo.camera_to_lidar_boxes(objects.location, objects.hwl, objects.rotation_y, calib)
    location, hwl, ry = geo.lidar_to_camera_boxes(boxes, calib)
    np.testing.assert_allclose(location, objects.location, atol=1e-9)
    np.testing.assert_allclose(hwl, objects.hwl)
    np.testing.assert_allclose(geo.limit_period(ry - objects.rotation_y), 0, atol=1e-12)
    again = geo.camera_to_lidar_boxes(location, hwl, ry, calib)
    np.testing.assert_allclose(again, boxes, atol=1e-9)


@pytest.mark.parametrize("frame", sorted(FRAMES))
def test_projected_boxes_match_label_2d_boxes(kitti_sample, frame):
    _, objects, calib, shape = _frame(kitti_sample, frame)
    boxes = geo.camera_to_lidar_boxes(objects.location, objects.hwl, objects.rotation_y, calib)
    bbox, in_front = geo.boxes_to_image(boxes, calib, shape)
    assert in_front.all()
    untruncated = objects.truncated == 0
    assert untruncated.any()
    iou = _iou_2d(bbox[untruncated], objects.bbox[untruncated])
    assert (iou >= 0.7).all(), iou


@pytest.mark.parametrize("frame", sorted(FRAMES))
def test_visible_objects_contain_points(kitti_sample, frame):
    points, objects, calib, shape = _frame(kitti_sample, frame)
    fov = points[geo.fov_mask(points, calib, shape)]
    boxes = geo.camera_to_lidar_boxes(objects.location, objects.hwl, objects.rotation_y, calib)
    counts = geo.points_in_boxes(fov, boxes).sum(axis=0)
    assert (counts > 0).all(), counts
    near = objects.location[:, 2] < 20
    assert (counts[near] >= 50).all(), counts


def test_fov_mask_keeps_the_reduced_cloud(kitti_sample):
    points, _, calib, shape = _frame(kitti_sample, "000008")
    assert geo.fov_mask(points, calib, shape).all()
    full, _, calib0, shape0 = _frame(kitti_sample, "000001")
    share = geo.fov_mask(full, calib0, shape0).mean()
    assert 0.1 < share < 0.25  # a 90-degree camera sees ~16-18 % of a 360-degree scan


def test_observation_angle():
    loc = np.array([[0.0, 1.5, 10.0], [10.0, 1.5, 10.0], [-5.0, 1.5, 5.0]])
    ry = np.array([0.3, 0.3, -3.0])
    alpha = geo.observation_angle(loc, ry)
    np.testing.assert_allclose(alpha, geo.limit_period(ry - np.array([0.0, np.pi / 4, -np.pi / 4])))


# ---------------------------------------------------------------------------------------------
# box geometry against brute force
# ---------------------------------------------------------------------------------------------
def test_corners_and_points_in_boxes():
    boxes = np.array([[1.0, 2.0, 0.5, 4.0, 2.0, 1.0, 0.0], [0.0, 0.0, 0.0, 2.0, 1.0, 3.0, np.pi / 2]])
    corners = geo.lidar_box_corners(boxes)
    np.testing.assert_allclose(corners[0, 0], [3.0, 3.0, 0.0])      # front-left bottom
    np.testing.assert_allclose(corners[1, 0], [-0.5, 1.0, -1.5])     # heading +y: front-left
    bev = geo.bev_corners(boxes)
    np.testing.assert_allclose(bev, corners[:, [0, 3, 2, 1], :2])    # counter-clockwise
    pts = np.array([[2.9, 2.9, 0.9], [3.1, 2.0, 0.5], [0.4, 0.9, 1.4], [0.9, 0.4, 0.0]])
    expected = np.array([[True, False], [False, False], [False, True], [False, False]])
    np.testing.assert_array_equal(geo.points_in_boxes(pts, boxes), expected)


def _clip_area(p, q):
    """Area of the intersection of two convex CCW polygons (Sutherland-Hodgman)."""
    out = list(p)
    for i in range(len(q)):
        a, b = q[i], q[(i + 1) % len(q)]
        inp, out = out, []
        side = lambda v: (b[0] - a[0]) * (v[1] - a[1]) - (b[1] - a[1]) * (v[0] - a[0])
        for j in range(len(inp)):
            cur, nxt = inp[j], inp[(j + 1) % len(inp)]
            sc, sn = side(cur), side(nxt)
            if sc >= 0:
                out.append(cur)
            if (sc >= 0) != (sn >= 0):
                t = sc / (sc - sn)
                out.append(cur + t * (nxt - cur))
        if not out:
            return 0.0
    poly = np.asarray(out)
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


_box = st.tuples(st.floats(-4, 4), st.floats(-4, 4), st.floats(-1, 1), st.floats(0.2, 5),
                 st.floats(0.2, 3), st.floats(0.5, 2), st.floats(-4, 4))


@settings(max_examples=80, deadline=None)
@given(a=st.lists(_box, min_size=1, max_size=4), b=st.lists(_box, min_size=1, max_size=4))
def test_boxes_overlap_bev_matches_polygon_clipping(a, b):
    a, b = np.asarray(a), np.asarray(b)
    got = geo.boxes_overlap_bev(a, b)
    ca, cb = geo.bev_corners(a), geo.bev_corners(b)
    for i in range(len(a)):
        for j in range(len(b)):
            area = _clip_area(ca[i], cb[j])
            if area > 1e-6:
                assert got[i, j], (a[i], b[j], area)
            elif area < 1e-12:
                assert not got[i, j], (a[i], b[j], area)


def test_boxes_overlap_bev_edges():
    a = np.array([[0.0, 0.0, 0.0, 2.0, 2.0, 1.0, 0.0]])
    touching = np.array([[2.0, 0.0, 0.0, 2.0, 2.0, 1.0, 0.0]])
    diamond = np.array([[1.6, 0.0, 0.0, 1.0, 1.0, 1.0, np.pi / 4]])  # left corner at x = 0.89
    higher = np.array([[2.3, 0.0, 5.0, 2.0, 2.0, 1.0, np.pi / 4]])  # z is ignored (BEV)
    apart = np.array([[2.5, 0.0, 0.0, 2.0, 2.0, 1.0, np.pi / 4]])   # corner at x = 1.09
    assert not geo.boxes_overlap_bev(a, touching)[0, 0]
    assert geo.boxes_overlap_bev(a, diamond)[0, 0]
    assert geo.boxes_overlap_bev(a, higher)[0, 0]
    assert not geo.boxes_overlap_bev(a, apart)[0, 0]
    assert geo.boxes_overlap_bev(a, np.zeros((0, 7))).shape == (1, 0)


def test_rotate_points_z():
    pts = np.array([[1.0, 0.0, 2.0, 0.5]], np.float32)
    out = geo.rotate_points_z(pts, np.pi / 2)
    np.testing.assert_allclose(out, [[0.0, 1.0, 2.0, 0.5]], atol=1e-7)
    assert out.dtype == np.float32 and pts[0, 0] == 1.0
