"""AnchorHead: layers and init, losses (focal loss by hand, layout of targets), post-processing on
hand-made outputs, empty samples, and a small fit of a few boxes."""
import math

import pytest
import torch

from pointdistiller.detectors.batch import Batch, offsets_from_counts
from pointdistiller.detectors.box_coding import ResidualCoder
from pointdistiller.detectors.heads import AnchorHead, AnchorHeadConfig, HeadOutput
from pointdistiller.detectors.losses import (add_sin_difference, box_regression_loss,
                                             direction_loss, sigmoid_focal_loss)
from pointdistiller.detectors.post_processing import Detections, decode_detections

RANGE = (0.0, -4.0, -3.0, 8.0, 4.0, 1.0)  # 0.4 m cells
GRID = (20, 20)  # (ny, nx)
A = 6


def make_batch(boxes_per_sample, labels_per_sample):
    b = len(boxes_per_sample)
    boxes = [torch.as_tensor(x, dtype=torch.float32).reshape(-1, 7) for x in boxes_per_sample]
    labels = [torch.as_tensor(x, dtype=torch.int64).reshape(-1) for x in labels_per_sample]
    return Batch(points=torch.zeros(b, 4), point_offsets=offsets_from_counts([1] * b),
                 voxels=torch.zeros(b, 1, 4), voxel_coords=torch.zeros(b, 4, dtype=torch.int32),
                 voxel_num_points=torch.ones(b, dtype=torch.int32),
                 voxel_offsets=offsets_from_counts([1] * b),
                 gt_boxes=torch.cat(boxes), gt_labels=torch.cat(labels),
                 gt_offsets=offsets_from_counts([len(x) for x in boxes]))


def to_map(flat, ny=GRID[0], nx=GRID[1]):
    """``[B, ny * nx * A, C]`` per-anchor values -> ``[B, A * C, ny, nx]`` head map."""
    b, _, c = flat.shape
    return flat.reshape(b, ny, nx, A * c).permute(0, 3, 1, 2).contiguous()


def small_head(**kwargs):
    return AnchorHead(16, RANGE, GRID, AnchorHeadConfig(**kwargs))


CAR = [3.0, 0.2, -0.9, 4.0, 1.7, 1.5, 0.1]
PED = [5.4, -2.2, -0.8, 0.7, 0.6, 1.7, 1.2]
CYC = [6.6, 2.2, -0.7, 1.8, 0.6, 1.7, -2.5]


# ---------------------------------------------------------------- layers

def test_layers_shapes_and_init():
    torch.manual_seed(0)
    head = AnchorHead(384, (0.0, -39.68, -3.0, 69.12, 39.68, 1.0), (248, 216))
    assert head.num_anchors == 6
    assert head.conv_cls.out_channels == 18 and head.conv_box.out_channels == 42
    assert head.conv_dir.out_channels == 12
    assert sum(p.numel() for p in head.parameters()) == 384 * 72 + 72
    torch.testing.assert_close(torch.sigmoid(head.conv_cls.bias), torch.full((18,), 0.01))
    assert not head.conv_box.bias.any() and head.conv_box.weight.std() < 0.02
    out = small_head()(torch.randn(2, 16, *GRID))
    assert isinstance(out, HeadOutput)
    assert out.cls.shape == (2, 18, 20, 20) and out.box.shape == (2, 42, 20, 20)
    assert out.dir.shape == (2, 12, 20, 20)
    with pytest.raises(ValueError, match="bev"):
        small_head()(torch.randn(2, 16, 20, 21))


def test_anchors_cached():
    head = small_head()
    a1, c1 = head.anchors()
    a2, _ = head.anchors(torch.device("cpu"))
    assert a1 is a2 and a1.shape == (20 * 20 * 6, 7) and c1.shape == (2400,)


# ---------------------------------------------------------------- losses by hand

