"""The picture commands as a user runs them: ``pd-eval --report`` with the shipped demo teacher on
the real sample frames, and ``pd-vis distill``, including their one-line errors."""
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from pointdistiller.cli import evaluate as pd_eval
from pointdistiller.cli import vis as pd_vis
from pointdistiller.kitti_tools.prepare import prepare_kitti

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(REPO, "configs", "demo")
TEACHER_CFG = os.path.join(DEMO, "pointpillars_teacher.yaml")
TEACHER = os.path.join(DEMO, "weights", "pointpillars_teacher.fp16.pt")


@pytest.fixture(scope="module")
def prepared(kitti_sample, tmp_path_factory):
    root = tmp_path_factory.mktemp("kitti") / "kitti"
    shutil.copytree(kitti_sample, root)
    prepare_kitti(str(root), workers=1, progress=False, log=lambda *_: None)
    return root


def test_pd_eval_report(prepared, tmp_path, capsys):
    out, report, js = tmp_path / "results", tmp_path / "report", tmp_path / "ap.json"
    rc = pd_eval.main([TEACHER_CFG, TEACHER, "--data", str(prepared), "--split", "val", "--out", str(out),
                       "--json", str(js), "--report", str(report), "--set", "train.workers=0"])
    captured = capsys.readouterr()
    printed = captured.out
    assert rc == 0, captured.err
    ids = ["000001", "000002", "000008"]
    assert sorted(os.listdir(out)) == [f"{i}.txt" for i in ids]
    assert f"report: {report / 'index.html'}" in printed
    page = (report / "index.html").read_text(encoding="utf-8")
    for needle in ("AP_R40, strict overlaps", "3 frames", "Frames with the most errors",
                   "pr_curves.png"):
        assert needle in page, needle
    frames = sorted(f for f in os.listdir(report) if f.startswith("frame_"))
    assert frames and all(f[len("frame_"):-len(".png")] in ids for f in frames)
    with Image.open(report / "pr_curves.png") as im:
        assert im.size[0] > 300 and np.asarray(im.convert("L")).std() > 5    # a drawn figure
    metrics = json.loads(js.read_text())
    assert set(metrics) == {"strict", "loose"}
    # the AP in the report's table is the one in the JSON (Car, BEV, R40 moderate)
    car_bev = metrics["strict"]["Car"]["bev"]["R40"][1]
    assert f"<td>{car_bev:.2f}</td>" in page


def test_pd_eval_report_errors_name_the_argument(prepared, tmp_path, capsys):
    taken = tmp_path / "a_file"
    taken.write_text("x")
    rc = pd_eval.main([TEACHER_CFG, TEACHER, "--data", str(prepared), "--report", str(taken)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("pd-eval: error:") and "--report" in err[0]


def test_pd_vis_distill_writes_the_picture(kitti_sample, tmp_path, capsys):
    config = os.path.join(DEMO, "pointpillars_student_4x_kd.yaml")
    png = tmp_path / "nodes.png"
    rc = pd_vis.main(["distill", config, "000000", "--root", kitti_sample, "--edges", "2",
                      "--out", str(png)])
    captured = capsys.readouterr()
    printed = captured.out
    assert rc == 0, captured.err
    assert "pd-vis distill: 2596 nodes of 'pfn', K = 128, tau = 10" in printed
    assert f"pd-vis: wrote {png}" in printed
    with Image.open(png) as im:
        assert im.size == (614, 614)
    rc = pd_vis.main(["distill", config, "000000", "--root", kitti_sample, "--term", "3"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--term 3" in err[0] and "1 local term" in err[0]
    rc = pd_vis.main(["distill", os.path.join(DEMO, "pointpillars_student_4x.yaml"), "000000",
                      "--root", kitti_sample])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "no distill.local term" in err[0]
