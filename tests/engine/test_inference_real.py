"""Inference on the real KITTI sample frames writes valid KITTI result files that the evaluator reads."""
import os
import shutil

import numpy as np
import torch

from pointdistiller.config import load_config
from pointdistiller.detectors.build import build_detector
from pointdistiller.engine.data import build_loader
from pointdistiller.engine.evaluation import evaluate_detector
from pointdistiller.kitti_tools.io import read_image_size, read_label
from pointdistiller.kitti_tools.prepare import prepare_kitti

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_detector_on_real_frames_writes_kitti_results(tmp_path, kitti_sample):
    root = tmp_path / "kitti"
    shutil.copytree(kitti_sample, root)
    prepare_kitti(str(root), splits=("val",), workers=1, progress=False, log=lambda *_: None)
    # an untrained 16x student; a zero score threshold makes it emit boxes to convert
    cfg = load_config(os.path.join(REPO, "configs", "pointpillars", "student_16x.yaml"),
                      ["model.head.score_threshold=0.0", f"data.root={root}", "train.workers=0",
                       "train.batch_size=2"])
    torch.manual_seed(0)
    model = build_detector(cfg.model)
    loader, dataset = build_loader(str(root), cfg.data, cfg.model, cfg.train, "val", training=False)
    out = tmp_path / "results"
    metrics, summary = evaluate_detector(model, loader, dataset, str(out), torch.device("cpu"))
    ids = sorted(f["frame_id"] for f in dataset.frames)
    assert ids == ["000001", "000002", "000008"]
    assert sorted(os.listdir(out)) == [f"{i}.txt" for i in ids]
    total = 0
    for i in ids:
        dets = read_label(str(out / f"{i}.txt"), kind="result")   # 16 fields per line, known types
        h, w = read_image_size(os.path.join(kitti_sample, "training", "image_2", f"{i}.png"))
        total += len(dets)
        assert set(dets.name) <= {"Car", "Pedestrian", "Cyclist"}
        assert np.all(dets.bbox[:, [0, 1]] >= 0) and np.all(dets.bbox[:, 2] <= w - 1)
        assert np.all(dets.bbox[:, 3] <= h - 1) and np.all(dets.hwl > 0)
        assert np.all(dets.location[:, 2] > 0)                   # in front of the camera
    assert total > 0
    assert set(metrics) == {"strict", "loose"} and "Car AP_R40@0.70, 0.70, 0.70:" in summary
