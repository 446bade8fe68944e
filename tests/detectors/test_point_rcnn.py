"""PointRCNN as a whole: every config's parameter count (closed form from its widths, and the count
of the architecture documents), forward / loss / backward / predict on a small scene, the declared
tap, and that a teacher and a student share their sampling and grouping without changing a value."""
import glob
import os

import numpy as np
import pytest
import torch

from pointdistiller.config import load_config
from pointdistiller.data.collate import PointCollator, Sample
from pointdistiller.detectors.build import build_detector, input_kind, point_sampling_settings
from pointdistiller.detectors.outputs import DetectorOutput
from pointdistiller.detectors.post_processing import Detections

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "configs", "*", "*.yaml"))
                 if load_config(p).model["type"] == "point_rcnn")

# architectures.md: "params (count from the widths above)" (the paper rounds to 4.1 / 0.5 / 0.3)
DOCUMENTED = {"teacher": 4.04e6, "8x": 0.52e6, "16x": 0.26e6}

pytestmark = pytest.mark.usefixtures("one_thread")


def _documented(path):
    name = os.path.basename(path)
    return DOCUMENTED["16x" if "16x" in name else "8x" if "8x" in name else "teacher"]


def _mlp_bn(widths):
    """1x1 convs without bias + BN over ``widths = (in, w1, w2, ...)``."""
    return sum(i * o + 2 * o for i, o in zip(widths, widths[1:]))


def _head_branch(cin, hidden, out):
    """Hidden Linear (no bias) + BN layers, then a Linear with bias to ``out``."""
    return _mlp_bn((cin, *hidden)) + hidden[-1] * out + out


def expected_params(m) -> int:
    """Closed-form parameter count of a PointRCNN model section (prior_art.md 1.1-1.3)."""
    total, prev = 0, m["num_point_features"] - 3
    for scales in m["sa_mlps"]:
        total += sum(_mlp_bn((prev + 3, *widths)) for widths in scales)
        prev = sum(widths[-1] for widths in scales)
    total += sum(_mlp_bn(fp) for fp in m["fp_channels"])
    c = m["fp_channels"][-1][-1]
    rpn, roi = m["rpn"], m["roi"]
    total += _head_branch(c, rpn.cls_channels, 3) + _head_branch(c, rpn.reg_channels, 8)
    up = (5, *roi.xyz_up_channels, roi.merge_channels)   # convs with bias, no BN (mmcv ConvModule
    up_in = list(up[:-1])                                # without norm); the merge sees xyz_up ++ fp
    up_in[-1] += c
    total += sum(i * o + o for i, o in zip(up_in, up[1:]))
    prev = roi.merge_channels
    for widths in roi.sa_mlps:
        total += _mlp_bn((prev + 3, *widths))
        prev = widths[-1]
    total += _head_branch(prev, roi.cls_channels, 1) + _head_branch(prev, roi.reg_channels, 7)
    return total


def test_point_rcnn_configs_exist():
    names = {os.path.basename(p) for p in CONFIGS if p.startswith("configs/point_rcnn/")}
    assert names == {"teacher.yaml", "student_8x.yaml", "student_16x.yaml", "student_8x_kd.yaml",
                     "student_16x_kd.yaml"}


@pytest.mark.parametrize("path", CONFIGS)
def test_param_count(path):
    cfg = load_config(os.path.join(REPO, path))
    params = sum(p.numel() for p in build_detector(cfg.model).parameters())
    assert params == expected_params(cfg.model)
    assert abs(params / _documented(path) - 1) <= 0.03, params


def _small_cfg(path="configs/point_rcnn/teacher.yaml", extra=()):
    """The config's architecture on 1024 points per frame in a 20 x 20 m field, with fewer centres
    per level and fewer proposals / RoIs, so a forward + backward takes well under a second."""
    return load_config(os.path.join(REPO, path), [
        "model.point_range=[0.0, -10.0, -3.0, 20.0, 10.0, 1.0]", "model.num_points=[1024, 1024]",
        "model.sa_num_points=[256, 64, 32, 16]", "model.rpn.nms_pre=512", "model.rpn.nms_post_train=32",
        "model.rpn.nms_post_test=32",
        "model.roi.rois_per_sample=16", "model.roi.num_sampled_points=64", *extra]).model


