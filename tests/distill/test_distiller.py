"""The Distiller with real detectors: the demo PointPillars teacher and 4x student on a small random
batch, and SECOND BEV terms on a small field."""
import os

import pytest
import torch
from torch import nn

from pointdistiller.config import load_config
from pointdistiller.detectors.build import build_detector
from pointdistiller.detectors.outputs import FeatureTap
from pointdistiller.distill.config import DistillConfig, FeatureTermConfig, LocalTermConfig
from pointdistiller.distill.distiller import Distiller
from pointdistiller.distill.local import LocalDistillation

from distill_batches import make_batch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _model_cfg(path, overrides=()):
    return load_config(os.path.join(REPO, path), list(overrides)).model


@pytest.fixture(scope="module")
def pillars():
    """(teacher, student, batch, teacher config, student config) of the demo PointPillars pair."""
    t_cfg = _model_cfg("configs/demo/pointpillars_teacher.yaml")
    s_cfg = _model_cfg("configs/demo/pointpillars_student_4x.yaml")
    torch.manual_seed(0)
    teacher, student = build_detector(t_cfg), build_detector(s_cfg)
    batch = make_batch(student, num_points=4000)
    return teacher, student, batch, t_cfg, s_cfg


def _taps(model):
    return {t.name: t for t in model.feature_info}


def _pp_distiller(pillars, teacher_mode="eval", **term):
    teacher, student, _, t_cfg, s_cfg = pillars
    cfg = DistillConfig(teacher_mode=teacher_mode,
                        local=[LocalTermConfig(feature="pfn", num_nodes=400, k=16, **term)],
                        fitnet=[FeatureTermConfig(feature="backbone.2", loss_weight=0.5)])
    return Distiller(student, teacher, cfg, _taps(teacher), _taps(student))


@pytest.mark.parametrize("teacher_mode", ["eval", "train"])
def test_pointpillars_forward_backward(pillars, teacher_mode):
    teacher, student, batch, _, _ = pillars
    distiller = _pp_distiller(pillars, teacher_mode).train()
    assert teacher.training == (teacher_mode == "train")
    assert student.training
    student.zero_grad(set_to_none=True)
    losses, stats = distiller(batch)
    assert {"det", "kd", "kd_local0", "kd_fitnet0", "total", "cls", "box", "dir"} <= set(losses)
    assert torch.allclose(losses["total"], losses["det"] + losses["kd"])
    assert torch.allclose(losses["kd"], losses["kd_local0"] + losses["kd_fitnet0"])
    assert losses["kd_local0"].item() > 0
    assert stats["local0_selected"] == 400 and stats["local0_k"] == 16
    assert 1 <= stats["local0_effective_weighted"] <= 400
    losses["total"].backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(not p.requires_grad for p in teacher.parameters())
    assert student.voxel_encoder.linear.weight.grad.abs().sum() > 0
    for name, p in distiller.kd_modules().named_parameters():
        assert p.grad is not None, name
    distiller.eval()
    assert not teacher.training and not student.training


def test_pointpillars_module_bookkeeping(pillars):
    teacher, student, _, _, _ = pillars
    distiller = _pp_distiller(pillars)
    kd = distiller.kd_modules()
    layers = [m for m in kd.modules() if isinstance(m, LocalDistillation)]
    assert len(layers) == 1 and layers[0].teacher_graph.conv.in_channels == 2 * 64
    assert layers[0].student_graph.conv.in_channels == 2 * 32
    teacher_params = {id(p) for p in teacher.parameters()}
    assert not teacher_params & {id(p) for p in distiller.parameters()}
    assert not any(k.startswith("teacher") for k in distiller.state_dict())
    kd_params = {id(p) for p in kd.parameters()}
    assert kd_params <= {id(p) for p in distiller.parameters()}
    distiller.to(torch.float64)                      # .to() reaches the teacher too
    assert next(teacher.parameters()).dtype == torch.float64
    distiller.to(torch.float32)


def test_pointpillars_unknown_tap_and_mismatched_nodes(pillars):
    teacher, student, batch, t_cfg, s_cfg = pillars
    cfg = DistillConfig(local=[LocalTermConfig(feature="pillars")])
    with pytest.raises(ValueError, match="no feature tap 'pillars'"):
        Distiller(student, teacher, cfg, _taps(teacher), _taps(student))
    # declared, but the model produces no such tap
    declared = {"pillars": FeatureTap("pillars", 64, "voxel")}
    distiller = Distiller(student, teacher, cfg, declared,
                          {"pillars": FeatureTap("pillars", 32, "voxel")})
    with pytest.raises(ValueError, match="output has no feature tap 'pillars'"):
        distiller(batch)

    class DropLastPillar(nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, b, head=True):
            out = self.model(b, head=head)
            out.features["pfn"] = out.features["pfn"][:-1]
            return out

    distiller = Distiller(student, DropLastPillar(teacher), DistillConfig(
        local=[LocalTermConfig(feature="pfn", num_nodes=100, k=8)]), _taps(teacher), _taps(student))
    with pytest.raises(ValueError, match="tap 'pfn'"):
        distiller(batch)
    with pytest.raises(ValueError, match="teacher_mode"):
        Distiller(student, teacher, DistillConfig(teacher_mode="frozen"), {}, {})


