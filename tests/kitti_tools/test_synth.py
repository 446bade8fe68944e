"""Synthetic KITTI scenes: layout, determinism, label consistency, resumability, ray casting."""
import argparse
import os

import numpy as np
import pytest

from pointdistiller.kitti_tools import io as kio
from pointdistiller.kitti_tools.geometry import camera_to_lidar_boxes, observation_angle, points_in_boxes
from pointdistiller.kitti_tools.synth import (IMAGE_SHAPE, LidarModel, Scene, generate_dataset,
                                              generate_frame, kitti_calib, occlusion_level,
                                              render_frame, split_ids)
from pointdistiller.kitti_tools.synth import raycast as rc
from pointdistiller.kitti_tools.synth.dataset import frame_rngs
from pointdistiller.kitti_tools.synth.scene import (SIZE_STATS, generate_scene, make_object,
                                                    object_parts, overlaps_any)
from pointdistiller.kitti_tools.synth.sensors import camera_rays

SEED, FRAMES = 7, 3
LABEL_TYPES = set(kio.KITTI_TYPES) - {"DontCare"}


def _files(root):
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synth"))
    stats = generate_dataset(root, FRAMES, seed=SEED, val_fraction=0.5, workers=1)
    return root, stats


@pytest.fixture(scope="module")
def frames():
    return [generate_frame(SEED, i) for i in range(FRAMES)]


def test_layout(dataset):
    root, stats = dataset
    assert stats["written"] == list(range(FRAMES)) and stats["skipped"] == 0
    assert kio.read_ids(os.path.join(root, "ImageSets", "trainval.txt")) == ["000000", "000001", "000002"]
    assert kio.read_ids(os.path.join(root, "ImageSets", "train.txt")) == ["000000", "000002"]
    assert kio.read_ids(os.path.join(root, "ImageSets", "val.txt")) == ["000001"]
    for i in range(FRAMES):
        paths = kio.frame_paths(root, f"{i:06d}")
        assert kio.read_image_size(paths["image"]) == (375, 1242)
        calib = kio.read_calib(paths["calib"])
        np.testing.assert_allclose(calib.P2, kitti_calib().P2, rtol=1e-9)
        assert calib.P2[0, 0] == pytest.approx(721.5377)
        points = kio.read_velodyne(paths["velodyne"])
        assert points.shape[1] == 4 and len(points) > 0
        labels = kio.read_label(paths["label"])
        assert len(labels) > 0


def test_files_match_generate_frame(dataset, frames):
    root, _ = dataset
    for i, frame in enumerate(frames):
        paths = kio.frame_paths(root, f"{i:06d}")
        np.testing.assert_array_equal(kio.read_velodyne(paths["velodyne"]), frame.points)
        with open(paths["label"], encoding="utf-8") as f:
            assert f.read() == kio.format_objects(frame.objects)


def test_deterministic_bytes_and_pool(dataset, tmp_path):
    root, _ = dataset
    again = str(tmp_path / "again")
    generate_dataset(again, FRAMES, seed=SEED, val_fraction=0.5, workers=2)
    assert _files(again) == _files(root)
    other = generate_frame(SEED + 1, 0)
    first = generate_frame(SEED, 0)
    assert other.points.shape != first.points.shape or not np.array_equal(other.points, first.points)
    assert not np.array_equal(generate_frame(SEED, 1).points[:1000], first.points[:1000])


def test_label_consistency(frames):
    h, w = IMAGE_SHAPE
    for frame in frames:
        objs = frame.objects
        care = objs.name != "DontCare"
        n = int(care.sum())
        assert 5 <= n <= 20
        assert care[:n].all() and not care[n:].any()  # DontCare regions come last
        assert set(objs.name[care]) <= LABEL_TYPES
        assert frame.lidar_boxes.shape == (n, 7)
        # 2D boxes inside the image, positive size
        assert (objs.bbox[:, 0] >= 0).all() and (objs.bbox[:, 2] <= w - 1).all()
        assert (objs.bbox[:, 1] >= 0).all() and (objs.bbox[:, 3] <= h - 1).all()
        assert (objs.bbox[:, 2] > objs.bbox[:, 0]).all() and (objs.bbox[:, 3] > objs.bbox[:, 1]).all()
        lab = objs.select(care)
        assert ((lab.truncated >= 0) & (lab.truncated <= 1)).all()
        np.testing.assert_array_equal(lab.occluded, occlusion_level(frame.visible_fraction))
        assert set(np.unique(lab.occluded)) <= {0, 1, 2, 3}
        np.testing.assert_allclose(lab.alpha, observation_angle(lab.location, lab.rotation_y))
        # LiDAR returns inside each labelled box (all labelled objects have some)
        inside = points_in_boxes(frame.points, frame.lidar_boxes).sum(axis=0)
        assert (inside >= frame.num_points).all() and (frame.num_points >= 1).all()
        # round trip through the label text and camera -> LiDAR conversion
        back = kio.parse_label_lines(kio.format_objects(lab).splitlines(), kind="label")
        boxes = camera_to_lidar_boxes(back.location, back.hwl, back.rotation_y, frame.calib)
        np.testing.assert_allclose(boxes[:, :6], frame.lidar_boxes[:, :6], atol=0.02)
        dyaw = np.angle(np.exp(1j * (boxes[:, 6] - frame.lidar_boxes[:, 6])))
        assert np.abs(dyaw).max() < 0.01
        dc = objs.select(~care)
        assert (dc.occluded == -1).all() and (dc.location == -1000).all()


