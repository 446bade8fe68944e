"""Augmentation steps: geometric consistency of points and boxes, collision-free GT sampling and
object noise, configuration checks."""
import json
import math
import os

import numpy as np
import pytest

from pointdistiller.data import augment as aug
from pointdistiller.kitti_tools.errors import KittiFormatError
from pointdistiller.kitti_tools.geometry import boxes_overlap_bev, points_in_boxes


def _scene(seed=0, n_boxes=6, n_noise=3000):
    """Boxes on a grid (no overlaps) with points inside each and background points."""
    rng = np.random.default_rng(seed)
    boxes = []
    for k in range(n_boxes):
        boxes.append([8.0 + 7.0 * (k % 3), -8.0 + 8.0 * (k // 3), -1.0,
                      rng.uniform(0.8, 4.0), rng.uniform(0.6, 1.8), rng.uniform(1.4, 1.8),
                      rng.uniform(-np.pi, np.pi)])
    boxes = np.asarray(boxes)
    pts = []
    for b in boxes:
        local = rng.uniform(-0.45, 0.45, size=(200, 3)) * b[3:6]
        c, s = np.cos(b[6]), np.sin(b[6])
        xyz = np.stack([local[:, 0] * c - local[:, 1] * s, local[:, 0] * s + local[:, 1] * c,
                        local[:, 2]], 1) + b[:3]
        pts.append(xyz)
    pts.append(rng.uniform([0, -30, -3], [60, 30, 1], size=(n_noise, 3)))
    xyz = np.concatenate(pts)
    points = np.concatenate([xyz, rng.uniform(0, 1, size=(len(xyz), 1))], 1).astype(np.float32)
    names = np.asarray(["Car", "Pedestrian", "Cyclist", "Car", "Van", "Car"][:n_boxes], dtype=object)
    return points, boxes, names


def _grown(boxes, margin=1e-4):
    out = np.array(boxes, copy=True)
    out[:, 3:6] += margin
    return out


@pytest.mark.parametrize("step", ["flip", "rotate", "scale", "all"])
def test_global_transforms_keep_points_in_their_boxes(step):
    points, boxes, names = _scene()
    before = points_in_boxes(points, boxes)
    rng = np.random.default_rng(3)
    if step == "flip":
        p2, b2 = aug.flip_x(points, boxes)
        np.testing.assert_array_equal(p2[:, 1], -points[:, 1])
        np.testing.assert_allclose(np.sin(b2[:, 6]), -np.sin(boxes[:, 6]), atol=1e-12)
    elif step == "rotate":
        p2, b2 = aug.rotate_scene(points, boxes, 0.7)
        np.testing.assert_allclose(np.hypot(p2[:, 0], p2[:, 1]), np.hypot(points[:, 0], points[:, 1]),
                                   rtol=1e-5)
    elif step == "scale":
        p2, b2 = aug.scale_scene(points, boxes, 1.04)
        np.testing.assert_allclose(b2[:, 3:6], boxes[:, 3:6] * 1.04)
    else:
        cfg = aug.AugmentConfig(gt_sampling=False, object_noise=False, flip_x_prob=1.0)
        p2, b2, n2, record = aug.augment_scene(points, boxes, names, cfg, rng)
        assert record["flip_x"] and abs(record["rotation"]) <= math.pi / 4
        assert 0.95 <= record["scale"] <= 1.05
        assert list(n2) == list(names)
    assert p2.dtype == np.float32 and p2.shape == points.shape
    np.testing.assert_array_equal(p2[:, 3], points[:, 3])
    after = points_in_boxes(p2, _grown(b2))
    assert after[before].all()
    assert (b2[:, 6] >= -np.pi).all() and (b2[:, 6] < np.pi).all()


def test_object_noise_moves_points_with_boxes_without_collisions():
    points, boxes, _ = _scene(seed=1)
    boxes[1, :2] = boxes[0, :2] + [0.0, 2.5]  # a close neighbour: some motions must be rejected
    before = points_in_boxes(points, boxes)
    rng = np.random.default_rng(0)
    p2, b2 = aug.object_noise(points, boxes, rng, (0.25, 0.25, 0.25), math.pi / 20, 100)
    moved = np.linalg.norm(b2[:, :3] - boxes[:, :3], axis=1)
    assert (moved > 0).sum() >= len(boxes) - 1 and (moved < 2.0).all()
    turn = np.abs(np.angle(np.exp(1j * (b2[:, 6] - boxes[:, 6]))))
    assert (turn <= math.pi / 20 + 1e-9).all()
    np.testing.assert_allclose(b2[:, 3:6], boxes[:, 3:6])
    overlap = boxes_overlap_bev(b2, b2)
    np.fill_diagonal(overlap, False)
    assert not overlap.any()
    after = points_in_boxes(p2, _grown(b2))
    assert after[before].all()
    background = ~before.any(axis=1)
    np.testing.assert_array_equal(p2[background], points[background])


def test_object_noise_keeps_an_object_that_cannot_move():
    boxes = np.array([[0.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0], [0.0, 2.01, 0.0, 4.0, 2.0, 1.5, 0.0],
                      [0.0, -2.01, 0.0, 4.0, 2.0, 1.5, 0.0]])
    points = np.zeros((1, 4), np.float32)
    _, b2 = aug.object_noise(points, boxes, np.random.default_rng(0), (5.0, 5.0, 0.0), 0.0, 3)
    overlap = boxes_overlap_bev(b2, b2)
    np.fill_diagonal(overlap, False)
    assert not overlap.any()


def _write_db(folder, entries_per_class):
    """A small GT database in ``folder``: per class a list of (box, num_points, difficulty)."""
    os.makedirs(os.path.join(folder, "gt_database"), exist_ok=True)
    classes = {}
    rng = np.random.default_rng(5)
    for name, items in entries_per_class.items():
        for k, (box, num, difficulty) in enumerate(items):
            rel = f"gt_database/x_{name}_{k}.bin"
            local = (rng.uniform(-0.45, 0.45, size=(num, 3)) * np.asarray(box[3:6])).astype(np.float32)
            c, s = np.cos(box[6]), np.sin(box[6])
            local[:, :2] = np.stack([local[:, 0] * c - local[:, 1] * s,
                                     local[:, 0] * s + local[:, 1] * c], 1)
            pts = np.concatenate([local, np.full((num, 1), 0.5, np.float32)], 1)
            pts.astype("<f4").tofile(os.path.join(folder, rel))
            classes.setdefault(name, []).append({
                "path": rel, "class": name, "box": list(map(float, box)), "difficulty": difficulty,
                "num_points": num, "frame_id": "x", "gt_index": k})
    path = os.path.join(folder, "db.json")
    with open(path, "w") as f:
        json.dump({"format": "pointdistiller.kitti_dbinfos", "version": 1, "classes": classes}, f)
    return path


def _random_db_boxes(rng, n, size):
    out = []
    for _ in range(n):
        out.append((np.array([rng.uniform(2, 40), rng.uniform(-20, 20), -1.0, *size,
                              rng.uniform(-3, 3)]), 20, 0))
    return out


def test_gt_sampler_adds_objects_without_collisions(tmp_path):
    rng = np.random.default_rng(0)
    db = _write_db(str(tmp_path), {
        "Car": _random_db_boxes(rng, 40, (3.9, 1.6, 1.5)) + [(np.zeros(7) + [5, 5, -1, 4, 2, 1.5, 0], 3, 0)],
        "Pedestrian": _random_db_boxes(rng, 30, (0.8, 0.6, 1.7)) + [(np.array([5, 5, -1, 1, 1, 2, 0.0]), 50, -1)],
        "Cyclist": _random_db_boxes(rng, 3, (1.8, 0.6, 1.7)),
    })
    sampler = aug.GTSampler(db, {"Car": 15, "Pedestrian": 15, "Cyclist": 15}, min_points=5,
                            skip_difficulty=(-1,))
    assert len(sampler.pools["Car"]) == 40 and len(sampler.pools["Pedestrian"]) == 30
    points, boxes, names = _scene()
    new_boxes, new_names, new_points = sampler.sample(boxes, names, np.random.default_rng(1))
    assert 0 < len(new_boxes)
    for name in ("Car", "Pedestrian", "Cyclist"):
        assert (new_names == name).sum() <= 15 - (names == name).sum()
    assert (new_names == "Cyclist").sum() <= 3
    assert not boxes_overlap_bev(new_boxes, boxes).any()
    mutual = boxes_overlap_bev(new_boxes, new_boxes)
    np.fill_diagonal(mutual, False)
    assert not mutual.any()
    assert len(new_points) == 20 * len(new_boxes)
    assert points_in_boxes(new_points, _grown(new_boxes, 1e-3)).any(axis=1).all()
    # pasted: the scene loses its points inside the new boxes and gains the sampled points
    p2, b2, n2 = aug.paste_objects(points, boxes, names, new_boxes, new_names, new_points)
    assert len(b2) == len(boxes) + len(new_boxes) and list(n2[: len(names)]) == list(names)
    inside_new = points_in_boxes(points, new_boxes).any(axis=1)
    assert len(p2) == len(points) - inside_new.sum() + len(new_points)
    # determinism
    again = sampler.sample(boxes, names, np.random.default_rng(1))
    np.testing.assert_array_equal(again[0], new_boxes)
    np.testing.assert_array_equal(again[2], new_points)


def test_gt_sampler_fills_up_to_the_count(tmp_path):
    rng = np.random.default_rng(2)
    db = _write_db(str(tmp_path), {"Car": _random_db_boxes(rng, 10, (0.5, 0.5, 1.5))})
    sampler = aug.GTSampler(db, {"Car": 4})
    boxes = np.array([[-50.0, 0, 0, 1, 1, 1, 0]] * 3)
    names = np.asarray(["Car", "Car", "Van"], dtype=object)
    new_boxes, new_names, _ = sampler.sample(boxes, names, np.random.default_rng(0))
    assert list(new_names) == ["Car", "Car"]
    full = np.asarray(["Car"] * 4, dtype=object)
    assert len(sampler.sample(boxes[:1].repeat(4, 0), full, np.random.default_rng(0))[0]) == 0


def test_gt_sampler_errors(tmp_path):
    with pytest.raises(KittiFormatError, match="nope.json: GT database info file not found"):
        aug.GTSampler(str(tmp_path / "nope.json"), {"Car": 1})
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(KittiFormatError, match="bad.json: not valid JSON"):
        aug.GTSampler(str(tmp_path / "bad.json"), {"Car": 1})
    rng = np.random.default_rng(0)
    db = _write_db(str(tmp_path), {"Car": _random_db_boxes(rng, 1, (1, 1, 1))})
    with open(os.path.join(tmp_path, "gt_database", "x_Car_0.bin"), "ab") as f:
        f.write(b"\x00\x00")
    sampler = aug.GTSampler(db, {"Car": 1})
    with pytest.raises(KittiFormatError, match="x_Car_0.bin: file size 322 bytes"):
        sampler.sample(np.zeros((0, 7)), np.zeros(0, dtype=object), rng)


def test_range_filters():
    rng = (0.0, -40.0, -3.0, 70.4, 40.0, 1.0)
    pts = np.array([[0, 0, 0, 0], [70.4, 0, 0, 0], [5, -40, -3, 0], [5, 39.99, 0.99, 0], [5, 0, 1, 0]],
                   np.float32)
    np.testing.assert_array_equal(aug.points_in_range(pts, rng), [True, False, True, True, False])
    boxes = np.array([[-0.1, 0, 0, 4, 2, 1, 0], [0.1, 0, 5, 4, 2, 1, 0], [10, 40, 0, 1, 1, 1, 0]])
    np.testing.assert_array_equal(aug.boxes_in_range(boxes, rng), [False, True, False])


def test_augment_config():
    cfg = aug.AugmentConfig()
    assert cfg.sample_counts == {"Car": 15, "Pedestrian": 15, "Cyclist": 15}
    assert cfg.db_min_points == 5 and cfg.db_skip_difficulty == (-1,)
    assert cfg.object_translation_std == (0.25, 0.25, 0.25)
    assert cfg.object_rotation == pytest.approx(math.pi / 20)
    assert cfg.global_rotation == pytest.approx(math.pi / 4) and cfg.global_scale == (0.95, 1.05)
    assert aug.AugmentConfig.from_dict({"global_scale": [0.9, 1.1]}).global_scale == (0.9, 1.1)
    with pytest.raises(ValueError, match="unknown augmentation setting.*global_scal\\b"):
        aug.AugmentConfig.from_dict({"global_scal": [0.9, 1.1]})
    with pytest.raises(ValueError, match="global_scale"):
        aug.AugmentConfig(global_scale=(1.1, 0.9))
    with pytest.raises(ValueError, match="sample_counts"):
        aug.AugmentConfig(sample_counts={"Car": -1})
    with pytest.raises(ValueError, match="flip_x_prob"):
        aug.AugmentConfig(flip_x_prob=2.0)
    with pytest.raises(ValueError, match="sample_counts: unknown class 'Bus'"):
        aug.AugmentConfig(sample_counts={"Bus": 3})
