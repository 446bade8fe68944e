"""Pictures of real KITTI frames, checked as a person would look at them: sizes, box colours where
the boxes project, ground truth alone when there are no detections, the same picture every time,
and the distillation picture's nodes and weights."""
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from pointdistiller.cli import vis as pd_vis
from pointdistiller.kitti_tools.geometry import lidar_box_corners
from pointdistiller.kitti_tools.visual.frame import load_frame, render_frame
from pointdistiller.kitti_tools.visual.render import (BACKGROUND, GT_COLOUR, BevView, FrameBoxes, class_colour,
                                                      render_3d, render_bev, render_camera)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def frame8(kitti_sample):
    return load_frame(kitti_sample, "000008",
                      results=os.path.join(kitti_sample, "example_detections"))


def _near(image, xy, colour, radius=1):
    """Whether a pixel of ``colour`` lies within ``radius`` of the (column, row) point ``xy``."""
    c, r = int(round(xy[0])), int(round(xy[1]))
    patch = image[max(r - radius, 0):r + radius + 1, max(c - radius, 0):c + radius + 1]
    return bool((patch == np.asarray(colour, np.uint8)).all(axis=-1).any())


def test_bev_draws_each_box_where_it_lies(frame8):
    view = BevView()
    image = render_bev(frame8.points, frame8.gt, FrameBoxes.empty(True), view)
    assert image.shape == (704, 800, 3) and image.dtype == np.uint8
    corners = view.to_pixels(lidar_box_corners(frame8.gt.boxes)[:, :4, :2])
    for quad in corners:
        for a, b in ((0, 1), (1, 2), (2, 3), (3, 0)):     # the middle of each edge is white
            assert _near(image, (quad[a] + quad[b]) / 2, GT_COLOUR)
    dets = render_bev(frame8.points, FrameBoxes.empty(), frame8.dets, view, score_text=False)
    for name, quad in zip(frame8.dets.names,
                          view.to_pixels(lidar_box_corners(frame8.dets.boxes)[:, :4, :2])):
        if 0 <= quad[:, 0].min() and quad[:, 0].max() < 800 and 0 <= quad[:, 1].min() and quad[:, 1].max() < 704:
            assert _near(dets, (quad[0] + quad[1]) / 2, class_colour(str(name)))


def test_camera_view_projects_the_boxes(frame8):
    image = render_camera(frame8.image, frame8.image_shape, frame8.calib, frame8.gt,
                          FrameBoxes.empty(True))
    assert image.shape == (*frame8.image_shape, 3)
    uv, depth = frame8.calib.lidar_to_image(lidar_box_corners(frame8.gt.boxes).reshape(-1, 3))
    h, w = frame8.image_shape
    inside = (depth > 0.1) & (uv[:, 0] >= 1) & (uv[:, 0] < w - 1) & (uv[:, 1] >= 1) & (uv[:, 1] < h - 1)
    assert inside.sum() >= 8
    assert all(_near(image, p, GT_COLOUR) for p in uv[inside])
    # the photo is still there away from the boxes
    assert (image[5:40, 5:40] == frame8.image[5:40, 5:40]).all()


def test_no_detections_renders_ground_truth_only(kitti_sample, tmp_path):
    empty = tmp_path / "results"
    empty.mkdir()
    frame = load_frame(kitti_sample, "000008", results=str(empty))
    assert len(frame.dets) == 0 and len(frame.gt) > 0
    image = render_bev(frame.points, frame.gt, frame.dets)
    colours = {class_colour(n) for n in ("Car", "Pedestrian", "Cyclist")}
    pixels = {tuple(p) for p in image.reshape(-1, 3)}
    assert GT_COLOUR in pixels and not colours & pixels


def test_renders_are_deterministic_and_fast(kitti_sample):
    frame = load_frame(kitti_sample, "000000")              # 115k points
    assert len(frame.points) > 100_000
    start = time.perf_counter()
    first = render_frame(frame)
    seconds = time.perf_counter() - start
    assert first.shape[1] == 1280 and first.shape[0] > 1500
    again = render_frame(frame)
    assert np.array_equal(first, again)
    assert seconds < 60                          # a few seconds on this 2-core machine
    three_d = render_3d(frame.points, frame.gt, frame.dets)
    assert three_d.shape == (720, 1280, 3) and three_d.std() > 5


def test_pd_vis_frame_writes_a_png(kitti_sample, tmp_path):
    from PIL import Image

    out = tmp_path / "f.png"
    assert pd_vis.main(["frame", kitti_sample, "000001", "--views", "bev", "camera",
                        "--out", str(out)]) == 0
    with Image.open(out) as img:
        assert img.size[0] == 1280 and img.mode == "RGB"
    assert pd_vis.main(["frame", kitti_sample, "999999", "--out", str(tmp_path / "x.png")]) == 2


def test_distill_picture_shows_the_selected_nodes(kitti_sample):
    config = os.path.join(REPO, "configs", "demo", "pointpillars_student_4x_kd.yaml")
    image, stats = pd_vis.distill_picture(config, "000000", root=kitti_sample, edges=2)
    # one frame of a batch of 2: half the budget of 6000 pillars, capped by the frame's 2596
    assert stats["selected"] == 2596 and stats["k"] == 128 and stats["feature"] == "pfn"
    assert 1.0 <= stats["effective_weighted"] <= 3000
    assert image.shape == (614, 614, 3)
    highest = np.array([255, 40, 40], np.uint8)   # the weight colour at 100 and above
    assert stats["max_weight"] < 100 or (image == highest).all(axis=-1).any()


def test_show_without_a_display_is_one_clear_error(kitti_sample, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    out = tmp_path / "f.png"
    assert pd_vis.main(["frame", kitti_sample, "000001", "--show", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--show needs a display" in err and "DISPLAY" in err
    assert not out.exists()                       # failed before any work


@pytest.mark.skipif(shutil.which("xvfb-run") is None, reason="xvfb-run (Debian's xvfb) not installed")
def test_show_opens_a_window_with_the_scene(kitti_sample, tmp_path):
    """The interactive window on a virtual X display (Xvfb), closed after a few seconds by the
    test: its screenshot has the render's size, the background and the detections' class colours
    (frame 000008 with the sample detections: cars)."""
    from PIL import Image

    shot = tmp_path / "window.png"
    code = ("import sys; from pointdistiller.kitti_tools.visual.frame import load_frame; "
            "from pointdistiller.kitti_tools.visual.render import show_3d; "
            f"f = load_frame({kitti_sample!r}, '000008', results={os.path.join(kitti_sample, 'example_detections')!r}); "
            f"show_3d(f.points, f.gt, f.dets, close_after=2.0, screenshot={str(shot)!r})")
    proc = subprocess.run(["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", sys.executable, "-c", code],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with Image.open(shot) as img:
        image = np.asarray(img.convert("RGB")).astype(int)
    assert image.shape == (720, 1280, 3)
    background = (np.abs(image - np.asarray(BACKGROUND)).max(axis=-1) <= 2).mean()
    assert 0.3 < background < 0.995                # mostly background, with the scene drawn on it
    car = (np.abs(image - np.asarray(class_colour("Car"))).max(axis=-1) <= 8).sum()
    white = (image.min(axis=-1) >= 250).sum()       # ground truth
    assert car > 50 and white > 50, (car, white)