def test_scene_objects_do_not_overlap():
    calib = kitti_calib()
    for i in range(4):
        scene = generate_scene(frame_rngs(11, i)[0], calib, IMAGE_SHAPE)
        boxes = scene.boxes()
        assert len(boxes) >= 5 and set(scene.names()) <= set(SIZE_STATS)
        for k in range(len(boxes)):
            assert not overlaps_any(boxes[k], np.delete(boxes, k, axis=0), 0.0)
        # objects stand on the terrain
        for obj in scene.objects:
            x, y, z, _, _, h, _ = obj.box
            assert z - h / 2 == pytest.approx(scene.ground_height(x, y), abs=1e-9)


def test_occlusion_level_thresholds():
    v = np.array([1.0, 0.81, 0.8, 0.51, 0.5, 0.21, 0.2, 0.0])
    np.testing.assert_array_equal(occlusion_level(v), [0, 0, 1, 1, 2, 2, 3, 3])


def test_points_and_ground(frames):
    for frame in frames:
        pts = frame.points
        assert pts.dtype == np.float32 and pts.ndim == 2 and pts.shape[1] == 4
        assert 100_000 <= len(pts) <= 135_000
        assert np.isfinite(pts).all()
        assert pts[:, 3].min() >= 0 and pts[:, 3].max() <= 1
        r = np.hypot(pts[:, 0], pts[:, 1])
        assert r.max() <= 120.5
        # the road in the ego lane 4-7 m ahead and behind; averaging both cancels the slope
        near = (r > 4) & (r < 7) & (np.abs(pts[:, 1]) < 1.5) & (pts[:, 2] < -1.3)
        ahead, behind = near & (pts[:, 0] > 0), near & (pts[:, 0] < 0)
        assert ahead.sum() > 50 and behind.sum() > 50
        level = (np.median(pts[ahead, 2]) + np.median(pts[behind, 2])) / 2
        assert level == pytest.approx(-1.73, abs=0.03)


def test_resume_and_idempotent(tmp_path):
    root = str(tmp_path / "ds")
    generate_dataset(root, 3, seed=3, workers=1)
    before = _files(root)
    p0 = kio.frame_paths(root, "000000")["label"]
    mtime0 = os.stat(p0).st_mtime_ns
    # an interrupted run: frame 1 lost its label, frame 2 its point cloud
    os.remove(kio.frame_paths(root, "000001")["label"])
    os.remove(kio.frame_paths(root, "000002")["velodyne"])
    stats = generate_dataset(root, 3, seed=3, workers=1)
    assert stats["written"] == [1, 2] and stats["skipped"] == 1
    assert _files(root) == before
    assert os.stat(p0).st_mtime_ns == mtime0
    assert generate_dataset(root, 3, seed=3, workers=1)["written"] == []
    assert _files(root) == before
    with pytest.raises(ValueError, match="seed"):
        generate_dataset(root, 3, seed=4, workers=1)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="frames"):
        generate_dataset(str(tmp_path), -1)
    with pytest.raises(ValueError, match="val_fraction"):
        generate_dataset(str(tmp_path), 2, val_fraction=1.5)
    with pytest.raises(ValueError, match="workers"):
        generate_dataset(str(tmp_path), 2, workers=0)


def test_split_ids():
    train, val = split_ids(10, 0.3)
    assert len(val) == 3 and len(train) == 7 and sorted(train + val) == [f"{i:06d}" for i in range(10)]
    assert split_ids(4, 0.0) == (["000000", "000001", "000002", "000003"], [])
    assert split_ids(4, 1.0) == ([], ["000000", "000001", "000002", "000003"])
    # extending a dataset keeps the earlier frames' assignment
    t20, v20 = split_ids(20, 0.3)
    assert set(val) <= set(v20) and set(train) <= set(t20)


def test_cli(tmp_path):
    from pointdistiller.kitti_tools import synth_cli

    parser = argparse.ArgumentParser()
    synth_cli.add_parser(parser.add_subparsers(dest="command"))
    out = str(tmp_path / "cli")
    args = parser.parse_args(["synth", "--out", out, "--frames", "2", "--seed", "5",
                              "--val-fraction", "0.5", "--workers", "1", "--no-progress"])
    assert args.func(args) == 0
    assert kio.read_ids(os.path.join(out, "ImageSets", "val.txt")) == ["000001"]
    assert os.path.isfile(kio.frame_paths(out, "000001")["label"])