def _scene_batch(cfg, seed=0, batch_size=2):
    """Random ground points plus dense clusters inside two boxes per sample, collated as the loader
    does for point-based detectors."""
    rng = np.random.default_rng(seed)
    boxes = np.array([[8.0, 2.0, -0.9, 3.9, 1.6, 1.56, 0.3],
                      [12.0, -4.0, -0.8, 0.8, 0.6, 1.73, -1.2]], np.float32)
    samples = []
    for b in range(batch_size):
        ground = np.column_stack([rng.uniform(0, 20, 1500), rng.uniform(-10, 10, 1500),
                                  rng.normal(-1.7, 0.05, 1500)])
        parts = [ground]
        for x, y, z, l, w, h, yaw in boxes:
            local = rng.uniform(-0.45, 0.45, (300, 3)) * [l, w, h]
            c, s = np.cos(yaw), np.sin(yaw)
            parts.append(np.column_stack([x + c * local[:, 0] - s * local[:, 1],
                                          y + s * local[:, 0] + c * local[:, 1], z + local[:, 2]]))
        xyz = np.concatenate(parts).astype(np.float32)
        points = np.column_stack([xyz, rng.random(len(xyz), dtype=np.float32)]).astype(np.float32)
        samples.append(Sample(points, boxes.copy(), np.array([0, 1]), f"{b:06d}"))
    p = point_sampling_settings(cfg)
    return PointCollator(p.point_range, p.num_points[0])(samples)


