"""Anchors, residual box coding, direction bins and per-class IoU assignment of the anchor head."""
import math

import pytest
import torch

from pointdistiller.detectors.box_coding import (AnchorAssigner, AnchorGenerator, ResidualCoder,
                                                 direction_bins, limit_period, nearest_bev_iou)
from pointdistiller.detectors.post_processing import correct_direction

PP_RANGE = (0.0, -39.68, -3.0, 69.12, 39.68, 1.0)
SECOND_RANGE = (0.0, -40.0, -3.0, 70.4, 40.0, 1.0)
SIZES = ((3.9, 1.6, 1.56), (0.8, 0.6, 1.73), (1.76, 0.6, 1.73))
Z = (-1.78, -0.6, -0.6)
ROTS = (0.0, math.pi / 2)


def random_boxes(n, generator):
    xyz = torch.rand(n, 3, generator=generator, dtype=torch.float64) * 40 - 20
    lwh = torch.rand(n, 3, generator=generator, dtype=torch.float64) * 4 + 0.2
    yaw = torch.rand(n, 1, generator=generator, dtype=torch.float64) * 4 * math.pi - 2 * math.pi
    return torch.cat([xyz, lwh, yaw], dim=1)


# ---------------------------------------------------------------- coder

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_coder_round_trip(dtype):
    g = torch.Generator().manual_seed(0)
    anchors, boxes = random_boxes(500, g).to(dtype), random_boxes(500, g).to(dtype)
    coder = ResidualCoder()
    deltas = coder.encode(anchors, boxes)
    assert deltas.shape == (500, 7) and deltas.dtype == dtype
    torch.testing.assert_close(coder.decode(anchors, deltas), boxes, atol=1e-5, rtol=1e-5)
    deltas2 = torch.randn(500, 7, generator=g, dtype=torch.float64).to(dtype)
    torch.testing.assert_close(coder.encode(anchors, coder.decode(anchors, deltas2)), deltas2,
                               atol=1e-5, rtol=1e-5)


def test_coder_values_by_hand():
    anchor = torch.tensor([[1.0, 2.0, -1.0, 3.0, 4.0, 2.0, 0.5]])
    box = torch.tensor([[6.0, -3.0, 0.0, 6.0, 2.0, 2.0, 1.0]])
    expected = torch.tensor([[1.0, -1.0, 0.5, math.log(2.0), math.log(0.5), 0.0, 0.5]])
    torch.testing.assert_close(ResidualCoder().encode(anchor, box), expected)


def test_coder_rejects_bad_shape():
    with pytest.raises(ValueError, match="anchors"):
        ResidualCoder().encode(torch.zeros(3, 6), torch.zeros(3, 7))


# ---------------------------------------------------------------- anchors

def test_pointpillars_anchor_layout():
    # 0.16 m pillars -> 432 x 496 grid; the head runs at stride 2 -> 216 (x) x 248 (y) cells.
    gen = AnchorGenerator(PP_RANGE, (248, 216), SIZES, Z, ROTS)
    anchors = gen.generate()
    assert anchors.shape == (248, 216, 6, 7) and anchors.dtype == torch.float32
    assert gen.num_anchors_per_location == 6
    torch.testing.assert_close(anchors[0, 0, 0, :2], torch.tensor([0.16, -39.52]))
    torch.testing.assert_close(anchors[-1, -1, 0, :2], torch.tensor([68.96, 39.52]))
    torch.testing.assert_close(anchors[3, 5, 0, :2], torch.tensor([0.16 + 5 * 0.32, -39.52 + 3 * 0.32]))
    # class-major, then rotation; z = bottom + h / 2
    expected = torch.tensor([[-1.0, 3.9, 1.6, 1.56, 0.0], [-1.0, 3.9, 1.6, 1.56, math.pi / 2],
                             [0.265, 0.8, 0.6, 1.73, 0.0], [0.265, 0.8, 0.6, 1.73, math.pi / 2],
                             [0.265, 1.76, 0.6, 1.73, 0.0], [0.265, 1.76, 0.6, 1.73, math.pi / 2]])
    torch.testing.assert_close(anchors[7, 11, :, 2:], expected)
    # all anchors of a cell share its centre
    assert torch.equal(anchors[..., :2], anchors[..., :1, :2].expand(-1, -1, 6, -1))
    classes = gen.anchor_classes()
    assert classes.shape == (248 * 216 * 6,)
    assert classes[:12].tolist() == [0, 0, 1, 1, 2, 2] * 2