def test_focal_loss_by_hand():
    logits = torch.tensor([[0.0, 2.0], [-1.0, 0.5], [3.0, 3.0]], dtype=torch.float64)
    labels = torch.tensor([0, 2, -1])  # class 0, background (K = 2), ignored

    def neg(p):
        return 0.75 * p ** 2 * -math.log(1 - p)

    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    expected = (0.25 * 0.5 ** 2 * -math.log(0.5) + neg(sig(2.0)) + neg(sig(-1.0)) + neg(sig(0.5)))
    got = sigmoid_focal_loss(logits, labels, gamma=2.0, alpha=0.25)
    assert got.item() == pytest.approx(expected, rel=1e-12)
    assert sigmoid_focal_loss(logits, torch.full((3,), -1)).item() == 0.0


def test_box_loss_sin_difference_and_direction_loss():
    pred = torch.tensor([[0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.3 + math.pi]], dtype=torch.float64)
    target = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.3]], dtype=torch.float64)
    p, t = add_sin_difference(pred, target)
    assert (p[0, 6] - t[0, 6]).item() == pytest.approx(math.sin(math.pi), abs=1e-12)
    # yaw differing by pi costs nothing; dx 0.1 > beta 1/9? no: 0.1 < 0.111 -> 0.5 * 0.01 * 9
    got = box_regression_loss(pred, target, beta=1 / 9)
    assert got.item() == pytest.approx(0.5 * 0.01 * 9, rel=1e-9)
    weights = torch.tensor([2.0, 1, 1, 1, 1, 1, 1])
    assert box_regression_loss(pred, target, 1 / 9, weights).item() == pytest.approx(0.09, rel=1e-9)
    logits = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    expected = math.log(2) + math.log(1 + math.exp(-2.0))
    assert direction_loss(logits, torch.tensor([1, 0])).item() == pytest.approx(expected, rel=1e-6)


# ---------------------------------------------------------------- head loss

def test_loss_keys_and_layout_of_targets():
    torch.manual_seed(0)
    head = small_head()
    batch = make_batch([[CAR, PED, CYC], [CAR]], [[0, 1, 2], [0]])
    out = head(torch.randn(2, 16, *GRID))
    losses = head.loss(out, batch)
    assert set(losses) == {"cls", "box", "dir", "total", "num_pos"}
    assert all(torch.isfinite(v) for v in losses.values())
    torch.testing.assert_close(losses["total"], losses["cls"] + losses["box"] + losses["dir"])
    targets = head.assign(batch)
    num_pos = sum(int(t.pos_mask.sum()) for t in targets)
    assert losses["num_pos"].item() == num_pos > 4
    # every ground truth has at least one positive anchor of its class
    for t, labels in zip(targets, ([0, 1, 2], [0])):
        assert sorted(t.gt_index[t.pos_mask].unique().tolist()) == list(range(len(labels)))
        assert torch.equal(t.labels[t.pos_mask], torch.tensor(labels)[t.gt_index[t.pos_mask]])
    losses["total"].backward()
    assert head.conv_box.weight.grad.abs().sum() > 0

    # outputs equal to the targets (in the head's channel layout) give zero box / dir loss
    box_t = torch.stack([t.box_targets for t in targets])
    dir_t = torch.stack([t.dir_targets for t in targets])
    dir_logits = torch.nn.functional.one_hot(dir_t, 2).float() * 40.0
    perfect = HeadOutput(cls=out.cls.detach(), box=to_map(box_t), dir=to_map(dir_logits))
    losses = head.loss(perfect, batch)
    assert losses["box"].item() == pytest.approx(0.0, abs=1e-6)
    assert losses["dir"].item() == pytest.approx(0.0, abs=1e-6)


def test_loss_normalisation_and_weights():
    torch.manual_seed(0)
    batch = make_batch([[CAR]], [[0]])
    bev = torch.randn(1, 16, *GRID)
    h1 = small_head()
    h2 = small_head(cls_weight=2.0, box_weight=1.0, dir_weight=1.0)
    h2.load_state_dict(h1.state_dict())
    out = h1(bev)
    l1, l2 = h1.loss(out, batch), h2.loss(out, batch)
    torch.testing.assert_close(l2["cls"], 2 * l1["cls"])
    torch.testing.assert_close(l2["box"], l1["box"] / 2)
    torch.testing.assert_close(l2["dir"], l1["dir"] * 5)
    cls, _, _ = h1._flatten(out)
    t = h1.assign(batch)[0]
    expected = sigmoid_focal_loss(cls[0], t.labels) / t.pos_mask.sum()
    torch.testing.assert_close(l1["cls"], expected)