def test_second_bev_terms_channel_max():
    small = "model.point_range=[0.0, -3.2, -3.0, 6.4, 3.2, 1.0]"      # 128 x 128 x 40 voxels
    cfg = _model_cfg("configs/second/student_16x.yaml", [small])
    torch.manual_seed(0)
    teacher, student = build_detector(cfg), build_detector(cfg)
    batch = make_batch(student, num_points=1500)
    terms = [LocalTermConfig(feature=f"backbone.{i}", importance="channel_max", num_nodes=32, k=8,
                             tau=1e-4) for i in range(2)]
    taps = _taps(teacher)
    distiller = Distiller(student, teacher, DistillConfig(local=terms), taps, taps).train()
    losses, stats = distiller(batch)
    assert losses["kd_local0"].item() >= 0 and losses["kd_local1"].item() >= 0
    assert stats["local0_selected"] == 32 and stats["local1_k"] == 8
    losses["total"].backward()
    assert all(p.grad is None for p in teacher.parameters())
    graph = distiller.terms["local"][1].student_graph.conv.weight
    assert graph.grad is not None and graph.grad.abs().sum() > 0
    bad = DistillConfig(local=[LocalTermConfig(feature="backbone.0", importance="num_points")])
    with pytest.raises(ValueError, match="needs a voxel tap"):
        Distiller(student, teacher, bad, taps, taps)


def test_teacher_runs_its_head_only_for_response_kd(pillars):
    """Feature terms read the teacher's taps only, so the teacher skips its head (PointRCNN's head
    is both of its stages); response KD reads the head, so it runs."""
    from pointdistiller.distill.config import ResponseTermConfig

    teacher, student, batch, _, _ = pillars
    calls = []

    class Spy(nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model
            self.feature_info = model.feature_info

        def forward(self, b, head=True):
            out = self.model(b, head=head)
            calls.append(out.head is not None)
            return out

    spy = Spy(teacher)
    features_only = Distiller(student, spy, DistillConfig(
        local=[LocalTermConfig(feature="pfn", num_nodes=100, k=8)],
        fitnet=[FeatureTermConfig(feature="neck")]), _taps(teacher), _taps(student))
    losses, _ = features_only(batch)
    with_response = Distiller(student, spy, DistillConfig(response=ResponseTermConfig()),
                              _taps(teacher), _taps(student))
    losses_r, _ = with_response(batch)
    assert calls == [False, True]
    assert losses["kd_local0"].item() > 0 and losses_r["kd_response"].item() > 0


def test_warmup_scales_the_distillation_gradient(pillars):
    """warmup_iters = 4: at step 0 the graph layers get a quarter of the full-weight gradient (they
    see no detection loss, so their gradient is linear in the factor), from step 3 on all of it;
    the logged terms stay at full weight. Bad values are refused."""
    teacher, student, batch, _, _ = pillars

    def graph_grads(distiller, step=None):
        if step is not None:
            distiller.set_step(step)
        distiller.train()
        student.zero_grad(set_to_none=True)
        distiller.kd_modules().zero_grad(set_to_none=True)
        torch.manual_seed(0)
        losses, stats = distiller(batch)
        losses["total"].backward()
        return losses, stats, [p.grad.clone() for p in distiller.kd_modules().parameters()]

    cfg = DistillConfig(local=[LocalTermConfig(feature="pfn", num_nodes=400, k=16)], warmup_iters=4)
    warm = Distiller(student, teacher, cfg, _taps(teacher), _taps(student))
    assert [warm.set_step(i) for i in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    losses, stats, grads = graph_grads(warm, 0)
    full_losses, full_stats, ref_grads = graph_grads(warm, 3)
    assert stats["warmup_scale"] == 0.25 and full_stats["warmup_scale"] == 1.0
    assert torch.allclose(losses["kd"], 0.25 * losses["kd_local0"])
    assert torch.allclose(losses["kd_local0"], full_losses["kd_local0"])     # logged at full weight
    assert torch.allclose(full_losses["kd"], full_losses["kd_local0"])
    for g, ref in zip(grads, ref_grads):
        assert torch.allclose(g, 0.25 * ref, rtol=1e-4, atol=1e-8)
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="warmup_iters"):
            Distiller(student, teacher, DistillConfig(local=[LocalTermConfig(feature="pfn")],
                                                      warmup_iters=bad), _taps(teacher), _taps(student))
