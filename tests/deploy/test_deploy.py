"""pd-export and the torch-free runtime: bundle contents, parity with PyTorch (raw maps on real KITTI
frames, boxes after NMS and KITTI AP on synthetic val scenes) with the trained demo teacher the
repository ships, the runtime without torch, and the errors."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from pointdistiller.cli import deploy as pd_deploy
from pointdistiller.cli import export as pd_export
from pointdistiller.config import load_config
from pointdistiller.data.collate import Sample, VoxelCollator
from pointdistiller.deploy.bundle import BundleError, read_bundle
from pointdistiller.deploy.export import export_bundle
from pointdistiller.deploy.runtime import Detector
from pointdistiller.detectors.build import build_detector
from pointdistiller.engine.checkpoint import load_checkpoint, load_model_weights
from pointdistiller.kitti_tools import io as kio

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TEACHER_CFG = os.path.join(REPO, "configs", "demo", "pointpillars_teacher.yaml")
TEACHER_WEIGHTS = os.path.join(REPO, "configs", "demo", "weights", "pointpillars_teacher.fp16.pt")
FRAMES = ("000000", "000001", "000002")

pytestmark = pytest.mark.usefixtures("one_thread")


def _quiet_export(*args, **kwargs):
    with pd_export._quiet_exporter():
        return export_bundle(*args, log=lambda *_: None, **kwargs)


@pytest.fixture(scope="module")
def teacher():
    cfg = load_config(TEACHER_CFG)
    model = build_detector(cfg.model)
    load_model_weights(model, load_checkpoint(TEACHER_WEIGHTS), TEACHER_WEIGHTS)
    return model.eval()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("export") / "bundle")
    _quiet_export(TEACHER_CFG, TEACHER_WEIGHTS, out)
    return out


@pytest.fixture(scope="module")
def synth_val(tmp_path_factory):
    """16 synthetic scenes in KITTI layout, prepared (8 val)."""
    from pointdistiller.kitti_tools.prepare import prepare_kitti
    from pointdistiller.kitti_tools.synth.dataset import generate_dataset

    root = str(tmp_path_factory.mktemp("synth16"))
    generate_dataset(root, 16, seed=0, workers=1)
    prepare_kitti(root, splits=("train", "val"), workers=1, progress=False, log=lambda *_: None)
    return root


def _torch_batch(model, points):
    v = model.voxelization
    collate = VoxelCollator(v.voxel_size, v.point_range, v.max_points, v.max_voxels[1])
    return collate([Sample(points, np.zeros((0, 7), np.float32), np.zeros(0, np.int64), "x")])


def test_bundle_contents(bundle, teacher):
    deploy = read_bundle(bundle)
    assert sorted(os.listdir(bundle)) == ["anchors.npy", "deploy.json", "model.onnx"]
    assert deploy["voxelization"] == {"voxel_size": [0.2, 0.2, 4.0],
                                      "point_range": [0.0, -25.6, -3.0, 51.2, 25.6, 1.0],
                                      "max_points": 32, "max_voxels": 20000}
    assert deploy["class_names"] == ["Car", "Pedestrian", "Cyclist"]
    assert deploy["input"]["fov_reduce"] is True
    assert deploy["post_processing"]["nms_iou_threshold"] == 0.01
    assert deploy["network"]["outputs"]["cls"] == [1, 18, 128, 128]
    anchors = np.load(os.path.join(bundle, "anchors.npy"), allow_pickle=False)
    assert np.array_equal(anchors, teacher.head.anchors()[0].numpy())
    assert deploy["source"]["checkpoint"] == TEACHER_WEIGHTS


def test_raw_maps_equal_pytorch_on_real_frames(bundle, teacher, kitti_sample):
    """onnxruntime fp32 against PyTorch fp32 on the real frames, with a float64 evaluation of the
    same weights as the independent reference. The issue's 1e-4 absolute is the bar unless PyTorch's
    own two CPU convolution paths (oneDNN on and off) disagree by more: the trained teacher's logits
    reach about 40, and PyTorch fp32 itself is 2-3e-4 from the float64 result on these frames, so no
    fp32 runtime can be held to 1e-4 absolute there."""
    import copy

    detector = Detector(bundle)
    teacher64 = copy.deepcopy(teacher).double()
    for frame in FRAMES:
        points = kio.read_velodyne(os.path.join(kitti_sample, "training", "velodyne", f"{frame}.bin"))
        points = detector.select_points(points)
        batch = _torch_batch(teacher, points)
        with torch.no_grad():
            out = teacher(batch).head
            torch.backends.mkldnn.enabled = False
            try:
                no_onednn = teacher(batch).head
            finally:
                torch.backends.mkldnn.enabled = True
            batch64 = copy.copy(batch)
            batch64.voxels = batch.voxels.double()
            exact = teacher64(batch64).head
        for ours, ref, alt, ref64 in zip(detector.network(points), (out.cls, out.box, out.dir),
                                         (no_onednn.cls, no_onednn.box, no_onednn.dir),
                                         (exact.cls, exact.box, exact.dir)):
            assert ours.shape == tuple(ref.shape)
            ref, alt, ref64 = ref.numpy(), alt.numpy(), ref64.numpy()
            torch_floor = np.abs(alt - ref).max()
            assert np.abs(ours - ref).max() <= max(1e-4, torch_floor)
            # and onnxruntime is about as close to the exact result as PyTorch fp32 is
            assert np.abs(ours - ref64).max() <= 3.0 * np.abs(ref - ref64).max()


def test_inference_rewrite_is_exact_and_ignores_padding(bundle, teacher, kitti_sample):
    """The exported network's rewrite (pillar net relative to the first point, 1x1 conv + max-pool,
    merged head convs) computes the model's function: in float64 it equals the model's float64
    forward to the float32 rounding of its outputs. And what a voxelizer leaves in the padding slots changes nothing in the
    onnxruntime output (the graph masks them: garbage there gives bit-identical maps)."""
    import copy

    from pointdistiller.deploy.export import PointPillarsNetwork

    points = kio.read_velodyne(os.path.join(kitti_sample, "training", "velodyne", "000001.bin"))
    detector = Detector(bundle)
    points = detector.select_points(points)
    teacher64 = copy.deepcopy(teacher).double()
    batch = _torch_batch(teacher, points)
    batch.voxels = batch.voxels.double()
    network64 = PointPillarsNetwork(teacher64).double().eval()
    voxels, coords, num_points = detector.voxelizer(points)
    with torch.no_grad():
        ref = teacher64(batch).head
        ours = network64(torch.from_numpy(voxels).double(), torch.from_numpy(num_points),
                         torch.from_numpy(coords))
    for a, b in zip(ours, (ref.cls, ref.box, ref.dir)):
        assert a.shape == b.shape
        assert (a.double() - b).abs().max().item() < 1e-6 * max(1.0, b.abs().max().item())

    feeds = {"pillars": voxels, "num_points": num_points, "coords": coords}
    clean = detector.session.run(None, feeds)
    garbage = voxels.copy()
    pad = np.arange(garbage.shape[1])[None, :] >= num_points[:, None]
    assert pad.any()
    garbage[pad] = np.random.default_rng(0).normal(0, 100, (int(pad.sum()), garbage.shape[2]))
    dirty = detector.session.run(None, {**feeds, "pillars": garbage})
    for a, b in zip(clean, dirty):
        assert np.array_equal(a, b)


def test_detections_equal_pytorch_on_synthetic_scenes(bundle, teacher, synth_val):
    detector = Detector(bundle)
    training = os.path.join(synth_val, "training")
    total = 0
    for frame in kio.read_ids(os.path.join(synth_val, "ImageSets", "val.txt")):
        points = kio.read_velodyne(os.path.join(training, "velodyne", f"{frame}.bin"))
        calib = kio.read_calib(os.path.join(training, "calib", f"{frame}.txt"))
        shape = kio.read_image_size(os.path.join(training, "image_2", f"{frame}.png"))
        ours = detector(points, calib, shape)
        with torch.no_grad():
            batch = _torch_batch(teacher, detector.select_points(points, calib, shape))
            ref = teacher.predict(batch, teacher(batch))[0]
        assert len(ours) == len(ref)
        assert np.array_equal(ours.labels, ref.labels.numpy())
        assert np.abs(ours.boxes[:, :6] - ref.boxes[:, :6].numpy()).max(initial=0) <= 1e-3
        assert np.abs(ours.boxes[:, 6] - ref.boxes[:, 6].numpy()).max(initial=0) <= 1e-4
        assert np.abs(ours.scores - ref.scores.numpy()).max(initial=0) <= 1e-4
        total += len(ours)
    assert total > 20     # a trained teacher finds the synthetic objects


def test_pd_deploy_ap_equals_pd_eval(bundle, synth_val, tmp_path, capsys):
    from pointdistiller.cli.evaluate import evaluate_checkpoint
    from pointdistiller.kitti_tools.evaluation import evaluate_dirs

    training = os.path.join(synth_val, "training")
    ids = os.path.join(synth_val, "ImageSets", "val.txt")
    # both sides scored from their result files (the text format rounds the boxes)
    _, _, ref_dir = evaluate_checkpoint(TEACHER_CFG, TEACHER_WEIGHTS, data_root=synth_val,
                                        out=str(tmp_path / "pd_eval"), device="cpu",
                                        log=lambda *_: None)
    ref = evaluate_dirs(os.path.join(training, "label_2"), ref_dir,
                        ids=kio.read_ids(ids)).to_json_dict()
    assert pd_deploy.main([bundle, "--velodyne", os.path.join(training, "velodyne"), "--calib",
                           os.path.join(training, "calib"), "--images",
                           os.path.join(training, "image_2"), "--ids", ids,
                           "--out", str(tmp_path / "deploy")]) == 0
    ours = evaluate_dirs(os.path.join(training, "label_2"), str(tmp_path / "deploy"),
                         ids=kio.read_ids(ids)).to_json_dict()
    for cls in ("Car", "Pedestrian", "Cyclist"):
        for metric in ("bbox", "bev", "3d"):
            assert np.allclose(ours["strict"][cls][metric]["R40"], ref["strict"][cls][metric]["R40"],
                               atol=0.05), (cls, metric)
    assert ref["strict"]["Car"]["bev"]["R40"][1] > 30


def test_runtime_runs_without_torch(bundle, kitti_sample, tmp_path):
    """pd-deploy in a Python where importing torch fails: LiDAR-frame results without calib,
    camera-frame results with it."""
    training = os.path.join(kitti_sample, "training")
    code = ("import sys; sys.modules['torch'] = None\n"
            "from pointdistiller.cli.deploy import main\n"
            f"rc = main({[bundle, '--velodyne', os.path.join(training, 'velodyne'), '--out', str(tmp_path / 'lidar')]!r})\n"
            f"rc += main({[bundle, '--velodyne', os.path.join(training, 'velodyne'), '--calib', os.path.join(training, 'calib'), '--out', str(tmp_path / 'camera')]!r})\n"
            "assert 'torch' not in [m.split('.')[0] for m in sys.modules if sys.modules[m] is not None]\n"
            "sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(tmp_path / "lidar")) == [f"{f}.txt" for f in FRAMES]
    assert sorted(os.listdir(tmp_path / "camera")) == [f"{f}.txt" for f in FRAMES]


def test_errors_leave_nothing_half_written(tmp_path, capsys, bundle):
    second = os.path.join(REPO, "configs", "demo", "second_teacher.yaml")
    assert pd_export.main([second, TEACHER_WEIGHTS, "--out", str(tmp_path / "b")]) == 2
    assert "cannot be exported" in capsys.readouterr().err
    point_rcnn = os.path.join(REPO, "configs", "demo", "point_rcnn_teacher.yaml")
    assert pd_export.main([point_rcnn, TEACHER_WEIGHTS, "--out", str(tmp_path / "b")]) == 2
    assert "point_rcnn cannot be exported" in capsys.readouterr().err
    student = os.path.join(REPO, "configs", "demo", "pointpillars_student_4x.yaml")
    assert pd_export.main([student, TEACHER_WEIGHTS, "--out", str(tmp_path / "b")]) == 2
    assert "does not match its config" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert pd_export.main([TEACHER_CFG, TEACHER_WEIGHTS, "--out", str(tmp_path / "file" / "b")]) == 2
    assert "--out" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["file"]      # no bundle, no staging folder
    altered = tmp_path / "altered"
    shutil.copytree(bundle, altered)
    with open(altered / "model.onnx", "r+b") as f:
        f.seek(200)
        f.write(b"\x00\x01")
    with pytest.raises(BundleError, match="was altered"):
        Detector(str(altered))
    data = json.loads((altered / "deploy.json").read_text())
    data["format"] = "something else"
    (altered / "deploy.json").write_text(json.dumps(data))
    assert pd_deploy.main([str(altered), "--velodyne", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "not a pointdistiller deployment bundle" in capsys.readouterr().err


def test_fp16_bundle_runs(tmp_path, kitti_sample):
    out = str(tmp_path / "fp16")
    deploy = _quiet_export(TEACHER_CFG, TEACHER_WEIGHTS, out, precision="fp16")
    assert deploy["network"]["precision"] == "fp16"
    assert os.path.getsize(os.path.join(out, "model.onnx")) < 0.6 * 4.84e6 * 4
    detector = Detector(out)
    points = kio.read_velodyne(os.path.join(kitti_sample, "training", "velodyne", "000000.bin"))
    cls, box, _ = detector.network(detector.select_points(points))
    assert np.isfinite(cls).all() and np.isfinite(box).all()


def test_pd_deploy_reports_the_first_frame_apart():
    """The first frame compiles the numba kernels: its time must not enter the per-frame figure
    (in the container check it turned a ~100 ms network into "873 ms per frame")."""
    text = pd_deploy._latency([2.0, 0.1, 0.3, 0.2])
    assert "median 200.0 ms per frame after the first" in text and "first frame 2000.0 ms" in text
    assert pd_deploy._latency([0.25]).startswith("250.0 ms (one frame")
    assert pd_deploy._latency([]) == "no frames"