def test_second_anchor_grid_and_center_origin():
    gen = AnchorGenerator(SECOND_RANGE, (200, 176), SIZES, Z, ROTS, z_origin="center")
    anchors = gen.generate(dtype=torch.float64)
    assert anchors.shape == (200, 176, 6, 7)
    assert torch.allclose(anchors[0, :, 0, 0], 0.2 + 0.4 * torch.arange(176, dtype=torch.float64))
    assert torch.allclose(anchors[:, 0, 0, 1], -39.8 + 0.4 * torch.arange(200, dtype=torch.float64))
    assert anchors[0, 0, :, 2].tolist() == pytest.approx([-1.78, -1.78, -0.6, -0.6, -0.6, -0.6])


@pytest.mark.parametrize("kwargs, match", [
    (dict(point_range=(0, 0, 0, 1, 1)), "point_range"),
    (dict(feature_map_size=(0, 4)), "feature_map_size"),
    (dict(z_values=(-1.0,)), "z_values"),
    (dict(z_origin="top"), "z_origin"),
])
def test_anchor_generator_rejects_bad_arguments(kwargs, match):
    args = dict(point_range=PP_RANGE, feature_map_size=(4, 4), sizes=SIZES, z_values=Z, rotations=ROTS)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        AnchorGenerator(**args)


# ---------------------------------------------------------------- direction bins

def test_direction_bins_and_correction():
    off = -math.pi / 4
    yaw = torch.tensor([0.0, math.pi / 2, math.pi, -math.pi / 2, 3.0, -3.0], dtype=torch.float64)
    # yaw - off wrapped to [0, 2 pi): pi/4, 3pi/4, 5pi/4, 7pi/4, 3.785, 3.497
    assert direction_bins(yaw, off).tolist() == [0, 0, 1, 1, 1, 1]
    g = torch.Generator().manual_seed(1)
    yaw = torch.rand(1000, generator=g, dtype=torch.float64) * 6 * math.pi - 3 * math.pi
    bins = direction_bins(yaw, off)
    assert set(bins.unique().tolist()) == {0, 1}
    # a yaw known modulo pi plus its bin gives back the heading modulo 2 pi
    shifted = yaw + math.pi * torch.randint(-3, 4, (1000,), generator=g, dtype=torch.float64)
    fixed = correct_direction(shifted, bins, off)
    torch.testing.assert_close(limit_period(fixed - yaw, 0.5, 2 * math.pi),
                               torch.zeros_like(yaw), atol=1e-9, rtol=0)


# ---------------------------------------------------------------- IoU and assignment

def box(x, y=0.0, l=2.0, w=1.0, yaw=0.0, z=0.0, h=1.5):
    return [x, y, z, l, w, h, yaw]


def test_nearest_bev_iou_by_hand():
    a = torch.tensor([box(0.0)])
    b = torch.tensor([box(0.0), box(1.0), box(0.0, yaw=math.pi / 2), box(0.0, yaw=0.7),
                      box(0.0, yaw=math.pi), box(5.0), box(0.0, l=1.0, w=2.0, yaw=-math.pi / 2)])
    # shift 1 along l: 1 / 3; 90 degrees: 1 x 1 overlap of 2 + 2 - 1; 0.7 rad snaps to 0 ...
    expected = torch.tensor([[1.0, 1 / 3, 1 / 3, 1.0, 1.0, 0.0, 1.0]])
    torch.testing.assert_close(nearest_bev_iou(a, b), expected)


def assigner(pos=0.6, neg=0.45, num_classes=1):
    return AnchorAssigner(num_classes, [pos] * num_classes, [neg] * num_classes)


