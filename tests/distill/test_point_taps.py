"""Distillation terms on point taps (``[N, C]``, one row per ``batch.points`` row, the kind PointRCNN's
feature-propagation output declares), with two tiny point "detectors": the nodes are the batch's
points, grouped by ``batch.point_offsets``; losses against formulas written here."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pointdistiller.detectors.batch import Batch, offsets_from_counts
from pointdistiller.detectors.outputs import DetectorOutput, FeatureTap
from pointdistiller.distill.config import DistillConfig, FeatureTermConfig, LocalTermConfig
from pointdistiller.distill.dense_reference import dense_local_distillation
from pointdistiller.distill.distiller import Distiller


class PointModel(nn.Module):
    """Per-point MLP: ``fp`` = relu(linear(points)); a detection loss of zero."""

    def __init__(self, width, kind="point"):
        super().__init__()
        self.lin = nn.Linear(4, width)
        self.feature_info = [FeatureTap("fp", width, kind)]

    def forward(self, batch, head=True):
        return DetectorOutput(head=None, features={"fp": F.relu(self.lin(batch.points))})

    def loss(self, batch, out):
        return {"total": out.features["fp"].sum() * 0.0}


def point_batch(counts, seed=0):
    gen = torch.Generator().manual_seed(seed)
    points = torch.rand(sum(counts), 4, generator=gen) * 10
    empty = torch.zeros(0, dtype=torch.int32)
    return Batch(points=points, point_offsets=offsets_from_counts(counts),
                 voxels=torch.zeros(0, 1, 4), voxel_coords=torch.zeros(0, 4, dtype=torch.int32),
                 voxel_num_points=empty, voxel_offsets=offsets_from_counts([0] * len(counts)))


def _distiller(cfg, t_width=16, s_width=8, s_kind="point"):
    torch.manual_seed(0)
    teacher, student = PointModel(t_width), PointModel(s_width, s_kind)
    taps = lambda m: {t.name: t for t in m.feature_info}  # noqa: E731
    return Distiller(student, teacher, cfg, taps(teacher), taps(student)), teacher, student


def test_local_term_on_points_equals_the_dense_formula_of_one_sample():
    # one sample: the per-sample selection is the pooled one, which the dense reference computes
    cfg = DistillConfig(local=[LocalTermConfig(feature="fp", importance="channel_max", num_nodes=40,
                                               k=6, tau=1.0, loss_weight=2.0)])
    distiller, teacher, student = _distiller(cfg)
    batch = point_batch([300])
    losses, stats = distiller(batch)
    term = distiller.terms["local"][0]
    with torch.no_grad():
        t_feat = teacher(batch).features["fp"]
    s_feat = student(batch).features["fp"]
    expected = dense_local_distillation(term, t_feat, s_feat, t_feat.max(dim=1).values)
    torch.testing.assert_close(losses["kd_local0"], expected, rtol=1e-5, atol=1e-6)
    assert stats["local0_selected"] == 40 and stats["local0_k"] == 6
    losses["total"].backward()
    assert student.lin.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_local_term_on_points_keeps_neighbours_inside_each_sample():
    # two samples with the same xyz: a kNN in coordinates that ignored the point offsets would
    # find the other sample's copy of each point at distance 0
    cfg = DistillConfig(local=[LocalTermConfig(feature="fp", importance="channel_max", num_nodes=20,
                                               k=4, tau=1.0, knn_space="coords")])
    distiller, _, _ = _distiller(cfg)
    one = point_batch([50])
    batch = Batch(points=torch.cat([one.points, one.points]), point_offsets=torch.tensor([0, 50, 100]),
                  voxels=one.voxels, voxel_coords=one.voxel_coords,
                  voxel_num_points=one.voxel_num_points, voxel_offsets=torch.tensor([0, 0, 0]))
    term = distiller.terms["local"][0]
    with torch.no_grad():
        feats = distiller.teacher_model(batch).features["fp"]
    sel = term.select(feats.max(dim=1).values, batch.point_offsets, batch.points[:, :3])
    sample = (sel.idx >= 50).long()
    assert sel.idx.numel() == 20 and int(sample.sum()) == 10          # N shared by the samples
    assert torch.equal((sel.nbr >= 50).long(), sample[:, None].expand_as(sel.nbr))
    losses, _ = distiller(batch)
    assert torch.isfinite(losses["kd_local0"])


def test_fitnet_on_points_is_the_mse_of_the_adapter():
    cfg = DistillConfig(fitnet=[FeatureTermConfig(feature="fp", loss_weight=0.5)])
    distiller, teacher, student = _distiller(cfg)
    batch = point_batch([30, 0, 12])
    losses, _ = distiller(batch)
    adapter = distiller.terms["fitnet"][0].adapter
    with torch.no_grad():
        t = teacher(batch).features["fp"]
        s = student(batch).features["fp"]
        a = s @ adapter.weight.t() + adapter.bias
        expected = 0.5 * ((a - t) ** 2).sum() / t.numel()
    torch.testing.assert_close(losses["kd_fitnet0"], expected)


def test_point_tap_errors_name_the_tap():
    cfg = DistillConfig(local=[LocalTermConfig(feature="fp", importance="num_points")])
    with pytest.raises(ValueError, match="'num_points' needs a voxel tap, 'fp' is a point tap"):
        _distiller(cfg)
    cfg = DistillConfig(fitnet=[FeatureTermConfig(feature="fp")])
    with pytest.raises(ValueError, match="point tap of the teacher but a voxel tap of the student"):
        _distiller(cfg, s_kind="voxel")
    distiller, _, _ = _distiller(cfg)

    class DropPoint(nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model, self.feature_info = model, model.feature_info

        def forward(self, b):
            out = self.model(b)
            out.features["fp"] = out.features["fp"][1:]
            return out

        def loss(self, b, out):
            return self.model.loss(b, out)

    distiller.student = DropPoint(distiller.student)
    with pytest.raises(ValueError, match="point tap 'fp' has 41 rows but the batch has 42 points"):
        distiller(point_batch([30, 12]))
