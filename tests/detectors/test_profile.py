"""pd-profile: the JSON contract, the FLOP counter against closed forms and brute-force rulebooks."""
import json
import os

import numpy as np
import pytest
import torch

from pointdistiller.cli import profile
from pointdistiller.config import load_config
from pointdistiller.data.collate import Sample, VoxelCollator
from pointdistiller.detectors.build import build_detector

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


pytestmark = pytest.mark.usefixtures("one_thread")


def _frame(kitti_sample):
    return os.path.join(kitti_sample, "training", "velodyne", "000000.bin")


def _model_and_batch(config, overrides, num_points=400, seed=0):
    cfg = load_config(os.path.join(REPO, config), overrides)
    torch.manual_seed(seed)
    model = build_detector(cfg.model).eval()
    v = model.voxelization
    r = np.asarray(v.point_range, np.float32)
    rng = np.random.default_rng(seed)
    xyz = r[:3] + rng.random((num_points, 3), dtype=np.float32) * (r[3:] - r[:3])
    points = np.concatenate([xyz, rng.random((num_points, 1), dtype=np.float32)], 1)
    from pointdistiller.ops.voxelization import voxelize

    batch = VoxelCollator(v.voxel_size, v.point_range, v.max_points, v.max_voxels[1], voxelize)(
        [Sample(points.astype(np.float32), np.zeros((0, 7), np.float32), np.zeros(0), "0")])
    return model, cfg.model, batch


def test_json_output_on_real_frame(kitti_sample, capsys):
    code = profile.main([os.path.join(REPO, "configs/pointpillars/student_16x.yaml"), "--json",
                         "--repeats", "1", "--frame", _frame(kitti_sample)])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert list(result) == ["params", "gflops", "latency_ms"]
    assert isinstance(result["params"], int) and result["params"] == 308664
    assert isinstance(result["gflops"], float) and isinstance(result["latency_ms"], float)
    # dense 2.41 G MACs at 248 x 216 (the paper's "2.5 GFLOPs") x 2, plus the pillar net
    assert 4.8 < result["gflops"] < 5.2 and result["latency_ms"] > 0


def test_text_output_and_set(kitti_sample, capsys):
    code = profile.main([os.path.join(REPO, "configs/pointpillars/student_16x.yaml"), "--repeats",
                         "1", "--frame", _frame(kitti_sample), "--set",
                         "model.point_range=[0, -10.24, -3, 10.24, 10.24, 1]"])
    out = capsys.readouterr().out
    assert code == 0 and "params      308,664" in out and "--set model.point_range" in out


def test_errors(tmp_path, capsys):
    config = os.path.join(REPO, "configs/pointpillars/student_16x.yaml")
    missing = os.path.join(str(tmp_path), "nope.bin")
    assert profile.main([config, "--frame", missing]) == 2
    assert f"frame {missing} not found" in capsys.readouterr().err
    truncated = tmp_path / "bad.bin"
    truncated.write_bytes(b"\0" * 10)
    assert profile.main([config, "--frame", str(truncated)]) == 2
    assert "not a multiple" in capsys.readouterr().err
    assert profile.main([config, "--set", "model.bogus=1"]) == 2
    assert "unknown key 'model.bogus'" in capsys.readouterr().err


def test_dense_flops_match_closed_form():
    model, m, batch = _model_and_batch("configs/pointpillars/teacher.yaml",
                                       ["model.point_range=[0, -10.24, -3, 10.24, 10.24, 1]"])
    flops = profile.count_flops(model, batch)
    assert flops.sparse_macs == 0
    h, w = 128 // 2, 64 // 2                     # 64 x 128 pillars, first block at stride 2
    backbone = neck = 0
    cin = m["pillar_channels"]
    for c, n, s, up in zip(m["backbone_channels"], m["backbone_layers"], m["backbone_strides"],
                           m["neck_strides"]):
        hh, ww = h * 2 // (2 * up) if up > 1 else h, w * 2 // (2 * up) if up > 1 else w
        backbone += hh * ww * 9 * (cin * c + n * c * c)
        neck += hh * ww * c * m["neck_channels"] * up * up
        cin = c
    head = h * w * 3 * m["neck_channels"] * 6 * 12
    pfn = int(batch.voxel_num_points.sum()) * 9 * m["pillar_channels"]
    assert flops.by_module["voxel_encoder.linear"] == pfn
    assert sum(v for k, v in flops.by_module.items() if k.startswith("backbone.")) == backbone
    assert sum(v for k, v in flops.by_module.items() if k.startswith("neck.")) == neck
    assert sum(v for k, v in flops.by_module.items() if k.startswith("head.")) == head
    assert flops.dense_macs == pfn + backbone + neck + head


def test_sparse_flops_count_rulebook_pairs():
    model, m, batch = _model_and_batch("configs/second/student_16x.yaml",
                                       ["model.point_range=[0, -3.2, -3, 6.4, 3.2, 1]"], 300)
    flops = profile.count_flops(model, batch)
    coords = {tuple(c) for c in batch.voxel_coords[:, 1:].tolist()}
    pairs = sum((z + dz, y + dy, x + dx) in coords for z, y, x in coords
                for dz in (-1, 0, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1))
    e0 = m["encoder_channels"][0]
    assert flops.by_module["encoder.conv_input.0"] == pairs * m["num_point_features"] * e0
    assert flops.by_module["encoder.stages.0.0.0"] == pairs * e0 * e0   # shares the rulebook
    assert 0 < flops.sparse_macs < flops.dense_macs


def test_second_on_real_frame(kitti_sample, capsys):
    assert profile.main([os.path.join(REPO, "configs/second/student_16x.yaml"), "--json",
                         "--repeats", "1", "--frame", _frame(kitti_sample)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["params"] == 341448
    # dense 4.596 G MACs (the paper's 4.6 "GFLOPs") x 2 = 9.19, plus the sparse encoder
    assert 9.3 < result["gflops"] < 11.0


def test_pointnet2_backbone_macs_closed_form():
    """The PointNet++ backbone counted as mmcv counts 1x1 convs over the grouped tensors: per level
    and scale, centres x samples x sum of in x out over the MLP (first input = width + 3)."""
    from pointdistiller.detectors.backbones_3d import PointNet2SAMSG, SALevel, plan_geometry

    levels = (SALevel(64, (0.5, 1.0), (8, 16)), SALevel(16, (1.0,), (8,)))
    mlps = (((8, 8, 16), (16, 16, 32)), ((32, 32, 64),))
    backbone = PointNet2SAMSG(1, levels, mlps).eval()
    g = torch.Generator().manual_seed(0)
    xyz = torch.rand(2 * 500, 3, generator=g) * 10
    offsets = torch.tensor([0, 500, 1000])
    geometry = plan_geometry(xyz, offsets, levels)
    count = profile.count_flops(backbone, torch.rand(1000, 1, generator=g), geometry)
    expected, prev = 0, 1
    for level, scales in zip(levels, mlps):
        centres = 2 * level.num_points
        for samples, widths in zip(level.samples, scales):
            chans = (prev + 3, *widths)
            expected += centres * samples * sum(i * o for i, o in zip(chans, chans[1:]))
        prev = sum(w[-1] for w in scales)
    assert count.dense_macs == expected and count.sparse_macs == 0