# ---------------------------------------------------------------------------------------------
# hand-made scenes
# ---------------------------------------------------------------------------------------------
def _flat_scene(objects):
    ground = np.zeros(rc.GROUND_FIELDS)
    ground[rc.G_Z0] = -1.73
    ground[rc.G_ROAD_HALF] = 8.0
    ground[rc.G_CURB] = 0.15
    return Scene(ground=ground, background=np.zeros((0, rc.PRIM_FIELDS)), objects=objects)


def _car(x, y, yaw=0.0):
    rng = np.random.default_rng(0)
    l, w, h = 4.0, 1.6, 1.5
    box = [x, y, -1.73 + h / 2, l, w, h, yaw]
    return make_object("Car", box, object_parts("Car", l, w, h, rng), 0.4)


def test_occlusion_from_hand_made_scene():
    calib = kitti_calib()
    lone = render_frame(_flat_scene([_car(15.0, 0.0)]), np.random.default_rng(1), calib, IMAGE_SHAPE)
    assert list(lone.objects.name) == ["Car"]
    assert lone.objects.occluded[0] == 0 and lone.objects.truncated[0] == 0
    assert lone.visible_fraction[0] > 0.95 and lone.num_points[0] > 100
    # a car right behind another (same lane) is mostly hidden; a car in the next lane is not
    pair = render_frame(_flat_scene([_car(15.0, 0.0), _car(25.0, 0.0), _car(25.0, 5.0)]),
                        np.random.default_rng(1), calib, IMAGE_SHAPE)
    rows = dict(zip([tuple(np.round(b[:2])) for b in pair.lidar_boxes], pair.objects.occluded))
    assert rows[(15.0, 0.0)] == 0 and rows[(25.0, 5.0)] == 0
    assert (25.0, 0.0) not in rows or rows[(25.0, 0.0)] >= 2
    # behind the sensor: points, no label; far beyond the label range: DontCare
    back = render_frame(_flat_scene([_car(-12.0, 0.0), _car(95.0, 0.0)]), np.random.default_rng(1),
                        calib, IMAGE_SHAPE)
    assert list(back.objects.name) == ["DontCare"]


def test_truncation_at_image_edge():
    calib = kitti_calib()
    frame = render_frame(_flat_scene([_car(8.0, -6.3)]), np.random.default_rng(1), calib, IMAGE_SHAPE)
    assert list(frame.objects.name) == ["Car"]
    assert 0.05 < frame.objects.truncated[0] < 1.0
    assert frame.objects.bbox[0, 2] == IMAGE_SHAPE[1] - 1


def test_raycast_primitives():
    ground = np.zeros(rc.GROUND_FIELDS)
    ground[rc.G_Z0] = -1.73
    ground[rc.G_ROAD_HALF] = 100.0
    prims = np.stack([
        np.array([rc.BOX, 10, 0, 0, 1, 1, 1, 1, 0, 0.5, -1, 1, 0], float),
        np.array([rc.CYLINDER, 0, 10, 0, 0.5, 0.5, 2, 1, 0, 0.5, -1, 1, 0], float),
        np.array([rc.ELLIPSOID, 0, -10, 0, 2, 2, 2, 1, 0, 0.5, -1, 1, 0], float),
        np.array([rc.BOX, -10, 0, 0, 1, 1, 1, 1, 0, 0.5, -1, 0.0, 0], float),  # fully porous
    ])
    dirs = np.array([[1, 0, 0], [0, 1, 0], [0, -1, 0], [-1, 0, 0], [0.6, 0, -0.8]], float)
    t, hit = rc.cast_rays(np.zeros((5, 3)), dirs, prims, ground)
    np.testing.assert_allclose(t[:3], [9.0, 9.5, 8.0])
    assert list(hit) == [0, 1, 2, rc.HIT_NONE, rc.HIT_ROAD]
    assert t[4] == pytest.approx(1.73 / 0.8)
    # LiDAR kernel agrees with the generic one
    lidar = LidarModel(num_columns=16, interleave=1)
    tl, hl, _ = rc.cast_lidar(prims, ground, lidar.elevations, 16, 1, 120.0)
    d = lidar.directions()
    tg, hg = rc.cast_rays(np.zeros((d[..., 0].size, 3)), d.reshape(-1, 3), prims, ground, max_range=120.0)
    np.testing.assert_allclose(tl.ravel(), tg)
    np.testing.assert_array_equal(hl.ravel(), hg)


def test_camera_rays_project_back():
    calib = kitti_calib()
    uv = np.array([[0.0, 0.0], [609.6, 172.9], [1241.0, 374.0]])
    centre, dirs = camera_rays(calib, uv)
    back, depth = calib.lidar_to_image(centre + 20.0 * dirs)
    np.testing.assert_allclose(back, uv, atol=1e-6)
    assert (depth > 0).all()
