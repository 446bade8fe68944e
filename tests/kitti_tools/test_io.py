"""KITTI readers/writers on the real sample, property tests of the label parser, bad input, and the
result-file writer."""
import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pointdistiller.kitti_tools import io as kio
from pointdistiller.kitti_tools.errors import KittiFormatError
from pointdistiller.kitti_tools.geometry import camera_to_lidar_boxes
from pointdistiller.kitti_tools.results import detections_to_kitti, write_results

FRAMES = ("000000", "000001", "000002", "000008")
VELODYNE = {"000000": "velodyne", "000001": "velodyne", "000002": "velodyne",
            "000008": "velodyne_reduced"}
POINTS = {"000000": 115384, "000001": 120268, "000002": 126891, "000008": 17238}
LABEL_LINES = {"000000": 1, "000001": 7, "000002": 2, "000008": 10}


# ---------------------------------------------------------------------------------------------
# the real sample
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("frame", FRAMES)
def test_sample_frame_parses(kitti_sample, frame):
    paths = kio.frame_paths(kitti_sample, frame, velodyne=VELODYNE[frame])
    points = kio.read_velodyne(paths["velodyne"])
    assert points.shape == (POINTS[frame], 4) and points.dtype == np.float32
    objects = kio.read_label(paths["label"])
    assert len(objects) == LABEL_LINES[frame] and objects.score is None
    care = objects.name != "DontCare"
    assert (objects.hwl[care] > 0).all() and (objects.occluded[care] >= 0).all()
    assert (objects.occluded[~care] == -1).all()
    calib = kio.read_calib(paths["calib"])
    assert calib.P2.shape == (3, 4) and calib.R0_rect.shape == (3, 3)
    assert calib.Tr_velo_to_cam.shape == (3, 4) and calib.Tr_imu_to_velo.shape == (3, 4)
    assert kio.read_image_size(paths["image"]) in ((375, 1242), (370, 1224))


def test_sample_id_lists_and_detections(kitti_sample):
    assert kio.read_ids(os.path.join(kitti_sample, "ImageSets", "trainval.txt")) == list(FRAMES)
    assert len(kio.read_ids(os.path.join(kitti_sample, "ImageSets", "standard_split", "train.txt"))) == 3712
    dets = kio.read_label(os.path.join(kitti_sample, "example_detections", "000008.txt"), kind="result")
    assert len(dets) == 10 and dets.score is not None and (dets.name == "Car").all()
    with pytest.raises(KittiFormatError, match=r"000008.txt:1: expected 15 fields, found 16"):
        kio.read_label(os.path.join(kitti_sample, "example_detections", "000008.txt"), kind="label")


def test_sample_label_text_round_trips(kitti_sample):
    """The label files are written with %.2f, so formatting parsed labels gives the file back."""
    for frame in FRAMES:
        path = os.path.join(kitti_sample, "training", "label_2", f"{frame}.txt")
        with open(path) as f:
            text = f.read()
        objects = kio.parse_label_lines(text.splitlines(), path)
        reparsed = kio.parse_label_lines(kio.format_objects(objects).splitlines())
        assert kio.format_objects(reparsed) == kio.format_objects(objects)
        np.testing.assert_allclose(reparsed.location, objects.location)


def test_calib_round_trip(kitti_sample, tmp_path):
    calib = kio.read_calib(os.path.join(kitti_sample, "training", "calib", "000008.txt"))
    kio.write_calib(str(tmp_path / "c.txt"), calib)
    again = kio.read_calib(str(tmp_path / "c.txt"))
    for key in ("P0", "P1", "P2", "P3", "R0_rect", "Tr_velo_to_cam", "Tr_imu_to_velo"):
        np.testing.assert_allclose(getattr(again, key), getattr(calib, key), rtol=1e-12)


def test_velodyne_and_png_writers(tmp_path):
    pts = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    kio.write_velodyne(str(tmp_path / "a.bin"), pts)
    np.testing.assert_array_equal(kio.read_velodyne(str(tmp_path / "a.bin")), pts)
    kio.write_png_header_only(str(tmp_path / "a.png"), 7, 11)
    assert kio.read_image_size(str(tmp_path / "a.png")) == (7, 11)
    kio.write_ids(str(tmp_path / "ids.txt"), ["000001", "000003"])
    assert kio.read_ids(str(tmp_path / "ids.txt")) == ["000001", "000003"]