def test_empty_samples():
    torch.manual_seed(0)
    head = small_head()
    batch = make_batch([[], [CAR]], [[], [0]])
    out = head(torch.randn(2, 16, *GRID))
    losses = head.loss(out, batch)
    assert losses["num_pos"] > 0 and torch.isfinite(losses["total"])
    empty = make_batch([[], []], [[], []])
    losses = head.loss(out, empty)
    assert losses["num_pos"].item() == 0
    assert losses["box"].item() == 0.0 and losses["dir"].item() == 0.0
    assert losses["cls"].item() > 0
    losses["total"].backward()
    dets = head.predict(out, empty)
    assert len(dets) == 2


def test_loss_rejects_bad_batch():
    head = small_head()
    out = head(torch.randn(2, 16, *GRID))
    with pytest.raises(ValueError, match="samples"):
        head.loss(out, make_batch([[CAR]], [[0]]))
    no_gt = make_batch([[], []], [[], []])
    no_gt.gt_boxes = None
    with pytest.raises(ValueError, match="ground truth"):
        head.loss(out, no_gt)
    with pytest.raises(ValueError, match="HeadOutput.box"):
        head.loss(HeadOutput(out.cls, out.box[:, :7], out.dir), make_batch([[], []], [[], []]))


# ---------------------------------------------------------------- post-processing

def flat_index(iy, ix, a):
    return (iy * GRID[1] + ix) * A + a


def hand_outputs():
    """Flat per-anchor logits [1, N, 3], residuals [1, N, 7], direction logits [1, N, 2]."""
    n = GRID[0] * GRID[1] * A
    cls = torch.full((1, n, 3), -10.0)
    box = torch.zeros(1, n, 7)
    dirs = torch.zeros(1, n, 2)
    dirs[..., 0] = 1.0
    return cls, box, dirs


def test_post_processing_hand_made():
    head = small_head()
    anchors, _ = head.anchors()
    cls, box, dirs = hand_outputs()
    car = flat_index(10, 7, 0)
    cls[0, car, 0] = 3.0
    # a duplicate of the car from the next cell, lower score: suppressed
    dup = flat_index(10, 8, 0)
    cls[0, dup, 0] = 2.0
    box[0, dup, 0] = -0.4 / math.hypot(3.9, 1.6)
    # a rotated cyclist anchor, direction bin 1 -> heading pi/2 + pi
    cyc = flat_index(3, 15, 5)
    cls[0, cyc, 2] = 1.0
    dirs[0, cyc] = torch.tensor([0.0, 1.0])
    # a pedestrian on the car's cell: other class, kept
    ped = flat_index(10, 7, 2)
    cls[0, ped, 1] = 0.5
    # below the score threshold (sigmoid(-2.3) = 0.091)
    low = flat_index(16, 2, 0)
    cls[0, low, 0] = -2.3
    out = HeadOutput(to_map(cls), to_map(box), to_map(dirs))
    det = head.predict(out)[0]
    assert isinstance(det, Detections)
    assert det.boxes.dtype == torch.float32 and det.labels.dtype == torch.int64
    assert det.labels.tolist() == [0, 2, 1]
    torch.testing.assert_close(det.scores, torch.sigmoid(torch.tensor([3.0, 1.0, 0.5])))
    torch.testing.assert_close(det.boxes[0], anchors[car])
    expected_cyc = anchors[cyc].clone()
    expected_cyc[6] = 1.5 * math.pi
    torch.testing.assert_close(det.boxes[1], expected_cyc)
    torch.testing.assert_close(det.boxes[2], anchors[ped])

    # same outputs: identical result (deterministic)
    again = head.predict(out)[0]
    assert torch.equal(again.boxes, det.boxes) and torch.equal(again.labels, det.labels)

    # max_detections and nms_pre
    assert small_head(max_detections=2).predict(out)[0].labels.tolist() == [0, 2]
    assert small_head(nms_pre=1).predict(out)[0].labels.tolist() == [0]
    # a looser score threshold lets the low box in
    assert small_head(score_threshold=0.05).predict(out)[0].labels.tolist() == [0, 2, 1, 0]
    # without suppression the duplicate survives
    assert small_head(nms_iou_threshold=1.0).predict(out)[0].labels.tolist() == [0, 0, 2, 1]


