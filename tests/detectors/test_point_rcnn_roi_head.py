"""PointRCNN stage 2: RoI sampling, the RoI-frame coding, the losses and the whole RoI head, each
against hand-worked numbers or an independent numpy/greedy reference."""
import math

import numpy as np
import pytest
import torch

from pointdistiller.detectors.batch import Batch, offsets_from_counts
from pointdistiller.detectors.box_coding.roi_sampler import (RoISampler, canonical_points,
                                                             decode_roi_boxes, encode_roi_targets,
                                                             max_iou_assign, soft_iou_labels)
from pointdistiller.detectors.heads.point_rcnn_roi_head import (PointRCNNRoIHead, RoIHeadConfig,
                                                                corner_loss)
from pointdistiller.detectors.heads.point_rpn_head import Proposals
from pointdistiller.kitti_tools.geometry import lidar_box_corners
from pointdistiller.ops import boxes_iou_bev

pytestmark = pytest.mark.usefixtures("one_thread")

GT = (0.0, 0.0, 0.0, 4.0, 2.0, 2.0, 0.0)


def _shift_for_iou(iou: float) -> float:
    """Two 4 x 2 x 2 boxes shifted by ``d`` along their length overlap in ``(4 - d) * 2 * 2`` of a
    union ``32 - (4 - d) * 4``: IoU ``(4 - d) / (4 + d)``, so ``d = 4 (1 - iou) / (1 + iou)``."""
    return 4.0 * (1.0 - iou) / (1.0 + iou)


def _proposals(ious):
    """Axis-aligned copies of ``GT`` shifted along x to reach each IoU (0: 10 m away)."""
    rows = [[_shift_for_iou(v) if v > 0 else 10.0] + list(GT[1:]) for v in ious]
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 7)


def _pools(ious, pos=0.55, easy=0.1):
    ious = torch.as_tensor(ious)
    return (int((ious >= pos).sum()), int(((ious >= easy) & (ious < pos)).sum()),
            int((ious < easy).sum()))


def _sample(ious, rois_per_sample=10, gt=True):
    boxes = _proposals(ious)
    gt_boxes = torch.tensor([GT]) if gt else torch.zeros(0, 7)
    sampler = RoISampler(rois_per_sample, 0.5, 0.55, 0.8, 0.1)
    return sampler.sample(boxes, torch.zeros(len(ious), dtype=torch.int64), gt_boxes,
                          torch.zeros(gt_boxes.shape[0], dtype=torch.int64))


def test_assignment_iou_matches_the_hand_formula():
    wanted = [0.9, 0.6, 0.3, 0.05, 0.0]
    iou, gt_index = max_iou_assign(_proposals(wanted), None, torch.tensor([GT]), None)
    np.testing.assert_allclose(iou.numpy(), wanted, atol=1e-5)
    assert gt_index.tolist() == [0, 0, 0, 0, -1]
    # a proposal of another class does not match: IoU 0, no box
    iou, gt_index = max_iou_assign(_proposals([0.9, 0.9]), torch.tensor([0, 1]),
                                   torch.tensor([GT]), torch.tensor([1]))
    assert iou[0] == 0 and gt_index.tolist() == [-1, 0] and iou[1] > 0.89


@pytest.mark.parametrize("ious,expected", [
    # 8 positives, 10 hard, 10 easy: 5 pos, 5 neg = int(5 * 0.8) = 4 hard + 1 easy
    ([0.8] * 8 + [0.3] * 10 + [0.05] * 10, (5, 4, 1)),
    # hard pool short (1): easy fills the negatives
    ([0.8] * 8 + [0.3] * 1 + [0.05] * 10, (5, 1, 4)),
    # easy pool empty: hard fills
    ([0.8] * 8 + [0.3] * 10, (5, 5, 0)),
    # negatives short (2 of 5): positives fill beyond the positive fraction
    ([0.8] * 8 + [0.3] + [0.05], (8, 1, 1)),
    # positives short: negatives fill the rest, in the 80/20 split
    ([0.8] * 1 + [0.3] * 20 + [0.05] * 20, (1, 7, 2)),
])
def test_sampler_pools(ious, expected):
    torch.manual_seed(0)
    s = _sample(ious)
    assert s.indices.numel() == 10
    assert len(set(s.indices.tolist())) == 10, "enough proposals: no repeats"
    assert _pools(s.iou) == expected
    n_pos = expected[0]
    assert s.positive.tolist() == [True] * n_pos + [False] * (10 - n_pos)
    np.testing.assert_allclose(s.iou.numpy(), np.asarray(ious, np.float32)[s.indices.numpy()],
                               atol=1e-5)
    assert (s.gt_index[s.positive] == 0).all() and (s.gt_index[~s.positive] == -1).all()