# ---------------------------------------------------------------------------------------------
# property tests of the label/result parser
# ---------------------------------------------------------------------------------------------
_two_dec = st.integers(-99999, 99999).map(lambda v: v / 100)
_types = st.sampled_from([t for t in kio.KITTI_TYPES])


@st.composite
def objects_strategy(draw, with_score: bool):
    n = draw(st.integers(0, 6))
    col = lambda k: np.asarray(draw(st.lists(_two_dec, min_size=n * k, max_size=n * k)),
                               np.float64).reshape(n, k)
    return kio.KittiObjects(
        name=np.asarray(draw(st.lists(_types, min_size=n, max_size=n)), dtype=object),
        truncated=np.asarray(draw(st.lists(st.integers(0, 100).map(lambda v: v / 100),
                                           min_size=n, max_size=n)), np.float64),
        occluded=np.asarray(draw(st.lists(st.integers(-1, 3), min_size=n, max_size=n)), np.int64),
        alpha=col(1)[:, 0], bbox=col(4), hwl=col(3), location=col(3), rotation_y=col(1)[:, 0],
        score=(np.asarray(draw(st.lists(st.integers(-99999, 99999).map(lambda v: v / 10000),
                                        min_size=n, max_size=n)), np.float64)
               if with_score else None))


@settings(max_examples=60, deadline=None)
@given(objects=st.booleans().flatmap(objects_strategy))
def test_format_parse_round_trip(objects):
    text = kio.format_objects(objects)
    kind = "result" if objects.score is not None else "label"
    parsed = kio.parse_label_lines(text.splitlines(), "x.txt", kind=kind)
    assert len(parsed) == len(objects)
    assert list(parsed.name) == list(objects.name)
    for key in ("truncated", "alpha", "bbox", "hwl", "location", "rotation_y"):
        np.testing.assert_allclose(getattr(parsed, key), getattr(objects, key), atol=1e-9)
    np.testing.assert_array_equal(parsed.occluded, objects.occluded)
    if objects.score is not None:
        np.testing.assert_allclose(parsed.score, objects.score, atol=1e-9)
    assert kio.format_objects(parsed) == text


_CORRUPTIONS = {
    "too few fields": (lambda f: f[:-1], "expected 15 fields, found 14"),
    "too many fields": (lambda f: f + ["1.0", "2.0"], "expected 15 fields, found 17"),
    "unknown type": (lambda f: ["Bicycle"] + f[1:], "unknown object type 'Bicycle'"),
    "not a number": (lambda f: f[:5] + ["abc"] + f[6:], "value 'abc' is not a number"),
    "nan": (lambda f: f[:8] + ["nan"] + f[9:], "NaN or inf"),
    "inf": (lambda f: f[:8] + ["-inf"] + f[9:], "NaN or inf"),
}


@settings(max_examples=60, deadline=None)
@given(objects=objects_strategy(with_score=False).filter(lambda o: len(o) > 0),
       data=st.data(), corruption=st.sampled_from(sorted(_CORRUPTIONS)),
       blank_lines=st.lists(st.integers(0, 6), max_size=3))
def test_corrupt_line_reports_its_number(objects, data, corruption, blank_lines):
    lines = kio.format_objects(objects).splitlines()
    bad = data.draw(st.integers(0, len(lines) - 1))
    change, message = _CORRUPTIONS[corruption]
    corrupt = " ".join(change(lines[bad].split()))
    lines[bad] = corrupt
    for pos in blank_lines:  # blank lines are skipped but still count in line numbers
        lines.insert(min(pos, len(lines)), "")
    bad_line = lines.index(corrupt) + 1
    with pytest.raises(KittiFormatError) as err:
        kio.parse_label_lines(lines, "lab.txt", kind="label")
    assert err.value.line == bad_line
    assert str(err.value).startswith(f"lab.txt:{bad_line}: ")
    assert message in str(err.value)


