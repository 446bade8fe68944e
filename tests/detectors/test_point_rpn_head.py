"""PointRPNHead and PointResidualCoder: codes by hand, the class order of the mean sizes, targets of
a hand-built scene against plain numpy geometry, losses against a dense formula, proposals (empty
boxes, NMS thresholds, caps, offsets, determinism) and bad input."""
import math

import numpy as np
import pytest
import torch

from pointdistiller.detectors.batch import Batch, offsets_from_counts
from pointdistiller.detectors.box_coding.point_coder import PointResidualCoder
from pointdistiller.detectors.heads.point_rpn_head import (PointRPNHead, PointRPNHeadConfig,
                                                           Proposals, boxes_contain_points,
                                                           ordered_mean_sizes)
from pointdistiller.kitti_tools.classes import CLASS_NAMES
from pointdistiller.ops import boxes_iou_bev, points_in_boxes

K = len(CLASS_NAMES)
CAR, PED, CYC = (CLASS_NAMES.index(n) for n in ("Car", "Pedestrian", "Cyclist"))
MEAN = {"Car": (3.9, 1.6, 1.56), "Pedestrian": (0.8, 0.6, 1.73), "Cyclist": (1.76, 0.6, 1.73)}


def make_batch(points_per_sample, boxes_per_sample, labels_per_sample):
    pts = [torch.as_tensor(np.asarray(p), dtype=torch.float32).reshape(-1, 3)
           for p in points_per_sample]
    boxes = [torch.as_tensor(np.asarray(b), dtype=torch.float32).reshape(-1, 7)
             for b in boxes_per_sample]
    labels = [torch.as_tensor(l, dtype=torch.int64).reshape(-1) for l in labels_per_sample]
    b = len(pts)
    xyz = torch.cat(pts)
    offsets = offsets_from_counts([len(p) for p in pts])
    batch = Batch(points=torch.cat([xyz, torch.zeros(len(xyz), 1)], 1), point_offsets=offsets,
                  voxels=torch.zeros(b, 1, 4), voxel_coords=torch.zeros(b, 4, dtype=torch.int32),
                  voxel_num_points=torch.ones(b, dtype=torch.int32),
                  voxel_offsets=offsets_from_counts([1] * b), gt_boxes=torch.cat(boxes),
                  gt_labels=torch.cat(labels),
                  gt_offsets=offsets_from_counts([len(x) for x in boxes]))
    return xyz, offsets, batch


# ---------------------------------------------------------------- plain numpy geometry

def to_local(points, box):
    """World points ``[n, 3]`` -> coordinates in the box frame (centre origin, x along l)."""
    d = np.asarray(points, np.float64) - np.asarray(box[:3], np.float64)
    c, s = math.cos(box[6]), math.sin(box[6])
    return np.stack([d[:, 0] * c + d[:, 1] * s, -d[:, 0] * s + d[:, 1] * c, d[:, 2]], 1)


def to_world(local, box):
    local = np.asarray(local, np.float64).reshape(-1, 3)
    c, s = math.cos(box[6]), math.sin(box[6])
    return np.stack([box[0] + local[:, 0] * c - local[:, 1] * s,
                     box[1] + local[:, 0] * s + local[:, 1] * c, box[2] + local[:, 2]], 1)


def inside_np(points, box, margin=0.0):
    loc = np.abs(to_local(points, box))
    half = np.asarray(box[3:6], np.float64) / 2 + margin
    return (loc <= half).all(1)


def encode_np(box, point, mean):
    la, wa, ha = mean
    diag = math.sqrt(la * la + wa * wa)
    return [(box[0] - point[0]) / diag, (box[1] - point[1]) / diag, (box[2] - point[2]) / ha,
            math.log(box[3] / la), math.log(box[4] / wa), math.log(box[5] / ha),
            math.cos(box[6]), math.sin(box[6])]


def reference_targets(points, boxes, labels, margin=0.1):
    """Labels and codes of one sample's points: first containing box, else ignored in a margin."""
    n = len(points)
    out_labels, out_codes = np.full(n, K), np.zeros((n, 8))
    for i in range(n):
        p = np.asarray(points[i:i + 1], np.float64)
        hits = [j for j, b in enumerate(boxes) if inside_np(p, b)[0]]
        if hits:
            j = hits[0]
            out_labels[i] = labels[j]
            out_codes[i] = encode_np(boxes[j], p[0], MEAN[CLASS_NAMES[labels[j]]])
        elif any(inside_np(p, b, margin)[0] for b in boxes):
            out_labels[i] = -1
    return out_labels, out_codes