def test_sampler_with_fewer_proposals_repeats_them():
    torch.manual_seed(0)
    ious = [0.8, 0.7, 0.3, 0.0]
    s = _sample(ious, rois_per_sample=10)
    assert s.indices.numel() == 10 and set(s.indices.tolist()) == {0, 1, 2, 3}
    assert int(s.positive.sum()) == 2, "repeats are negatives, the positives stay at 2"
    assert set(s.indices[:2].tolist()) == {0, 1}
    # only positives: they are repeated
    s = _sample([0.8, 0.9], rois_per_sample=5)
    assert s.indices.numel() == 5 and bool(s.positive.all())


def test_sampler_without_ground_truth_and_without_proposals():
    torch.manual_seed(0)
    s = _sample([0.8, 0.3, 0.05], rois_per_sample=6, gt=False)
    assert s.indices.numel() == 6 and not s.positive.any()
    assert (s.iou == 0).all() and (s.gt_index == -1).all()
    s = _sample([], rois_per_sample=6)
    assert s.indices.numel() == 0 and s.positive.numel() == 0


COS30, SIN30 = math.cos(math.pi / 6), 0.5
ROI = (10.0, 5.0, -1.0, 4.0, 2.0, 1.5, math.pi / 6)


def test_canonical_transform_of_a_point():
    # local (1, 0.5, 0.2) in the RoI: world x = 10 + cos30 - 0.5 sin30, y = 5 + sin30 + 0.5 cos30
    world = torch.tensor([[[10.0 + COS30 - 0.25, 5.0 + 0.5 + 0.5 * COS30, -0.8]]])
    local = canonical_points(world, torch.tensor([ROI]))
    np.testing.assert_allclose(local[0, 0].numpy(), [1.0, 0.5, 0.2], atol=1e-5)


def test_pooling_puts_points_in_the_roi_frame():
    head = PointRCNNRoIHead(2, _small_config())
    world = torch.tensor([[10.0 + COS30 - 0.25, 5.0 + 0.5 + 0.5 * COS30, -0.8],
                          [30.0, 0.0, 0.0]])
    features = torch.tensor([[7.0, 8.0], [1.0, 1.0]])
    rois = torch.tensor([ROI, (50.0, 0, 0, 1, 1, 1, 0)])
    pooled = head._pool(world, features, torch.tensor([0.9, 0.1]), torch.tensor([0, 2]), rois,
                        torch.tensor([0, 2]))
    depth = math.sqrt(float((world[0] ** 2).sum())) / 70.0 - 0.5
    expected = [1.0, 0.5, 0.2, 0.9, depth, 7.0, 8.0]
    np.testing.assert_allclose(pooled[0].numpy(), np.tile(expected, (pooled.shape[1], 1)),
                               atol=1e-5)
    assert (pooled[1] == 0).all(), "empty RoI zeroed"


def _gt_at_local(local, size, dyaw):
    x = ROI[0] + COS30 * local[0] - SIN30 * local[1]
    y = ROI[1] + SIN30 * local[0] + COS30 * local[1]
    return (x, y, ROI[2] + local[2], *size, ROI[6] + dyaw)


@pytest.mark.parametrize("dyaw,target_yaw", [(0.1, 0.1), (math.pi - 0.2, -0.2),
                                             (-math.pi + 0.3, 0.3), (2 * math.pi + 0.1, 0.1)])
def test_target_encoding_by_hand(dyaw, target_yaw):
    gt = torch.tensor([_gt_at_local((0.5, -0.2, 0.1), (4.4, 1.8, 1.6), dyaw)], dtype=torch.float64)
    rois = torch.tensor([ROI], dtype=torch.float64)
    deltas = encode_roi_targets(rois, gt)[0]
    diag = math.sqrt(4.0 ** 2 + 2.0 ** 2)
    expected = [0.5 / diag, -0.2 / diag, 0.1 / 1.5, math.log(1.1), math.log(0.9),
                math.log(1.6 / 1.5), target_yaw]
    np.testing.assert_allclose(deltas.numpy(), expected, atol=1e-9)
    back = decode_roi_boxes(rois, deltas[None])[0]
    np.testing.assert_allclose(back[:6].numpy(), gt[0, :6].numpy(), atol=1e-9)
    turned = (back[6] - gt[0, 6]) / math.pi       # 0 or an odd multiple when the target flipped
    flipped = abs(math.remainder(float(dyaw), 2 * math.pi)) > math.pi / 2
    assert abs(turned - round(float(turned))) < 1e-9 and round(float(turned)) % 2 == int(flipped)