def test_mixed_field_counts_are_rejected():
    lines = ["Car 0 0 0 1 2 3 4 1 1 1 1 1 1 0", "Car 0 0 0 1 2 3 4 1 1 1 1 1 1 0 0.5"]
    with pytest.raises(KittiFormatError, match=r"<string>:2: expected 15 fields, found 16"):
        kio.parse_label_lines(lines, kind="any")


# ---------------------------------------------------------------------------------------------
# bad files
# ---------------------------------------------------------------------------------------------
def test_velodyne_errors(tmp_path):
    path = tmp_path / "bad.bin"
    path.write_bytes(np.zeros(10, np.float32).tobytes() + b"\x00\x00")
    with pytest.raises(KittiFormatError, match=r"bad.bin: file size 42 bytes is not a multiple of 16"):
        kio.read_velodyne(str(path))
    pts = np.ones((5, 4), np.float32)
    pts[3, 1] = np.nan
    path.write_bytes(pts.tobytes())
    with pytest.raises(KittiFormatError, match=r"1 of 5 points hold NaN or inf values \(first at point 3\)"):
        kio.read_velodyne(str(path))
    assert len(kio.read_velodyne(str(path), nan="drop")) == 4
    with pytest.raises(KittiFormatError, match=r"missing.bin: velodyne file not found"):
        kio.read_velodyne(str(tmp_path / "missing.bin"))


def test_calib_errors(kitti_sample, tmp_path):
    with open(os.path.join(kitti_sample, "training", "calib", "000001.txt")) as f:
        lines = f.read().splitlines()
    path = tmp_path / "calib.txt"
    path.write_text("\n".join(l for l in lines if not l.startswith("R0_rect")) + "\n")
    with pytest.raises(KittiFormatError, match=r"calib.txt: missing calibration entries: R0_rect"):
        kio.read_calib(str(path))
    broken = [l if not l.startswith("P2") else l.rsplit(" ", 1)[0] for l in lines]
    path.write_text("\n".join(broken) + "\n")
    line = next(i for i, l in enumerate(broken, 1) if l.startswith("P2"))
    with pytest.raises(KittiFormatError, match=rf"calib.txt:{line}: P2: expected 12 values, found 11"):
        kio.read_calib(str(path))
    path.write_text("\n".join("P2: nan " + l.split(" ", 2)[2] if l.startswith("P2") else l
                               for l in lines))
    with pytest.raises(KittiFormatError, match=rf"calib.txt:{line}: P2: NaN or inf"):
        kio.read_calib(str(path))
    with pytest.raises(KittiFormatError, match=r"nope.txt: calib file not found"):
        kio.read_calib(str(tmp_path / "nope.txt"))


def test_label_and_image_errors(tmp_path):
    with pytest.raises(KittiFormatError, match=r"none.txt: label file not found"):
        kio.read_label(str(tmp_path / "none.txt"))
    (tmp_path / "x.png").write_bytes(b"GIF89a" + bytes(30))
    with pytest.raises(KittiFormatError, match=r"x.png: not a PNG file"):
        kio.read_image_size(str(tmp_path / "x.png"))
    with pytest.raises(KittiFormatError, match=r"ids.txt: id list not found"):
        kio.read_ids(str(tmp_path / "ids.txt"))


# ---------------------------------------------------------------------------------------------
# result writer
# ---------------------------------------------------------------------------------------------
def _labels_as_detections(kitti_sample, frame):
    calib = kio.read_calib(os.path.join(kitti_sample, "training", "calib", f"{frame}.txt"))
    objects = kio.read_label(os.path.join(kitti_sample, "training", "label_2", f"{frame}.txt"))
    objects = objects.select(objects.name != "DontCare")
    boxes = camera_to_lidar_boxes(objects.location, objects.hwl, objects.rotation_y, calib)
    shape = kio.read_image_size(os.path.join(kitti_sample, "training", "image_2", f"{frame}.png"))
    return objects, boxes, calib, shape


