"""The HTML evaluation report: its content, and what a real browser (headless chromium) shows of
it: the AP tables and the precision-recall curves."""
import json
import os
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from pointdistiller.kitti_tools import cli
from pointdistiller.kitti_tools.visual.report import frame_errors, write_report
from pointdistiller.kitti_tools import io as kio


@pytest.fixture(scope="module")
def report(kitti_sample, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    log = out / "log.jsonl"
    rows = [{"step": s, "total": 3.0 / s, "cls": 1.0 / s, "box": 2.0 / s} for s in range(1, 21)]
    ap = {c: {m: {"R40": [10.0, 20.0, 30.0]} for m in ("3d", "bev")}
          for c in ("Car", "Pedestrian", "Cyclist")}
    rows += [{"step": 10, "eval": {"strict": ap}}, {"step": 20, "eval": {"strict": ap}}]
    log.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    page = write_report(str(out / "html"), os.path.join(kitti_sample, "training", "label_2"),
                        os.path.join(kitti_sample, "example_detections"), ids=["000008"],
                        train_log=str(log), title="sample report")
    return page


def test_report_content(report):
    folder = os.path.dirname(report)
    text = open(report, encoding="utf-8").read()
    assert sorted(os.listdir(folder)) == ["frame_000008.png", "index.html", "pr_curves.png", "training.png"]
    for needle in ("AP_R40, strict overlaps", "AP_R11, loose overlaps",
                   "Car <span class=small>(0.70/0.70/0.70)", "Frames with the most errors",
                   "000008: 1 missed, 1 false", "example_detections/000008.txt"):
        assert needle in text, needle
    # the Car R40 moderate BEV AP of the sample detections, as kitti-tools eval computes it
    assert "<td>4.38</td>" in text


def test_frame_errors_by_hand(kitti_sample):
    gt = kio.read_label(os.path.join(kitti_sample, "training", "label_2", "000008.txt"))
    cars = gt.select(gt.name == "Car")
    perfect = kio.KittiObjects(cars.name, cars.truncated, cars.occluded, cars.alpha, cars.bbox,
                               cars.hwl, cars.location, cars.rotation_y,
                               score=np.linspace(0.9, 0.5, len(cars)))
    missed, false, thresholds = frame_errors([gt, gt], [perfect, kio.KittiObjects.empty(True)])
    assert missed[0] == len(gt.select(np.isin(gt.name, ["Pedestrian", "Cyclist"])))
    assert false[0] == 0 and false[1] == 0
    assert missed[1] == len(gt.select(np.isin(gt.name, ["Car", "Pedestrian", "Cyclist"])))
    assert thresholds["Car"] == pytest.approx(0.5)


def test_browser_shows_the_table_and_the_curves(report, tmp_path):
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed (make installs it)"
    shot = tmp_path / "shot.png"
    proc = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                           "--hide-scrollbars", "--window-size=1300,1500", f"--screenshot={shot}",
                           f"file://{report}"], capture_output=True, text=True, timeout=120)
    assert shot.is_file(), proc.stderr
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3)
    header = (pixels == np.array([232, 232, 240])).all(axis=1).sum()       # table header cells
    red = np.abs(pixels.astype(int) - np.array([214, 39, 40])).sum(axis=1) < 40  # "hard" curves
    curve = red.sum()
    assert header > 2000, header
    assert curve > 50, curve


def test_kitti_tools_eval_report(kitti_sample, tmp_path, capsys):
    ids = tmp_path / "ids.txt"
    ids.write_text("000008\n")
    assert cli.main(["eval", "--gt", os.path.join(kitti_sample, "training", "label_2"), "--det",
                     os.path.join(kitti_sample, "example_detections"), "--ids", str(ids),
                     "--report", str(tmp_path / "r")]) == 0
    assert f"report: {tmp_path / 'r' / 'index.html'}" in capsys.readouterr().out


def test_kitti_tools_eval_report_with_missing_results(kitti_sample, tmp_path, capsys):
    """--allow-missing: a frame without a result file counts as no detections in the report too
    (its objects are all missed) and gets no result link."""
    det = tmp_path / "det"
    det.mkdir()
    shutil.copy(os.path.join(kitti_sample, "example_detections", "000008.txt"), det / "000008.txt")
    ids = tmp_path / "ids.txt"
    ids.write_text("000000\n000008\n")
    assert cli.main(["eval", "--gt", os.path.join(kitti_sample, "training", "label_2"), "--det",
                     str(det), "--ids", str(ids), "--allow-missing",
                     "--report", str(tmp_path / "r")]) == 0
    page = (tmp_path / "r" / "index.html").read_text()
    assert "2 frames" in page
    assert "000008.txt" in page and "000000.txt" not in page
    assert "000000: " in page and " 0 false" in page    # 000000's objects are missed, none false