# ---------------------------------------------------------------- coder

def test_coder_values_by_hand():
    coder = PointResidualCoder(ordered_mean_sizes(MEAN))
    # Pedestrian mean (0.8, 0.6, 1.73): diag = sqrt(0.64 + 0.36) = 1
    box = torch.tensor([[1.5, 1.4, -0.135, 0.8, 0.3, 3.46, math.pi / 2]], dtype=torch.float64)
    point = torch.tensor([[1.0, 2.0, -1.0]], dtype=torch.float64)
    expected = [0.5, -0.6, 0.865 / 1.73, 0.0, math.log(0.5), math.log(2.0), 0.0, 1.0]
    code = coder.encode(box, point, torch.tensor([PED]))
    torch.testing.assert_close(code, torch.tensor([expected], dtype=torch.float64))
    # Car mean (3.9, 1.6, 1.56): the label picks the row
    car = [(1.5 - 1.0) / math.sqrt(3.9 ** 2 + 1.6 ** 2), (1.4 - 2.0) / math.sqrt(17.77),
           0.865 / 1.56, math.log(0.8 / 3.9), math.log(0.3 / 1.6), math.log(3.46 / 1.56), 0.0, 1.0]
    torch.testing.assert_close(coder.encode(box, point, torch.tensor([CAR])),
                               torch.tensor([car], dtype=torch.float64))
    torch.testing.assert_close(coder.decode(code, point, torch.tensor([PED])), box)


def test_coder_round_trip_random_yaw():
    g = torch.Generator().manual_seed(0)
    n = 500
    boxes = torch.cat([torch.rand(n, 3, generator=g, dtype=torch.float64) * 40 - 20,
                       torch.rand(n, 3, generator=g, dtype=torch.float64) * 4 + 0.2,
                       (torch.rand(n, 1, generator=g, dtype=torch.float64) * 2 - 1) * math.pi], 1)
    boxes[0, 6], boxes[1, 6] = math.pi, -math.pi + 1e-9
    points = boxes[:, :3] + torch.randn(n, 3, generator=g, dtype=torch.float64)
    labels = torch.randint(0, K, (n,), generator=g)
    coder = PointResidualCoder(ordered_mean_sizes(MEAN))
    decoded = coder.decode(coder.encode(boxes, points, labels), points, labels)
    torch.testing.assert_close(decoded[:, :6], boxes[:, :6], rtol=1e-10, atol=1e-10)
    assert bool(((decoded[:, 6] > -math.pi) & (decoded[:, 6] <= math.pi)).all())
    torch.testing.assert_close(decoded[:, 6], boxes[:, 6], rtol=0, atol=1e-9)