def test_forward_loss_backward_predict():
    cfg = _small_cfg()
    assert input_kind(cfg) == "points"
    torch.manual_seed(0)
    model = build_detector(cfg).train()
    batch = _scene_batch(cfg)
    out = model(batch)
    assert isinstance(out, DetectorOutput)
    assert [t.name for t in model.feature_info] == list(out.features) == ["fp"]
    tap = model.feature_info[0]
    assert tap.kind == "point" and out.features["fp"].shape == (batch.points.shape[0], tap.channels)
    assert out.head.point_cls.shape == (2048, 3) and out.head.point_box.shape == (2048, 8)
    losses = model.loss(batch, out)
    assert {"rpn_cls", "rpn_box", "rcnn_cls", "rcnn_box", "rcnn_corner", "total"} <= set(losses)
    parts = sum(v for k, v in losses.items() if k != "total")
    assert torch.isfinite(losses["total"]) and torch.allclose(losses["total"], parts)
    assert losses["rpn_box"].item() > 0           # the clusters are foreground points
    losses["total"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.backbone.levels and next(model.backbone.parameters()).grad.abs().sum() > 0

    model.eval()
    with torch.no_grad():
        dets = model.predict(batch, model(batch))
    assert len(dets) == 2 and all(isinstance(d, Detections) for d in dets)
    for d in dets:
        assert d.boxes.shape[1] == 7 and bool((d.scores > 0.1).all())
        assert bool((d.scores[:-1] >= d.scores[1:]).all())


def test_head_false_stops_at_the_tap():
    cfg = _small_cfg()
    model = build_detector(cfg).eval()
    batch = _scene_batch(cfg)
    with torch.no_grad():
        full, taps = model(batch), model(batch, head=False)
    assert taps.head is None
    assert torch.equal(full.features["fp"], taps.features["fp"])


def test_teacher_and_student_share_sampling_and_grouping():
    """The geometry (D-FPS, ball query, 3-NN) depends on xyz only: a student run on the teacher's
    cached geometry gives exactly what it gives on a batch of its own."""
    t_cfg, s_cfg = _small_cfg(), _small_cfg("configs/point_rcnn/student_8x.yaml")
    torch.manual_seed(0)
    teacher, student = build_detector(t_cfg).eval(), build_detector(s_cfg).eval()
    shared = _scene_batch(t_cfg)
    with torch.no_grad():
        t_shared = teacher(shared, head=False).features["fp"]
        assert len(shared.cache) == 1                 # planned once ...
        s_shared = student(shared).features["fp"]
        assert len(shared.cache) == 1                 # ... and reused by the student
        t_own = teacher(_scene_batch(t_cfg), head=False).features["fp"]
        s_own = student(_scene_batch(s_cfg)).features["fp"]
    assert torch.equal(t_shared, t_own) and torch.equal(s_shared, s_own)
    # a model with other levels does not take the cached geometry
    other = build_detector(_small_cfg(extra=["model.sa_num_points=[128, 64, 32, 16]"])).eval()
    with torch.no_grad():
        other(shared, head=False)
    assert len(shared.cache) == 2


def test_distill_configs_tap_the_last_feature_propagation():
    for path in CONFIGS:
        cfg = load_config(os.path.join(REPO, path))
        if cfg.distill is None:
            continue
        (term,) = cfg.distill.local
        assert term.feature == "fp" and term.importance == "channel_max"
        assert term.k == 128 and term.num_nodes == 6000 * cfg.train.batch_size
        t_cfg = load_config(os.path.join(REPO, os.path.dirname(path), cfg.teacher.config))
        assert point_sampling_settings(t_cfg.model) == point_sampling_settings(cfg.model)


def test_every_distillation_term_works_on_point_rcnn():
    """PointDistiller, FitNet and attention transfer on the point tap and response KD on the
    per-point stage-1 outputs, through the one term interface; the student's gradient flows."""
    from pointdistiller.distill.config import (DistillConfig, FeatureTermConfig, LocalTermConfig,
                                               ResponseTermConfig)
    from pointdistiller.distill.distiller import Distiller

    t_cfg, s_cfg = _small_cfg(), _small_cfg("configs/point_rcnn/student_16x.yaml")
    torch.manual_seed(0)
    teacher, student = build_detector(t_cfg), build_detector(s_cfg)
    taps = lambda m: {t.name: t for t in m.feature_info}  # noqa: E731
    cfg = DistillConfig(local=[LocalTermConfig(feature="fp", importance="channel_max",
                                               num_nodes=600, k=16, tau=1.0, pool="max")],
                        fitnet=[FeatureTermConfig(feature="fp")],
                        attention=[FeatureTermConfig(feature="fp")],
                        response=ResponseTermConfig())
    distiller = Distiller(student, teacher, cfg, taps(teacher), taps(student)).train()
    batch = _scene_batch(s_cfg)
    losses, stats = distiller(batch)
    for key in ("kd_local0", "kd_fitnet0", "kd_attention0", "kd_response"):
        assert torch.isfinite(losses[key]) and losses[key].item() > 0, key
    assert stats["local0_selected"] == 600 and len(batch.cache) == 1
    losses["total"].backward()
    assert student.neck.parameters().__next__().grad.abs().sum() > 0
    with pytest.raises(ValueError, match="importance 'num_points' needs a voxel tap"):
        Distiller(student, teacher, DistillConfig(local=[LocalTermConfig(feature="fp")]),
                  taps(teacher), taps(student))


def test_forward_under_autocast():
    """Mixed precision (the trainer's ``amp`` on CUDA): GEMMs give half-precision rows, the native
    ops take float32; bfloat16 autocast on the CPU exercises the same casts."""
    cfg = _small_cfg()
    torch.manual_seed(0)
    model = build_detector(cfg).train()
    batch = _scene_batch(cfg)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = model(batch)
        losses = model.loss(batch, out)
    assert out.features["fp"].dtype == torch.bfloat16
    assert torch.isfinite(losses["total"].float())
    losses["total"].backward()


@pytest.mark.cuda
def test_cuda_matches_cpu_geometry_and_trains_with_amp():
    """On the GPU: the same sampling and grouping as the CPU (the ops' contract), and a training
    step under fp16 autocast with finite losses and gradients."""
    cfg = _small_cfg()
    torch.manual_seed(0)
    model = build_detector(cfg).train()
    batch = _scene_batch(cfg)
    cpu_geometry = model.geometry(batch)
    model = model.cuda()
    gpu_batch = batch.to("cuda")
    gpu_geometry = model.geometry(gpu_batch)
    for c, g in zip(cpu_geometry.levels, gpu_geometry.levels):
        assert torch.equal(c.picked, g.picked.cpu())
        assert all(torch.equal(a, b.cpu()) for a, b in zip(c.groups, g.groups))
    with torch.autocast(device_type="cuda", dtype=torch.float16):
        out = model(gpu_batch)
        losses = model.loss(gpu_batch, out)
    assert torch.isfinite(losses["total"].float())
    losses["total"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    with torch.no_grad():
        assert len(model.predict(gpu_batch, model(gpu_batch))) == 2