def _numpy_corner_loss(pred, gt, delta=1.0):
    flipped = gt.copy()
    flipped[:, 6] += np.pi
    pc = lidar_box_corners(pred)
    dist = np.minimum(np.linalg.norm(pc - lidar_box_corners(gt), axis=2),
                      np.linalg.norm(pc - lidar_box_corners(flipped), axis=2))
    huber = np.where(dist < delta, 0.5 * dist ** 2, delta * (dist - 0.5 * delta))
    return huber.mean(axis=1)


def test_corner_loss():
    gt = torch.tensor([[3.0, -2.0, -1.0, 3.9, 1.6, 1.5, 0.4],
                       [10.0, 4.0, -0.5, 0.8, 0.6, 1.7, -2.0]])
    assert torch.allclose(corner_loss(gt, gt), torch.zeros(2), atol=1e-6)
    turned = gt.clone()
    turned[:, 6] += math.pi
    assert torch.allclose(corner_loss(turned, gt), torch.zeros(2), atol=1e-5)
    pred = gt + torch.tensor([[0.2, -0.1, 0.05, 0.3, -0.2, 0.1, 0.15],
                              [1.5, 0.8, -0.4, 0.5, 0.2, -0.3, 1.2]])     # second: > 1 m corners
    loss = corner_loss(pred, gt)
    assert (loss > 0).all()
    np.testing.assert_allclose(loss.numpy(), _numpy_corner_loss(pred.numpy(), gt.numpy()),
                               rtol=1e-5)


def test_soft_iou_labels():
    labels = soft_iou_labels(torch.tensor([0.2, 0.25, 0.475, 0.7, 0.71, 0.95]), 0.7, 0.25)
    np.testing.assert_allclose(labels.numpy(), [0.0, 0.0, 0.5, 1.0, 1.0, 1.0], atol=1e-6)


def _small_config(**changes):
    base = dict(num_sampled_points=32, xyz_up_channels=(8, 8), merge_channels=8,
                sa_num_points=(8, 4, None), sa_radii=(0.6, 1.2, 100.0), sa_samples=(4, 4, 4),
                sa_mlps=((8, 8), (8, 16), (16, 16)), cls_channels=(16,), reg_channels=(16,),
                rois_per_sample=16)
    base.update(changes)
    return RoIHeadConfig(**base)


def _scene(proposals_per_sample=(16, 16), far=False):
    """Two samples of 1024 points, 3 GT boxes each with points inside, proposals around them."""
    g = torch.Generator().manual_seed(1)
    xyz, gts, labels, boxes, plabels = [], [], [], [], []
    for b, n_prop in enumerate(proposals_per_sample):
        gt = torch.tensor([[10.0 + 8 * i, -5.0 + 5 * b, -1.0, 3.9, 1.6, 1.5, 0.3 * i]
                           for i in range(3)])
        inside = gt[:, None, :3] + (torch.rand(3, 200, 3, generator=g) - 0.5) * \
            torch.tensor([1.5, 1.5, 1.0])
        rest = torch.rand(1024 - 600, 3, generator=g) * torch.tensor([40.0, 40.0, 3.0]) - \
            torch.tensor([0.0, 20.0, 2.0])
        xyz.append(torch.cat([inside.reshape(-1, 3), rest]))
        gts.append(gt)
        labels.append(torch.tensor([0, 1, 0]))
        jitter = (torch.rand(n_prop, 7, generator=g) - 0.5) * torch.tensor([1.0, 1.0, 0.3, 0.5, 0.3,
                                                                           0.3, 0.4])
        prop = gt[torch.arange(n_prop) % 3] + jitter
        if far:
            prop[:, 0] += 500.0
        boxes.append(prop)
        plabels.append(labels[-1][torch.arange(n_prop) % 3])
    xyz = torch.cat(xyz)
    offsets = torch.tensor([0, 1024, 2048])
    batch = Batch(points=torch.cat([xyz, torch.zeros(2048, 1)], 1), point_offsets=offsets,
                  voxels=torch.zeros(0, 1, 4), voxel_coords=torch.zeros(0, 4, dtype=torch.int32),
                  voxel_num_points=torch.zeros(0, dtype=torch.int32),
                  voxel_offsets=torch.zeros(3, dtype=torch.int64), gt_boxes=torch.cat(gts),
                  gt_labels=torch.cat(labels), gt_offsets=torch.tensor([0, 3, 6]))
    proposals = Proposals(boxes=torch.cat(boxes), scores=torch.rand(sum(proposals_per_sample)),
                          labels=torch.cat(plabels),
                          offsets=offsets_from_counts(list(proposals_per_sample)))
    features = torch.randn(2048, 8, generator=g)
    return xyz, features, torch.rand(2048, generator=g), offsets, proposals, batch