def test_thresholds_respected():
    # IoU of a 2 x 1 box with itself shifted by d along x: (2 - d) / (2 + d)
    # d = 0 -> 1, 0.4 -> 0.667, 0.6 -> 0.538, 1.0 -> 0.333
    anchors = torch.tensor([box(0.0), box(0.4), box(0.6), box(1.0)])
    gt = torch.tensor([box(0.0)])
    res = assigner().assign(anchors, torch.zeros(4, dtype=torch.int64), gt, torch.zeros(1, dtype=torch.int64))
    assert res.labels.tolist() == [0, 0, -1, 1]
    assert res.pos_mask.tolist() == [True, True, False, False]
    assert res.gt_index.tolist() == [0, 0, -1, -1]
    torch.testing.assert_close(res.max_iou, torch.tensor([1.0, 1.6 / 2.4, 1.4 / 2.6, 1 / 3]))
    torch.testing.assert_close(res.box_targets[0], torch.zeros(7))
    assert torch.equal(res.box_targets[2:], torch.zeros(2, 7))


def test_gt_between_anchors_gets_best_anchor():
    gt = torch.tensor([box(0.0)])
    classes = torch.zeros(2, dtype=torch.int64)
    labels = torch.zeros(1, dtype=torch.int64)
    # IoUs 0.4286 (d = 0.8) and 0.4815 (d = 0.7): below pos 0.6, the best one is >= neg 0.45
    res = assigner().assign(torch.tensor([box(-0.8), box(0.7)]), classes, gt, labels)
    assert res.labels.tolist() == [1, 0]
    # both best anchors below neg 0.45 -> the ground truth gets none
    res = assigner().assign(torch.tensor([box(-0.8), box(0.8)]), classes, gt, labels)
    assert res.labels.tolist() == [1, 1]
    # with neg 0.4 both tied best anchors are taken (mmdet gt_max_assign_all)
    res = assigner(neg=0.4).assign(torch.tensor([box(-0.8), box(0.8)]), classes, gt, labels)
    assert res.labels.tolist() == [0, 0]


def test_low_quality_match_last_gt_wins_and_overrides_positive_of_other_gt():
    anchors = torch.tensor([box(0.0), box(3.0)])
    # gt 0 sits on anchor 0 (IoU 1); gt 1 best matches anchor 0 too (IoU 0.481) and, listed later,
    # takes it over (mmdet's low-quality loop runs over ground truths in order).
    gts = torch.tensor([box(0.0), box(0.7)])
    res = assigner().assign(anchors, torch.zeros(2, dtype=torch.int64), gts, torch.zeros(2, dtype=torch.int64))
    assert res.gt_index.tolist() == [1, -1]
    assert res.labels.tolist() == [0, 1]


def test_classes_are_assigned_separately():
    anchors = torch.tensor([box(0.0), box(0.0), box(0.0, l=0.8, w=0.6)])
    classes = torch.tensor([0, 1, 1])
    gts = torch.tensor([box(0.0)])
    res = assigner(num_classes=2).assign(anchors, classes, gts, torch.tensor([0]))
    # only the class-0 anchor can match the class-0 ground truth; background label is K = 2
    assert res.labels.tolist() == [0, 2, 2]
    res = assigner(num_classes=2).assign(anchors, classes, gts, torch.tensor([1]))
    assert res.labels.tolist() == [2, 1, 2]
    assert res.gt_index.tolist() == [-1, 0, -1]


def test_no_gt_all_negative():
    gen = AnchorGenerator((0, -4, -3, 8, 4, 1), (10, 20), SIZES, Z, ROTS)
    anchors = gen.generate().reshape(-1, 7)
    a = AnchorAssigner(3, (0.6, 0.5, 0.5), (0.45, 0.35, 0.35))
    res = a.assign(anchors, gen.anchor_classes(), torch.zeros(0, 7), torch.zeros(0, dtype=torch.int64))
    assert (res.labels == 3).all() and not res.pos_mask.any()
    assert (res.gt_index == -1).all() and not res.box_targets.any() and not res.dir_targets.any()


