"""Fixtures of the trainer tests: tiny PointPillars and PointRCNN configs and a 6-scene synthetic
dataset."""
import pytest

from trainer_runs import KD, MODEL, PAPER_PP, RCNN_KD, rcnn_model


@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    d = tmp_path_factory.mktemp("configs")
    (d / "teacher.yaml").write_text(MODEL.format(base=PAPER_PP, p=16, b=32))
    (d / "student.yaml").write_text(MODEL.format(base=PAPER_PP, p=8, b=16))
    (d / "student_kd.yaml").write_text(MODEL.format(base=PAPER_PP, p=8, b=16) + KD.format())
    (d / "rcnn_teacher.yaml").write_text(rcnn_model(16, 32))
    (d / "rcnn_student_kd.yaml").write_text(rcnn_model(8, 16) + RCNN_KD.format())
    return d


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    from pointdistiller.kitti_tools.prepare import prepare_kitti
    from pointdistiller.kitti_tools.synth.dataset import generate_dataset

    root = str(tmp_path_factory.mktemp("synth"))
    generate_dataset(root, 6, seed=3, workers=1)
    prepare_kitti(root, splits=("train", "val"), workers=1, progress=False, log=lambda *_: None)
    return root