def test_post_processing_empty_and_direct_call():
    head = small_head()
    cls, box, dirs = hand_outputs()
    det = head.predict(HeadOutput(to_map(cls), to_map(box), to_map(dirs)))[0]
    assert det.boxes.shape == (0, 7) and det.scores.shape == (0,) and det.labels.shape == (0,)
    assert det.boxes.dtype == torch.float32 and det.labels.dtype == torch.int64
    det = decode_detections(torch.zeros(0, 3), torch.zeros(0, 7), torch.zeros(0, 2), torch.zeros(0, 7))
    assert len(det) == 0
    with pytest.raises(ValueError, match="dir_logits"):
        decode_detections(torch.zeros(4, 3), torch.zeros(4, 7), torch.zeros(3, 2), torch.zeros(4, 7))


# ---------------------------------------------------------------- learning

def test_head_fits_a_few_boxes(one_thread):
    torch.manual_seed(0)
    head = AnchorHead(64, RANGE, GRID)
    bev = torch.randn(1, 64, *GRID)
    batch = make_batch([[CAR, PED, CYC]], [[0, 1, 2]])
    opt = torch.optim.Adam(head.parameters(), lr=0.01)
    first = None
    for _ in range(300):
        losses = head.loss(head(bev), batch)
        first = losses["total"].item() if first is None else first
        opt.zero_grad()
        losses["total"].backward()
        opt.step()
    last = head.loss(head(bev), batch)["total"].item()
    assert last < first / 10, (first, last)
    # the three best detections are the three ground truths
    det = head.predict(head(bev))[0]
    assert sorted(det.labels[:3].tolist()) == [0, 1, 2]
    assert det.scores[:3].min() > 0.5
    gt = batch.gt_boxes[det.labels[:3]]
    boxes = det.boxes[:3]
    assert (boxes[:, :2] - gt[:, :2]).abs().max() < 0.2
    yaw_err = torch.remainder(boxes[:, 6] - gt[:, 6] + math.pi, 2 * math.pi) - math.pi
    assert yaw_err.abs().max() < 0.2


# ---------------------------------------------------------------- CUDA

@pytest.mark.cuda
def test_cuda_matches_cpu():
    torch.manual_seed(0)
    head = small_head()
    bev = torch.randn(2, 16, *GRID)
    batch = make_batch([[CAR, PED, CYC], []], [[0, 1, 2], []])
    out_cpu = head(bev)
    cpu = head.loss(out_cpu, batch)
    head_gpu = small_head()
    head_gpu.load_state_dict(head.state_dict())
    head_gpu = head_gpu.cuda()
    out_gpu = head_gpu(bev.cuda())
    gpu = head_gpu.loss(out_gpu, batch.to("cuda"))
    for key in cpu:
        torch.testing.assert_close(gpu[key].cpu(), cpu[key], atol=1e-4, rtol=1e-4)
    cls, box, dirs = hand_outputs()
    cls[0, flat_index(10, 7, 0), 0] = 3.0
    cls[0, flat_index(3, 15, 5), 2] = 1.0
    out = HeadOutput(to_map(cls), to_map(box), to_map(dirs))
    d_cpu = head.predict(out)[0]
    d_gpu = head_gpu.predict(HeadOutput(out.cls.cuda(), out.box.cuda(), out.dir.cuda()))[0]
    assert d_gpu.boxes.is_cuda
    torch.testing.assert_close(d_gpu.boxes.cpu(), d_cpu.boxes)
    assert torch.equal(d_gpu.labels.cpu(), d_cpu.labels)


def test_top_k_ties_go_to_lower_indices():
    from pointdistiller.detectors.post_processing import top_k_lowest_index

    values = torch.tensor([0.5, 0.9, 0.5, 0.7, 0.5, 0.5])
    assert top_k_lowest_index(values, 3).tolist() == [0, 1, 3]
    assert top_k_lowest_index(values, 4).tolist() == [0, 1, 2, 3]
    assert top_k_lowest_index(values, 1).tolist() == [1]