def test_head_trains_on_a_small_scene():
    torch.manual_seed(0)
    head = PointRCNNRoIHead(8, _small_config())
    xyz, features, scores, offsets, proposals, batch = _scene((16, 40))
    features.requires_grad_(True)
    out = head(xyz, features, scores, offsets, proposals, batch)
    assert out.roi_offsets.tolist() == [0, 16, 32]
    assert out.cls.shape == (32, 1) and out.reg.shape == (32, 7)
    t = out.targets
    assert t.positive.any() and (t.iou[t.positive] >= 0.55).all()
    assert (t.iou[~t.positive] < 0.55).all()
    assert (t.gt_boxes[~t.positive] == 0).all() and (t.reg[~t.positive] == 0).all()
    losses = head.loss(out)
    assert set(losses) == {"rcnn_cls", "rcnn_box", "rcnn_corner"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    for name in ("xyz_up.0.weight", "merge_down.0.weight", "sa_modules.0.scales.0.linears.0.weight",
                 "sa_modules.2.scales.0.linears.1.weight", "cls_out.weight", "reg_out.weight"):
        grad = dict(head.named_parameters())[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    assert features.grad is None, "stage-1 features are detached"


def _greedy_nms_ok(det, candidates_boxes, candidates_scores, iou_thr):
    """Every kept pair overlaps <= iou_thr; every dropped candidate overlaps a kept box with a
    higher or equal score by more than iou_thr."""
    kept = det.boxes
    if len(det) > 1:
        iou = boxes_iou_bev(kept, kept).fill_diagonal_(0)
        assert (iou <= iou_thr + 1e-6).all()
    for box, score in zip(candidates_boxes, candidates_scores):
        if any(torch.equal(box, k) for k in kept):
            continue
        iou = boxes_iou_bev(box[None], kept)[0] if len(det) else torch.zeros(0)
        assert bool(((iou > iou_thr) & (det.scores >= score)).any())


def test_head_predicts_detections_after_nms():
    torch.manual_seed(0)
    head = PointRCNNRoIHead(8, _small_config(score_threshold=0.3)).eval()
    xyz, features, scores, offsets, proposals, _ = _scene((30, 0))
    with torch.no_grad():
        head.cls_out.bias.fill_(0.0)
        head.cls_out.weight.normal_(std=1.0)           # spread the scores around 0.5
    out = head(xyz, features, scores, offsets, proposals)
    assert out.targets is None and out.rois.shape == (30, 7)
    dets = head.predict(out)
    assert len(dets) == 2 and len(dets[1]) == 0
    det = dets[0]
    assert 0 < len(det) < 30
    assert (det.scores > 0.3).all() and (det.scores[:-1] >= det.scores[1:]).all()
    boxes = decode_roi_boxes(out.rois, out.reg)
    probs = torch.sigmoid(out.cls[:, 0])
    for k in out.roi_labels.unique().tolist():
        mine = det.labels == k
        sub = type(det)(det.boxes[mine], det.scores[mine], det.labels[mine])
        cand = (out.roi_labels == k) & (probs > 0.3)
        _greedy_nms_ok(sub, boxes[cand], probs[cand], 0.1)
    capped = PointRCNNRoIHead(8, _small_config(score_threshold=0.3, max_detections=1)).eval()
    capped.load_state_dict(head.state_dict())
    assert [len(d) for d in capped.predict(out)] == [1, 0]


def test_class_agnostic_nms_suppresses_across_classes():
    """Each cluster of RoIs around a box mixes two labels: class-wise NMS keeps a box of each label
    where they overlap, class-agnostic NMS one box of either (greedy over all candidates), each
    with its own RoI's label."""
    import dataclasses

    torch.manual_seed(0)
    head = PointRCNNRoIHead(8, _small_config(score_threshold=0.3)).eval()
    xyz, features, scores, offsets, proposals, _ = _scene((30, 0))
    with torch.no_grad():
        head.cls_out.bias.fill_(0.0)
        head.cls_out.weight.normal_(std=1.0)
    out = head(xyz, features, scores, offsets, proposals)
    out = dataclasses.replace(out, roi_labels=torch.arange(30) % 2)    # labels 0 and 1 in each cluster
    agnostic = PointRCNNRoIHead(8, _small_config(score_threshold=0.3, nms_class_agnostic=True)).eval()
    agnostic.load_state_dict(head.state_dict())
    wise, agn = head.predict(out)[0], agnostic.predict(out)[0]
    boxes = decode_roi_boxes(out.rois, out.reg)
    probs = torch.sigmoid(out.cls[:, 0])
    cand = probs > 0.3
    _greedy_nms_ok(agn, boxes[cand], probs[cand], 0.1)
    assert 0 < len(agn) < len(wise) and set(wise.labels.tolist()) == {0, 1}
    for box, label in zip(agn.boxes, agn.labels):
        row = int(torch.nonzero((boxes == box).all(dim=1))[0])
        assert int(out.roi_labels[row]) == int(label)


def test_head_with_empty_rois_and_without_rois():
    torch.manual_seed(0)
    head = PointRCNNRoIHead(8, _small_config())
    xyz, features, scores, offsets, proposals, batch = _scene((16, 16), far=True)
    out = head(xyz, features, scores, offsets, proposals, batch)    # every RoI has no points
    assert not out.targets.positive.any()
    losses = head.loss(out)
    assert all(torch.isfinite(v) for v in losses.values()) and losses["rcnn_box"] == 0
    sum(losses.values()).backward()
    xyz, features, scores, offsets, proposals, batch = _scene((0, 0))
    out = head(xyz, features, scores, offsets, proposals, batch)
    assert out.rois.shape == (0, 7) and out.roi_offsets.tolist() == [0, 0, 0]
    sum(head.loss(out).values()).backward()
    assert [len(d) for d in head.eval().predict(out)] == [0, 0]


def test_bad_inputs_raise():
    head = PointRCNNRoIHead(8, _small_config())
    xyz, features, scores, offsets, proposals, batch = _scene((4, 4))
    with pytest.raises(ValueError, match="features must be"):
        head(xyz, features[:, :5], scores, offsets, proposals)
    with pytest.raises(ValueError, match="point_scores must be"):
        head(xyz, features, scores[:10], offsets, proposals)
    with pytest.raises(ValueError, match="offsets must be"):
        head(xyz, features, scores, torch.tensor([0, 100]), proposals)
    bad = Proposals(proposals.boxes, proposals.scores, proposals.labels, torch.tensor([0, 8]))
    with pytest.raises(ValueError, match="proposals.offsets"):
        head(xyz, features, scores, offsets, bad)
    bad = Proposals(proposals.boxes[:, :6], proposals.scores, proposals.labels, proposals.offsets)
    with pytest.raises(ValueError, match="proposals need"):
        head(xyz, features, scores, offsets, bad)
    with pytest.raises(ValueError, match="no targets"):
        head.loss(head.eval()(xyz, features, scores, offsets, proposals))
    with pytest.raises(ValueError, match="one entry per level"):
        PointRCNNRoIHead(8, _small_config(sa_radii=(0.2, 0.4)))
    with pytest.raises(ValueError, match="group-all"):
        PointRCNNRoIHead(8, _small_config(sa_num_points=(8, 4, 2)))
    with pytest.raises(ValueError, match="rois must be"):
        encode_roi_targets(torch.zeros(3, 6), torch.zeros(3, 7))


def test_parameter_count_of_the_teacher():
    # xyz_up 5*128+128 + 128*128+128 = 17280; merge 256*128+128 = 32896;
    # SA (conv no bias + BN 2/ch): 131*128+2*128*128+768 = 50304, 131*128+128*128+128*256+1024 =
    # 66944, 259*256+256*256+256*512+2048 = 264960; cls/reg 512*256+256*256+1024 = 197632 each;
    # outputs 256+1 and 256*7+7
    assert sum(p.numel() for p in PointRCNNRoIHead(128).parameters()) == 829704