def test_detections_to_kitti_reproduces_labels(kitti_sample):
    objects, boxes, calib, shape = _labels_as_detections(kitti_sample, "000008")
    scores = np.linspace(0.9, 0.3, len(boxes))
    out = detections_to_kitti(torch.from_numpy(boxes).float(), torch.from_numpy(scores),
                              torch.zeros(len(boxes), dtype=torch.int64), ("Car", "Pedestrian", "Cyclist"),
                              calib, shape)
    assert len(out) == len(objects) and (out.name == "Car").all()
    np.testing.assert_allclose(out.location, objects.location, atol=1e-4)
    np.testing.assert_allclose(out.hwl, objects.hwl, atol=1e-5)
    np.testing.assert_allclose(out.rotation_y, objects.rotation_y, atol=1e-5)
    # Label alphas differ by up to ~0.03 rad for the two cars nearer than 7 m (annotation rounding).
    np.testing.assert_allclose(out.alpha, objects.alpha, atol=0.04)
    np.testing.assert_allclose(out.score, scores, atol=1e-6)
    untruncated = objects.truncated == 0
    np.testing.assert_allclose(out.bbox[untruncated], objects.bbox[untruncated], atol=1.0)
    assert (out.bbox[:, [0, 2]] >= 0).all() and (out.bbox[:, [0, 2]] <= shape[1] - 1).all()
    assert (out.bbox[:, [1, 3]] >= 0).all() and (out.bbox[:, [1, 3]] <= shape[0] - 1).all()


def test_detections_outside_image_or_behind_are_dropped(kitti_sample):
    _, _, calib, shape = _labels_as_detections(kitti_sample, "000008")
    boxes = np.array([
        [10.0, 0.0, -0.8, 3.9, 1.6, 1.56, 0.0],    # in front: kept
        [-10.0, 0.0, -0.8, 3.9, 1.6, 1.56, 0.0],   # behind the camera
        [5.0, 30.0, -0.8, 3.9, 1.6, 1.56, 0.0],    # far left, outside the image
        [0.5, 3.0, -0.8, 3.9, 1.6, 1.56, 0.0],     # centre beside the camera, partly visible
    ])
    out = detections_to_kitti(boxes, [0.9, 0.8, 0.7, 0.6], [0, 1, 2, 0], ("Car", "Pedestrian", "Cyclist"),
                              calib, shape)
    assert list(out.score) == [0.9]
    assert list(out.name) == ["Car"]
    assert (out.truncated == -1).all() and (out.occluded == -1).all()


def test_detections_to_kitti_argument_errors(kitti_sample):
    _, boxes, calib, shape = _labels_as_detections(kitti_sample, "000008")
    names = ("Car", "Pedestrian", "Cyclist")
    with pytest.raises(ValueError, match="boxes_lidar"):
        detections_to_kitti(boxes[:, :6], np.ones(len(boxes)), np.zeros(len(boxes), int), names, calib, shape)
    with pytest.raises(ValueError, match="scores"):
        detections_to_kitti(boxes, np.ones(2), np.zeros(len(boxes), int), names, calib, shape)
    with pytest.raises(ValueError, match=r"labels: values must lie in \[0, 3\)"):
        detections_to_kitti(boxes, np.ones(len(boxes)), np.full(len(boxes), 3), names, calib, shape)
    bad = boxes.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        detections_to_kitti(bad, np.ones(len(boxes)), np.zeros(len(boxes), int), names, calib, shape)
    assert len(detections_to_kitti(np.zeros((0, 7)), [], [], names, calib, shape)) == 0


def test_write_results(kitti_sample, tmp_path):
    objects, boxes, calib, shape = _labels_as_detections(kitti_sample, "000008")
    out = detections_to_kitti(boxes, np.full(len(boxes), 0.5), np.zeros(len(boxes), int),
                              ("Car", "Pedestrian", "Cyclist"), calib, shape)
    path = write_results(str(tmp_path / "res"), "000008", out)
    assert path == str(tmp_path / "res" / "000008.txt")
    again = kio.read_label(path, kind="result")
    assert len(again) == len(objects)
    np.testing.assert_allclose(again.location, objects.location, atol=0.006)
    empty = write_results(str(tmp_path / "res"), "000009", kio.KittiObjects.empty(with_score=True))
    assert os.path.getsize(empty) == 0
    assert sorted(os.listdir(tmp_path / "res")) == ["000008.txt", "000009.txt"]  # no temp files
    with pytest.raises(ValueError, match="scores"):
        write_results(str(tmp_path / "res"), "000010", objects)
    with pytest.raises(ValueError, match="frame_id"):
        write_results(str(tmp_path / "res"), "../x", out)