def test_grid_assignment_on_and_between_anchors():
    gen = AnchorGenerator((0, -4, -3, 8, 4, 1), (10, 20), SIZES, Z, ROTS)
    grid = gen.generate()
    anchors, classes = grid.reshape(-1, 7), gen.anchor_classes()
    a = AnchorAssigner(3, (0.6, 0.5, 0.5), (0.45, 0.35, 0.35))
    # Car exactly equal to the rotation-0 Car anchor of cell (iy 4, ix 7): positive, zero residual
    on = grid[4, 7, 0].clone()
    # Cyclist off the anchor grid, slightly rotated and oversize: no anchor reaches 0.5
    between = torch.tensor([3.3, 0.6, -0.5, 2.4, 0.9, 1.7, 0.2])
    gts = torch.stack([on, between])
    labels = torch.tensor([0, 2])
    res = a.assign(anchors, classes, gts, labels)
    flat_on = (4 * 20 + 7) * 6 + 0
    assert res.labels[flat_on] == 0 and res.gt_index[flat_on] == 0
    torch.testing.assert_close(res.box_targets[flat_on], torch.zeros(7))
    assert res.dir_targets[flat_on] == direction_bins(on[6:7], -math.pi / 4)[0]
    # the cyclist: its best-IoU cyclist anchor(s) and only those are positive for it
    cyc = torch.nonzero(classes == 2).squeeze(1)
    iou = nearest_bev_iou(between[None], anchors[cyc])[0]
    assert 0.35 <= iou.max() < 0.5
    assert set(cyc[iou == iou.max()].tolist()) == set(torch.nonzero(res.gt_index == 1).squeeze(1).tolist())
    assert (res.labels[res.gt_index == 1] == 2).all()
    decoded = ResidualCoder().decode(anchors[res.pos_mask], res.box_targets[res.pos_mask])
    torch.testing.assert_close(decoded, gts[res.gt_index[res.pos_mask]], atol=1e-5, rtol=1e-5)
    # labels and ignore: every non-positive anchor is background iff its IoU is below neg
    neg_thr = torch.tensor([0.45, 0.35, 0.35])[classes]
    assert torch.equal(res.labels == 3, ~res.pos_mask & (res.max_iou < neg_thr))


def test_assigner_rejects_bad_input():
    a = assigner()
    anchors, classes = torch.tensor([box(0.0)]), torch.zeros(1, dtype=torch.int64)
    with pytest.raises(ValueError, match="gt_labels"):
        a.assign(anchors, classes, torch.tensor([box(0.0)]), torch.tensor([3]))
    with pytest.raises(ValueError, match="sizes"):
        a.assign(anchors, classes, torch.tensor([box(0.0, l=0.0)]), torch.tensor([0]))
    with pytest.raises(ValueError, match="gt_boxes"):
        a.assign(anchors, classes, torch.zeros(2, 6), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="neg_iou_threshold"):
        AnchorAssigner(1, [0.3], [0.5])
    with pytest.raises(ValueError, match="iou_mode"):
        AnchorAssigner(1, [0.6], [0.45], iou_mode="3d")


def test_rotated_assignment_matches_nearest_for_axis_aligned_boxes():
    a_near = assigner()
    a_rot = AnchorAssigner(1, [0.6], [0.45], iou_mode="rotated_bev")
    anchors = torch.tensor([box(0.0), box(0.4), box(0.6), box(1.0), box(0.2, yaw=math.pi / 2)])
    classes = torch.zeros(5, dtype=torch.int64)
    gt, lab = torch.tensor([box(0.1, y=0.05)]), torch.zeros(1, dtype=torch.int64)
    r1, r2 = a_near.assign(anchors, classes, gt, lab), a_rot.assign(anchors, classes, gt, lab)
    assert torch.equal(r1.labels, r2.labels)
    torch.testing.assert_close(r1.max_iou, r2.max_iou, atol=1e-5, rtol=0)


def test_assigner_cache_follows_anchor_changes():
    a = assigner()
    anchors, classes = torch.tensor([box(0.0), box(5.0)]), torch.zeros(2, dtype=torch.int64)
    gt, lab = torch.tensor([box(0.0)]), torch.zeros(1, dtype=torch.int64)
    assert a.assign(anchors, classes, gt, lab).labels.tolist() == [0, 1]
    anchors[0, 0] = 5.0  # in-place edit: the cached per-class anchors must not be reused
    anchors[1, 0] = 0.0
    assert a.assign(anchors, classes, gt, lab).labels.tolist() == [1, 0]
