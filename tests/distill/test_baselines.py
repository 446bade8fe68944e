"""Distillation baselines: FitNet, attention transfer, response KD."""
import pytest
import torch

from pointdistiller.detectors.heads.anchor_head import HeadOutput
from pointdistiller.distill.baselines import AttentionTransfer, FitNet, ResponseKD


def test_fitnet_adapter_shapes_and_zero_loss():
    torch.manual_seed(0)
    fit = FitNet(teacher_channels=12, student_channels=5, loss_weight=2.0)
    assert fit.adapter.weight.shape == (12, 5) and fit.adapter.bias.shape == (12,)
    student = torch.randn(40, 5)
    offsets = torch.tensor([0, 15, 40])
    teacher = fit.adapter(student).detach()                 # the student maps onto the teacher
    loss, _ = fit(teacher, student, offsets)
    assert loss.item() == pytest.approx(0.0, abs=1e-12)


def test_fitnet_loss_decreases_and_teacher_gets_no_gradient():
    torch.manual_seed(0)
    fit = FitNet(8, 4)
    student = torch.randn(60, 4, requires_grad=True)
    teacher = (student.detach() @ torch.randn(4, 8) + 0.5).requires_grad_()  # reachable target
    offsets = torch.tensor([0, 60])
    opt = torch.optim.SGD(list(fit.parameters()) + [student], lr=0.1)
    losses = []
    for _ in range(100):
        opt.zero_grad()
        loss, _ = fit(teacher, student, offsets)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
    assert teacher.grad is None


def test_attention_transfer_identical_maps_and_scale_invariance():
    torch.manual_seed(0)
    at = AttentionTransfer()
    feats = torch.randn(50, 6)
    offsets = torch.tensor([0, 20, 20, 50])                  # includes an empty sample
    loss, _ = at(feats, feats.clone(), offsets)
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    student = torch.randn(50, 3, requires_grad=True)         # widths may differ
    base, _ = at(feats, student, offsets)
    assert float(base) > 0
    for scale in (3.0, 0.01):
        scaled, _ = at(feats, student * scale, offsets)
        assert float(scaled) == pytest.approx(float(base), rel=1e-5)
        scaled, _ = at(feats * scale, student, offsets)
        assert float(scaled) == pytest.approx(float(base), rel=1e-5)
    base.backward()
    assert student.grad.abs().sum() > 0


def test_attention_is_per_sample():
    at = AttentionTransfer()
    a = torch.rand(30, 4)
    offsets = torch.tensor([0, 10, 30])
    b = a.clone()
    b[10:] *= 7.0                                             # rescales one sample only
    loss, _ = at(a, b, offsets)
    assert loss.item() == pytest.approx(0.0, abs=1e-10)


def _head(seed, shape=(2, 6, 4, 5)):
    g = torch.Generator().manual_seed(seed)
    b, anchors, h, w = shape
    return HeadOutput(cls=torch.randn(b, anchors * 3, h, w, generator=g),
                      box=torch.randn(b, anchors * 7, h, w, generator=g),
                      dir=torch.randn(b, anchors * 2, h, w, generator=g))


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_response_kd_zero_for_identical_heads(temperature):
    kd = ResponseKD(cls_weight=1.0, box_weight=2.0, temperature=temperature)
    head = _head(0)
    loss, _ = kd(*head.dense_response(), *_head(0).dense_response())
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    student = _head(1)
    student.cls.requires_grad_()
    student.box.requires_grad_()
    loss, _ = kd(*head.dense_response(), *student.dense_response())
    assert loss.item() > 0
    loss.backward()
    assert student.cls.grad.abs().sum() > 0 and student.box.grad.abs().sum() > 0


def test_response_kd_shape_mismatch():
    kd = ResponseKD()
    with pytest.raises(ValueError, match="class map"):
        kd(*_head(0).dense_response(), *_head(1, shape=(2, 6, 4, 6)).dense_response())
    t_cls, t_box = _head(0).dense_response()
    s_cls, s_box = _head(1).dense_response()
    with pytest.raises(ValueError, match="box map"):
        kd(t_cls, t_box, s_cls, s_box[:, :6])
    with pytest.raises(ValueError, match="temperature"):
        ResponseKD(temperature=0.0)