def test_coder_rejects_bad_input():
    coder = PointResidualCoder(ordered_mean_sizes(MEAN))
    with pytest.raises(ValueError, match="labels"):
        coder.encode(torch.zeros(2, 7), torch.zeros(2, 3), torch.tensor([0, K]))
    with pytest.raises(ValueError, match="boxes"):
        coder.encode(torch.zeros(2, 8), torch.zeros(2, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="mean"):
        PointResidualCoder(torch.tensor([[1.0, 0.0, 1.0]]))


# ---------------------------------------------------------------- class order of the mean sizes

def test_default_mean_sizes_follow_class_names():
    sizes = PointRPNHead(8).mean_sizes
    assert sizes.shape == (K, 3)
    for name, size in MEAN.items():
        torch.testing.assert_close(sizes[CLASS_NAMES.index(name)], torch.tensor(size))
    reordered = {name: MEAN[name] for name in reversed(CLASS_NAMES)}
    assert list(reordered) != list(CLASS_NAMES)
    head = PointRPNHead(8, PointRPNHeadConfig(mean_sizes=reordered))
    assert torch.equal(head.mean_sizes, sizes) and torch.equal(head.coder.mean_sizes, sizes)


def test_mean_sizes_missing_or_unknown_class():
    with pytest.raises(ValueError, match="Cyclist"):
        PointRPNHead(8, PointRPNHeadConfig(mean_sizes={"Car": MEAN["Car"],
                                                       "Pedestrian": MEAN["Pedestrian"]}))
    with pytest.raises(ValueError, match="Van"):
        PointRPNHead(8, PointRPNHeadConfig(mean_sizes={**MEAN, "Van": (5.0, 2.0, 2.0)}))
    with pytest.raises(ValueError, match="Car"):
        ordered_mean_sizes({**MEAN, "Car": (3.9, 1.6)})


# ---------------------------------------------------------------- layers

def test_layers_and_init():
    head = PointRPNHead(32, PointRPNHeadConfig(cls_channels=(64, 16), reg_channels=(24,)))
    kinds = [type(m).__name__ for m in head.cls_layers]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU"] * 2 + ["Linear"]
    assert [type(m).__name__ for m in head.reg_layers] == ["Linear", "BatchNorm1d", "ReLU",
                                                           "Linear"]
    assert head.cls_layers[0].bias is None and head.cls_layers[3].bias is None
    assert head.reg_layers[-1].out_features == 8 and head.cls_layers[-1].out_features == K
    torch.testing.assert_close(torch.sigmoid(head.cls_layers[-1].bias), torch.full((K,), 0.01))
    cls, box = head(torch.randn(10, 32))
    assert cls.shape == (10, K) and box.shape == (10, 8)
    assert "mean_sizes" not in head.state_dict()


# ---------------------------------------------------------------- targets of a hand-built scene

SCENE_BOXES = [[5.0, 0.0, -1.0, 4.0, 2.0, 1.5, 0.5],        # 0 Car
               [10.0, 3.0, -0.8, 0.8, 0.6, 1.7, -1.2],      # 1 Pedestrian, inside box 2
               [10.0, 3.0, -0.8, 1.8, 0.6, 1.7, -1.2]]      # 2 Cyclist
SCENE_LABELS = [CAR, PED, CYC]
SCENE_POINTS = [(0, (1.0, 0.5, 0.2), CAR),     # inside the car
                (0, (-1.9, -0.9, -0.7), CAR),  # near a corner, inside
                (0, (2.05, 0.0, 0.0), -1),     # 0.05 m beyond the front: margin
                (0, (0.0, 1.08, 0.0), -1),     # beside
                (0, (0.0, 0.0, 0.83), -1),     # above
                (0, (2.15, 0.0, 0.0), K),      # beyond the margin
                (1, (0.0, 0.0, 0.0), PED),     # in boxes 1 and 2: the lower index wins
                (2, (0.7, 0.0, 0.0), CYC),     # box 2 only
                (1, (0.45, 0.0, 0.0), CYC),    # margin of box 1 but inside box 2: positive
                (2, (0.95, 0.0, 0.0), -1)]     # margin of box 2


def scene():
    pts = np.concatenate([to_world(loc, SCENE_BOXES[j]) for j, loc, _ in SCENE_POINTS]
                         + [[[30.0, -10.0, 0.0]]])
    rng = np.random.default_rng(0)
    extra = rng.uniform([2, -3, -2.5], [12, 5, 0.5], size=(300, 3))
    # no random point within 1 mm of a face of a box or of its margin (float32 could flip it)
    near_face = np.zeros(len(extra), bool)
    for box in SCENE_BOXES:
        for margin in (0.0, 0.1):
            excess = np.abs(to_local(extra, box)) - (np.asarray(box[3:6]) / 2 + margin)
            near_face |= np.abs(excess.max(1)) < 1e-3
    sample0 = np.concatenate([pts, extra[~near_face]]).astype(np.float32)
    sample1 = np.concatenate([pts[:1], [[0.0, 0.0, 0.0]]]).astype(np.float32)  # no ground truth
    return make_batch([sample0, sample1], [SCENE_BOXES, np.zeros((0, 7))], [SCENE_LABELS, []])


def test_targets_of_hand_built_scene():
    xyz, offsets, batch = scene()
    t = PointRPNHead(8).targets(xyz, offsets, batch)
    hand = [label for _, _, label in SCENE_POINTS] + [K]
    assert t.labels[:len(hand)].tolist() == hand
    n0 = int(offsets[1])
    assert t.labels[n0:].tolist() == [K, K]
    ref_labels, ref_codes = reference_targets(xyz[:n0].double().numpy(), SCENE_BOXES, SCENE_LABELS)
    assert t.labels[:n0].tolist() == ref_labels.tolist()
    assert {-1, K, CAR, PED, CYC} <= set(ref_labels.tolist())
    assert torch.equal(t.positive, (t.labels >= 0) & (t.labels < K))
    torch.testing.assert_close(t.box_targets[:n0].double(), torch.from_numpy(ref_codes),
                               rtol=1e-5, atol=1e-5)
    assert not t.box_targets[n0:].any()


# ---------------------------------------------------------------- losses against a dense formula

def dense_reference_loss(cls, box, labels, codes, gamma=2.0, alpha=0.25, beta=1.0 / 9.0):
    cls, box = cls.double().numpy(), box.double().numpy()
    focal, smooth, pos = 0.0, 0.0, 0
    for i, lab in enumerate(labels):
        if lab < 0:
            continue
        for k in range(K):
            p = 1.0 / (1.0 + math.exp(-cls[i, k]))
            if k == lab:
                focal += -alpha * (1 - p) ** gamma * math.log(p)
            else:
                focal += -(1 - alpha) * p ** gamma * math.log(1 - p)
        if lab < K:
            pos += 1
            for c in range(8):
                d = abs(box[i, c] - codes[i, c])
                smooth += 0.5 * d * d / beta if d < beta else d - 0.5 * beta
    norm = max(1, pos)
    return focal / norm, smooth / norm


def test_loss_equals_dense_formula():
    xyz, offsets, batch = scene()
    n0 = int(offsets[1])
    g = torch.Generator().manual_seed(1)
    cls = torch.randn(len(xyz), K, generator=g) * 2
    box = torch.randn(len(xyz), 8, generator=g) * 0.3
    losses = PointRPNHead(8).loss(cls, box, xyz, offsets, batch)
    assert set(losses) == {"rpn_cls", "rpn_box"}
    labels, codes = reference_targets(xyz[:n0].double().numpy(), SCENE_BOXES, SCENE_LABELS)
    labels = np.concatenate([labels, [K] * (len(xyz) - n0)])
    codes = np.concatenate([codes, np.zeros((len(xyz) - n0, 8))])
    ref_cls, ref_box = dense_reference_loss(cls, box, labels, codes)
    assert ref_box > 0
    assert losses["rpn_cls"].item() == pytest.approx(ref_cls, rel=1e-5)
    assert losses["rpn_box"].item() == pytest.approx(ref_box, rel=1e-5)


def test_loss_without_ground_truth_is_finite():
    xyz = torch.tensor([[1.0, 2.0, 0.0], [3.0, -1.0, 0.5], [0.0, 0.0, 0.0]])
    _, offsets, batch = make_batch([xyz[:2], xyz[2:]], [np.zeros((0, 7))] * 2, [[], []])
    cls, box = torch.randn(3, K), torch.randn(3, 8)
    losses = PointRPNHead(8).loss(cls, box, xyz, offsets, batch)
    ref_cls, _ = dense_reference_loss(cls, box, [K, K, K], np.zeros((3, 8)))
    assert losses["rpn_box"].item() == 0.0
    assert losses["rpn_cls"].item() == pytest.approx(ref_cls, rel=1e-5)


def test_gradient_reaches_every_parameter():
    torch.manual_seed(0)
    xyz, offsets, batch = scene()
    head = PointRPNHead(8, PointRPNHeadConfig(cls_channels=(16,), reg_channels=(16, 16)))
    cls, box = head(torch.randn(len(xyz), 8))
    losses = head.loss(cls, box, xyz, offsets, batch)
    (losses["rpn_cls"] + losses["rpn_box"]).backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


# ---------------------------------------------------------------- proposals

def outputs_for(head, points, boxes, labels, logits):
    """Head outputs that decode to ``boxes`` with class ``labels`` at score ``sigmoid(logits)``."""
    points = torch.as_tensor(points, dtype=torch.float32)
    labels = torch.as_tensor(labels)
    cls = torch.full((len(points), K), -12.0)
    cls[torch.arange(len(points)), labels] = torch.as_tensor(logits, dtype=torch.float32)
    box = head.coder.encode(torch.as_tensor(boxes, dtype=torch.float32), points, labels)
    return cls, box, points


def logit(p):
    return math.log(p / (1 - p))


def test_boxes_contain_points_matches_brute_force():
    rng = np.random.default_rng(3)
    points = rng.uniform(0, 10, size=(400, 3)).astype(np.float32)
    boxes = np.concatenate([rng.uniform(0, 10, (300, 3)), rng.uniform(0.2, 2.5, (300, 3)),
                            rng.uniform(-math.pi, math.pi, (300, 1))], 1).astype(np.float32)
    hints = rng.integers(0, len(points), 300)
    hints[:50] = [int(np.argmin(np.linalg.norm(points - b[:3], axis=1))) for b in boxes[:50]]
    got = boxes_contain_points(torch.from_numpy(boxes), torch.from_numpy(points),
                               torch.from_numpy(hints))
    ref = np.array([inside_np(points, b).any() for b in boxes])
    hint_inside = np.array([inside_np(points[h:h + 1], b)[0] for h, b in zip(hints, boxes)])
    assert (~ref).sum() > 20 and (ref & ~hint_inside).sum() > 20 and hint_inside.sum() > 20
    assert got.tolist() == ref.tolist()


def test_proposals_drop_empty_boxes_even_when_points_are_in_a_lower_box():
    head = PointRPNHead(8)
    points = [[0, 0, 0], [5, 5, 0], [5.5, 5, 0], [5.2, 5, 0], [20, 0, 0]]
    far = [-20.0, -20.0, 0.0, 2.0, 2.0, 2.0, 0.0]
    big = [5.3, 5.0, 0.0, 4.0, 2.0, 2.0, 0.0]      # holds points 1, 2, 3
    small = [5.5, 5.0, 0.0, 0.4, 0.4, 1.0, 0.3]    # holds point 2 only, not its own point 4
    boxes = [far, big, far, far, small]
    cls, box, xyz = outputs_for(head, points, boxes, [CAR, CAR, PED, PED, CYC],
                                [logit(0.99), logit(0.9), logit(0.3), logit(0.2), logit(0.8)])
    # the lowest box of each point alone would call `small` empty
    owner = points_in_boxes(xyz, torch.tensor([0, 5]), torch.tensor([big, small]),
                            torch.tensor([0, 2]))
    assert 1 not in owner.tolist()
    out = head.proposals(cls, box, xyz, torch.tensor([0, 5]), training=True)
    assert isinstance(out, Proposals) and out.offsets.tolist() == [0, 2]
    torch.testing.assert_close(out.boxes, torch.tensor([big, small]), rtol=0, atol=1e-5)
    torch.testing.assert_close(out.scores, torch.tensor([0.9, 0.8]))
    assert out.labels.tolist() == [CAR, CYC]


def test_proposals_nms_thresholds():
    head = PointRPNHead(8)

    def shift(iou):  # two 4 x 2 boxes shifted along their length by d: IoU = (4 - d) / (4 + d)
        return 4 * (1 - iou) / (1 + iou)

    xs = [5.0, 5.0 + shift(0.9), 5.0 + shift(0.82), 5.0 + shift(0.5)]
    boxes = [[x, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0] for x in xs]
    ious = boxes_iou_bev(torch.tensor(boxes[:1]), torch.tensor(boxes))[0]
    torch.testing.assert_close(ious, torch.tensor([1.0, 0.9, 0.82, 0.5]))
    points = [[x, 0.0, 0.0] for x in xs]
    cls, box, xyz = outputs_for(head, points, boxes, [CAR] * 4,
                                [logit(0.95), logit(0.9), logit(0.85), logit(0.8)])
    offsets = torch.tensor([0, 4])
    train = head.proposals(cls, box, xyz, offsets, training=True)     # IoU 0.8
    test = head.proposals(cls, box, xyz, offsets, training=False)     # IoU 0.85
    torch.testing.assert_close(train.boxes[:, 0], torch.tensor([xs[0], xs[3]]))
    torch.testing.assert_close(test.boxes[:, 0], torch.tensor([xs[0], xs[2], xs[3]]))


def line_of_boxes(n):
    points = [[10.0 * i, 0.0, 0.0] for i in range(n)]
    return points, [[10.0 * i, 0.0, 0.0, 2.0, 2.0, 2.0, 0.0] for i in range(n)]


def test_proposals_nms_post_and_nms_pre_caps():
    points, boxes = line_of_boxes(10)
    probs = [0.3, 0.9, 0.5, 0.8, 0.1, 0.7, 0.6, 0.2, 0.4, 0.65]
    head = PointRPNHead(8, PointRPNHeadConfig(nms_post_train=4, nms_post_test=2))
    cls, box, xyz = outputs_for(head, points, boxes, [PED] * 10, [logit(p) for p in probs])
    out = head.proposals(cls, box, xyz, torch.tensor([0, 10]), training=True)
    assert out.offsets.tolist() == [0, 4]
    assert (out.boxes[:, 0] / 10).round().long().tolist() == [1, 3, 5, 9]
    out = head.proposals(cls, box, xyz, torch.tensor([0, 10]), training=False)
    assert (out.boxes[:, 0] / 10).round().long().tolist() == [1, 3]
    # nms_pre keeps the 3 best scores, ties at the cut to lower rows
    head = PointRPNHead(8, PointRPNHeadConfig(nms_pre=3))
    tied = [0.5, 0.7, 0.7, 0.7, 0.7, 0.2]
    points, boxes = line_of_boxes(6)
    cls, box, xyz = outputs_for(head, points, boxes, [PED] * 6, [logit(p) for p in tied])
    out = head.proposals(cls, box, xyz, torch.tensor([0, 6]), training=False)
    assert (out.boxes[:, 0] / 10).round().long().tolist() == [1, 2, 3]


def test_proposals_batch_offsets_and_determinism():
    head = PointRPNHead(8)
    points0, boxes0 = line_of_boxes(5)
    boxes0[1] = boxes0[3] = [-50.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0.0]      # empty
    points1 = [[0.0, 30.0, 0.0], [0.0, 40.0, 0.0]]
    boxes1 = [[0.0, 30.0, 0.0, 2.0, 2.0, 2.0, 0.0],
              [20.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0.0]]   # holds a point of sample 0 only: empty
    probs = [0.6, 0.9, 0.7, 0.8, 0.5, 0.4, 0.95]
    cls, box, xyz = outputs_for(head, points0 + points1, boxes0 + boxes1,
                                [CAR, CAR, PED, CYC, CAR, PED, CYC], [logit(p) for p in probs])
    offsets = torch.tensor([0, 5, 7])
    out = head.proposals(cls, box, xyz, offsets, training=True)
    assert out.offsets.tolist() == [0, 3, 4] and out.offsets.dtype == torch.int64
    expected = torch.tensor([boxes0[2], boxes0[0], boxes0[4], boxes1[0]])
    torch.testing.assert_close(out.boxes, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.scores, torch.tensor([0.7, 0.6, 0.5, 0.4]))
    assert out.labels.tolist() == [PED, CAR, CAR, PED]
    again = head.proposals(cls, box, xyz, offsets, training=True)
    for name in ("boxes", "scores", "labels", "offsets"):
        assert torch.equal(getattr(out, name), getattr(again, name))


def test_proposals_from_the_head_on_random_features():
    torch.manual_seed(0)
    xyz, offsets, _ = scene()
    head = PointRPNHead(8, PointRPNHeadConfig(cls_channels=(16,), reg_channels=(16,), nms_post_train=20,
                                                 nms_post_test=20))
    head.eval()
    cls, box = head(torch.randn(len(xyz), 8))
    out = head.proposals(cls, box, xyz, offsets, training=False)
    counts = out.offsets.diff().tolist()
    assert out.offsets[-1] == len(out.boxes) == len(out.scores) == len(out.labels)
    assert all(c <= 20 for c in counts) and counts[0] > 0
    assert torch.isfinite(out.boxes).all()
    for b in range(2):
        s, e = int(out.offsets[b]), int(out.offsets[b + 1])
        assert (out.scores[s:e].diff() <= 0).all()
        pts = xyz[int(offsets[b]):int(offsets[b + 1])].numpy()
        assert all(inside_np(pts, bx.tolist()).any() for bx in out.boxes[s:e])


# ---------------------------------------------------------------- bad input

def test_bad_input_is_a_clear_error():
    head = PointRPNHead(8)
    with pytest.raises(ValueError, match=r"features must be \[N, 8\]"):
        head(torch.randn(4, 7))
    xyz, offsets, batch = scene()
    n = len(xyz)
    cls, box = torch.randn(n, K), torch.randn(n, 8)
    with pytest.raises(ValueError, match="box must be"):
        head.loss(cls, box[:-1], xyz, offsets, batch)
    with pytest.raises(ValueError, match="box must be"):
        head.proposals(cls, box[:, :7], xyz, offsets, training=True)
    with pytest.raises(ValueError, match="cls must be"):
        head.loss(cls[:, :2], box, xyz, offsets, batch)
    with pytest.raises(ValueError, match="xyz must be"):
        head.proposals(cls, box, xyz[:-1], offsets, training=False)
    with pytest.raises(ValueError, match="offsets"):
        head.loss(cls, box, xyz, torch.tensor([0, n - 1]), batch)
    with pytest.raises(ValueError, match="in_channels"):
        PointRPNHead(0)
