"""Tests of the rotated BEV / 3D IoU and rotated NMS ops against the float64 reference."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pointdistiller.ops import iou3d
from pointdistiller.ops.reference import iou3d as ref

PAIRWISE = {
    "overlap_bev": (iou3d.boxes_overlap_bev, ref.boxes_overlap_bev),
    "iou_bev": (iou3d.boxes_iou_bev, ref.boxes_iou_bev),
    "iou_3d": (iou3d.boxes_iou_3d, ref.boxes_iou_3d),
}
SPECIAL_YAWS = [0.0, math.pi / 2, math.pi, -math.pi / 2, 3 * math.pi / 2, math.pi / 4, 1e-7]


def make_boxes(gen: torch.Generator, n: int, extent: float = 6.0, yaws=None) -> torch.Tensor:
    """[n, 7] float32 boxes with centres in [-extent, extent]^2, sizes in [0.3, 4.3]."""
    xy = (torch.rand(n, 2, generator=gen) * 2 - 1) * extent
    z = torch.rand(n, 1, generator=gen) * 2 - 1
    size = torch.rand(n, 3, generator=gen) * 4 + 0.3
    if yaws is None:
        yaw = (torch.rand(n, 1, generator=gen) * 2 - 1) * 2 * math.pi
    else:
        yaw = torch.tensor(yaws, dtype=torch.float32)[torch.randint(len(yaws), (n, 1),
                                                                     generator=gen)]
    return torch.cat([xy, z, size, yaw], dim=1).float()


def scenario(name: str, seed: int):
    """A pair of box sets exercising one geometric situation."""
    gen = torch.Generator().manual_seed(seed)
    if name == "random":
        return make_boxes(gen, 40), make_boxes(gen, 30)
    if name == "axis_yaws":
        return make_boxes(gen, 40, 3.0, SPECIAL_YAWS), make_boxes(gen, 30, 3.0, SPECIAL_YAWS)
    if name == "near_identical":
        a = make_boxes(gen, 30)
        b = a + torch.randn(a.shape, generator=gen) * 1e-3
        b[:, 3:6] = b[:, 3:6].abs()
        return a, b
    if name == "nested":
        a = make_boxes(gen, 30)
        b = a.clone()
        b[:, 3:6] *= 0.3
        b[:, 6] = torch.rand(30, generator=gen) * 2 * math.pi
        return a, b
    if name == "touching":
        a = make_boxes(gen, 30, yaws=[0.0, math.pi / 2, math.pi])
        b = a.clone()
        along_x = torch.cos(a[:, 6]).abs() > 0.5
        b[:, 0] += torch.where(along_x, a[:, 3], a[:, 4])  # edge to edge along x
        return a, b
    if name == "zero_size":
        a = make_boxes(gen, 20)
        b = a.clone()
        b[0::3, 3] = 0
        b[1::3, 4] = 0
        b[2::3, 3:5] = 0
        return torch.cat([a, b]), torch.cat([b, a])
    if name == "large_coordinates":
        a = make_boxes(gen, 30, 3.0)
        a[:, 0] += 65.0
        a[:, 1] -= 38.0
        b = a + torch.randn(a.shape, generator=gen) * 0.5
        b[:, 3:6] = b[:, 3:6].abs()
        return a, b
    raise KeyError(name)


SCENARIOS = ["random", "axis_yaws", "near_identical", "nested", "touching", "zero_size",
             "large_coordinates"]


@pytest.mark.parametrize("kind", sorted(PAIRWISE))
@pytest.mark.parametrize("name", SCENARIOS)
@pytest.mark.parametrize("seed", [0, 1])
def test_pairwise_matches_reference(kind, name, seed):
    ours_fn, ref_fn = PAIRWISE[kind]
    a, b = scenario(name, seed)
    ours = ours_fn(a, b)
    assert ours.shape == (a.shape[0], b.shape[0]) and ours.dtype == torch.float32
    expected = ref_fn(a, b)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-5, atol=1e-5)
    if name == "touching":
        assert float(ours.diagonal().abs().max()) < 1e-5


def test_known_values():
    boxes = torch.tensor([[0, 0, 0, 4, 2, 1, 0], [1, 0, 0, 4, 2, 1, 0],
                          [0, 0, 0, 1, 1, 1, 0], [0, 0, 0, 1, 1, 1, math.pi / 4],
                          [0, 0, 0.5, 4, 2, 1, 0]], dtype=torch.float32)
    iou = iou3d.boxes_iou_bev(boxes, boxes)
    assert iou[0, 1].item() == pytest.approx(6 / 10, abs=1e-6)
    octagon = 2 * (math.sqrt(2) - 1)  # unit square and itself turned by 45 degrees
    assert iou3d.boxes_overlap_bev(boxes, boxes)[2, 3].item() == pytest.approx(octagon, abs=1e-6)
    assert iou[2, 3].item() == pytest.approx(octagon / (2 - octagon), abs=1e-6)
    # same BEV box, half of the height shared: 4 / (8 + 8 - 4)
    assert iou3d.boxes_iou_3d(boxes, boxes)[0, 4].item() == pytest.approx(1 / 3, abs=1e-6)
    assert iou[0, 4].item() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("yaw", SPECIAL_YAWS + [0.3, -2.9, 100.0])
def test_identical_boxes_give_one(yaw):
    boxes = torch.tensor([[0, 0, 0, 4, 2, 1.5, yaw], [70.1, -39.7, -1.7, 0.8, 0.6, 1.8, yaw],
                          [10, 5, 1, 1e-3, 2e-3, 1e-3, yaw]], dtype=torch.float32)
    for fn in (iou3d.boxes_iou_bev, iou3d.boxes_iou_3d):
        diag = fn(boxes, boxes).diagonal()
        assert torch.allclose(diag, torch.ones(3), atol=1e-6, rtol=0), (fn.__name__, diag)


def test_zero_size_gives_zero_and_no_nan():
    boxes = torch.tensor([[0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 4, 0, 1, 0.2],
                          [0, 0, 0, 4, 2, 0, 0.0], [0, 0, 0, 4, 2, 1, 0.0]], dtype=torch.float32)
    for fn in (iou3d.boxes_iou_bev, iou3d.boxes_iou_3d, iou3d.boxes_overlap_bev):
        out = fn(boxes, boxes)
        assert not torch.isnan(out).any()
    assert iou3d.boxes_iou_bev(boxes, boxes)[:2].abs().max().item() == 0
    assert iou3d.boxes_iou_bev(boxes, boxes)[:, :2].abs().max().item() == 0
    assert iou3d.boxes_iou_3d(boxes, boxes)[2].abs().max().item() == 0  # zero height
    assert iou3d.boxes_iou_bev(boxes, boxes)[2, 3].item() == pytest.approx(1.0)


def test_non_contiguous_input():
    gen = torch.Generator().manual_seed(3)
    a = make_boxes(gen, 12)
    b = make_boxes(gen, 9)
    a_nc = a.t().contiguous().t()
    assert not a_nc.is_contiguous()
    torch.testing.assert_close(iou3d.boxes_iou_bev(a_nc, b[::2]), iou3d.boxes_iou_bev(a, b[::2]))
    scores = torch.rand(12, generator=gen)
    torch.testing.assert_close(iou3d.nms_bev(a_nc, scores, 0.1), iou3d.nms_bev(a, scores, 0.1))


# ---------------------------------------------------------------------------------- properties
coord = st.floats(-30, 30, allow_nan=False)
size = st.floats(0.05, 6, allow_nan=False)
angle = st.floats(-2 * math.pi, 2 * math.pi, allow_nan=False)
box_st = st.tuples(coord, coord, st.floats(-2, 2), size, size, size, angle)
near_pair = st.tuples(box_st, st.tuples(st.floats(-3, 3), st.floats(-3, 3)), size, size, angle)


def _pair(near):
    box, (dx, dy), l2, w2, yaw2 = near
    other = (box[0] + dx, box[1] + dy, box[2], l2, w2, box[5], yaw2)
    return torch.tensor([box], dtype=torch.float32), torch.tensor([other], dtype=torch.float32)


@settings(max_examples=150, deadline=None)
@given(near_pair)
def test_property_symmetric_and_bounded(near):
    a, b = _pair(near)
    for fn in (iou3d.boxes_iou_bev, iou3d.boxes_iou_3d, iou3d.boxes_overlap_bev):
        ab, ba = fn(a, b).item(), fn(b, a).item()
        assert ab == pytest.approx(ba, abs=1e-5)
        assert ab >= 0 and not math.isnan(ab)
    for fn in (iou3d.boxes_iou_bev, iou3d.boxes_iou_3d):
        assert 0.0 <= fn(a, b).item() <= 1.0
    # same z and h for both boxes: the 3D IoU equals the BEV IoU
    assert iou3d.boxes_iou_3d(a, b).item() == pytest.approx(iou3d.boxes_iou_bev(a, b).item(),
                                                            abs=1e-6)


@settings(max_examples=100, deadline=None)
@given(box_st)
def test_property_identical_is_one(box):
    a = torch.tensor([box], dtype=torch.float32)
    assert iou3d.boxes_iou_bev(a, a).item() == pytest.approx(1.0, abs=1e-6)
    assert iou3d.boxes_iou_3d(a, a).item() == pytest.approx(1.0, abs=1e-6)


@settings(max_examples=100, deadline=None)
@given(box_st, box_st, st.floats(0, 2 * math.pi))
def test_property_disjoint_is_zero(box_a, box_b, direction):
    a = torch.tensor([box_a], dtype=torch.float32)
    b = torch.tensor([box_b], dtype=torch.float32)
    # place b beyond the sum of the circumradii from a, in any direction
    reach = 0.5 * (math.hypot(box_a[3], box_a[4]) + math.hypot(box_b[3], box_b[4])) + 1e-3
    b[0, 0] = a[0, 0] + reach * math.cos(direction)
    b[0, 1] = a[0, 1] + reach * math.sin(direction)
    for fn in (iou3d.boxes_iou_bev, iou3d.boxes_iou_3d, iou3d.boxes_overlap_bev):
        assert fn(a, b).item() == 0.0


@settings(max_examples=100, deadline=None)
@given(near_pair, st.floats(-math.pi, math.pi), coord, coord)
def test_property_rigid_motion_invariance(near, theta, tx, ty):
    a, b = _pair(near)

    def move(boxes):
        c, s = math.cos(theta), math.sin(theta)
        out = boxes.clone().double()
        out[:, 0] = c * boxes[:, 0] - s * boxes[:, 1] + tx
        out[:, 1] = s * boxes[:, 0] + c * boxes[:, 1] + ty
        out[:, 6] = boxes[:, 6] + theta
        return out.float()

    for fn in (iou3d.boxes_iou_bev, iou3d.boxes_iou_3d):
        assert fn(move(a), move(b)).item() == pytest.approx(fn(a, b).item(), abs=2e-4)


# ----------------------------------------------------------------------------------------- NMS
def clustered_boxes(seed: int, n_clusters: int, per_cluster: int, jitter: float = 0.6):
    """Detections scattered around a few objects, as a detector emits them."""
    gen = torch.Generator().manual_seed(seed)
    centres = make_boxes(gen, n_clusters, extent=15.0)
    boxes = centres.repeat_interleave(per_cluster, dim=0)
    noise = torch.randn(boxes.shape, generator=gen)
    boxes[:, :3] += noise[:, :3] * jitter
    boxes[:, 3:6] *= (1 + 0.15 * noise[:, 3:6]).clamp(min=0.2)
    boxes[:, 6] += noise[:, 6] * 0.3
    return boxes.float()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("threshold", [0.0, 0.01, 0.1, 0.5, 0.9])
@pytest.mark.parametrize("tied_scores", [False, True])
def test_nms_matches_reference(seed, threshold, tied_scores):
    boxes = clustered_boxes(seed, 8, 12)
    gen = torch.Generator().manual_seed(100 + seed)
    scores = torch.rand(boxes.shape[0], generator=gen)
    if tied_scores:
        scores = (scores * 3).floor() / 3  # three score levels: ordering relies on stability
    keep = iou3d.nms_bev(boxes, scores, threshold)
    assert keep.dtype == torch.int64 and keep.dim() == 1
    np.testing.assert_array_equal(keep.numpy(), ref.nms_bev(boxes, scores, threshold))


@pytest.mark.parametrize("pre,post", [(None, 5), (30, None), (30, 7), (0, None), (None, 0),
                                      (1000, 1000), (1, 1)])
def test_nms_pre_post_max_size(pre, post):
    boxes = clustered_boxes(4, 6, 10)
    scores = torch.rand(boxes.shape[0], generator=torch.Generator().manual_seed(4))
    keep = iou3d.nms_bev(boxes, scores, 0.2, pre_max_size=pre, post_max_size=post)
    expected = ref.nms_bev(boxes, scores, 0.2, pre_max_size=pre, post_max_size=post)
    np.testing.assert_array_equal(keep.numpy(), expected)
    if post is not None:
        assert keep.numel() <= post


def test_nms_all_equal_scores_keeps_lower_index_first():
    boxes = torch.tensor([[0, 0, 0, 4, 2, 1, 0], [0.1, 0, 0, 4, 2, 1, 0],
                          [20, 0, 0, 4, 2, 1, 0], [20, 0.1, 0, 4, 2, 1, 0]])
    keep = iou3d.nms_bev(boxes, torch.ones(4), 0.5)
    assert keep.tolist() == [0, 2]
    assert iou3d.nms_bev(boxes, torch.ones(4), 1.0).tolist() == [0, 1, 2, 3]


def test_nms_threshold_is_strict():
    boxes = torch.tensor([[0, 0, 0, 4, 2, 1, 0], [1, 0, 0, 4, 2, 1, 0]],
                         dtype=torch.float32)  # IoU exactly 0.6
    scores = torch.tensor([0.9, 0.8])
    assert iou3d.nms_bev(boxes, scores, 0.6).tolist() == [0, 1]
    assert iou3d.nms_bev(boxes, scores, 0.59).tolist() == [0]


# -------------------------------------------------------------------------------- empty / bad
@pytest.mark.parametrize("n,m", [(0, 5), (5, 0), (0, 0)])
def test_pairwise_empty(n, m):
    a, b = torch.zeros(n, 7), torch.zeros(m, 7)
    for fn, _ in PAIRWISE.values():
        out = fn(a, b)
        assert out.shape == (n, m) and out.dtype == torch.float32


def test_nms_empty():
    keep = iou3d.nms_bev(torch.zeros(0, 7), torch.zeros(0), 0.1, 10, 10)
    assert keep.shape == (0,) and keep.dtype == torch.int64


GOOD = torch.tensor([[0, 0, 0, 4, 2, 1, 0.0]])


@pytest.mark.parametrize("fn", [f for f, _ in PAIRWISE.values()])
@pytest.mark.parametrize("bad,error,match", [
    (torch.zeros(3, 6), ValueError, r"boxes_a must have shape \[\*, 7\]"),
    (torch.zeros(7), ValueError, "boxes_a must have shape"),
    (torch.zeros(3, 7, dtype=torch.float64), TypeError, "boxes_a must be float32"),
    (torch.zeros(3, 7, dtype=torch.int32), TypeError, "boxes_a must be float32"),
    (GOOD.clone().index_fill_(1, torch.tensor([0]), float("nan")), ValueError, "boxes_a contains"),
    (GOOD.clone().index_fill_(1, torch.tensor([6]), float("inf")), ValueError, "boxes_a contains"),
    (GOOD.clone().index_fill_(1, torch.tensor([4]), -1.0), ValueError, "boxes_a has negative"),
    ([[0, 0, 0, 1, 1, 1, 0]], TypeError, "boxes_a must be a torch.Tensor"),
])
def test_pairwise_bad_input(fn, bad, error, match):
    with pytest.raises(error, match=match):
        fn(bad, GOOD)
    with pytest.raises(error, match=match.replace("boxes_a", "boxes_b")):
        fn(GOOD, bad)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(boxes=torch.zeros(2, 8)), ValueError, "boxes must have shape"),
    (dict(scores=torch.zeros(3)), ValueError, "scores must have shape"),
    (dict(scores=torch.zeros(2, 1)), ValueError, "scores must have shape"),
    (dict(scores=torch.zeros(2, dtype=torch.float64)), TypeError, "scores must be float32"),
    (dict(scores=torch.tensor([0.5, float("nan")])), ValueError, "scores contains NaN"),
    (dict(scores=[0.1, 0.2]), TypeError, "scores must be a torch.Tensor"),
    (dict(iou_threshold=-0.1), ValueError, "iou_threshold must be >= 0"),
    (dict(iou_threshold=float("nan")), ValueError, "iou_threshold must be >= 0"),
    (dict(iou_threshold="0.1"), TypeError, "iou_threshold must be a float"),
    (dict(pre_max_size=-1), ValueError, "pre_max_size must be >= 0"),
    (dict(pre_max_size=2.0), TypeError, "pre_max_size must be an int"),
    (dict(post_max_size=True), TypeError, "post_max_size must be an int"),
    (dict(post_max_size=-3), ValueError, "post_max_size must be >= 0"),
])
def test_nms_bad_input(kwargs, error, match):
    args = dict(boxes=GOOD.repeat(2, 1), scores=torch.tensor([0.5, 0.4]), iou_threshold=0.1)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        iou3d.nms_bev(**args)


def test_native_op_checks_arguments():
    """The dispatcher ops check shapes and dtypes themselves (callers may bypass the wrappers)."""
    ops = torch.ops.pointdistiller
    with pytest.raises(ValueError, match="boxes_b must have shape"):
        ops.boxes_iou_bev(GOOD, torch.zeros(2, 5))
    # the raw op raises ValueError for every argument error (ops/csrc/common/check.h)
    with pytest.raises(ValueError, match="boxes_a must be float32"):
        ops.boxes_iou_3d(GOOD.double(), GOOD)
    with pytest.raises(ValueError, match="iou_threshold must be >= 0"):
        ops.nms_bev(GOOD, torch.ones(1), -1.0)
    with pytest.raises(ValueError, match="scores must not contain NaN"):
        ops.nms_bev(GOOD, torch.tensor([float("nan")]), 0.1)


# ------------------------------------------------------------------------------- fake kernels
def test_fake_kernels():
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    with FakeTensorMode(shape_env=ShapeEnv()):
        a, b = torch.empty(11, 7), torch.empty(4, 7)
        for fn, _ in PAIRWISE.values():
            out = fn(a, b)
            assert out.shape == (11, 4) and out.dtype == torch.float32
        keep = torch.ops.pointdistiller.nms_bev(a, torch.empty(11), 0.1, None, 5)
        assert keep.dim() == 1 and keep.dtype == torch.int64
    meta = torch.empty(3, 7, device="meta")
    assert iou3d.boxes_iou_3d(meta, meta[:2]).shape == (3, 2)


def test_opcheck():
    gen = torch.Generator().manual_seed(5)
    a, b = make_boxes(gen, 6), make_boxes(gen, 4)
    utils = ("test_schema", "test_faketensor")
    for name in ("boxes_overlap_bev", "boxes_iou_bev", "boxes_iou_3d"):
        torch.library.opcheck(getattr(torch.ops.pointdistiller, name), (a, b), test_utils=utils)
    torch.library.opcheck(torch.ops.pointdistiller.nms_bev, (a, torch.rand(6, generator=gen), 0.1),
                          test_utils=utils)


# --------------------------------------------------------------------------------------- CUDA
@pytest.mark.cuda
@pytest.mark.parametrize("name", SCENARIOS)
def test_cuda_pairwise_matches_cpu(name):
    a, b = scenario(name, 7)
    for fn, _ in PAIRWISE.values():
        torch.testing.assert_close(fn(a.cuda(), b.cuda()).cpu(), fn(a, b), atol=1e-5, rtol=1e-5)


@pytest.mark.cuda
def test_cuda_pairwise_large_matches_cpu():
    gen = torch.Generator().manual_seed(8)
    a, b = make_boxes(gen, 3000, extent=20.0), make_boxes(gen, 70, extent=20.0)
    torch.testing.assert_close(iou3d.boxes_iou_bev(a.cuda(), b.cuda()).cpu(),
                               iou3d.boxes_iou_bev(a, b), atol=1e-5, rtol=1e-5)


@pytest.mark.cuda
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("threshold", [0.0, 0.01, 0.1, 0.7])
@pytest.mark.parametrize("pre,post", [(None, None), (500, 83), (130, None)])
def test_cuda_nms_identical_to_cpu(seed, threshold, pre, post):
    boxes = clustered_boxes(seed, 40, 25, jitter=1.0)  # 1000 boxes: many 64-box blocks
    scores = torch.rand(boxes.shape[0], generator=torch.Generator().manual_seed(seed))
    scores[::7] = scores[0]  # ties
    keep_gpu = iou3d.nms_bev(boxes.cuda(), scores.cuda(), threshold, pre, post)
    assert keep_gpu.is_cuda and keep_gpu.dtype == torch.int64
    assert torch.equal(keep_gpu.cpu(), iou3d.nms_bev(boxes, scores, threshold, pre, post))


@pytest.mark.cuda
def test_cuda_empty_and_device_mismatch():
    assert iou3d.boxes_iou_bev(torch.zeros(0, 7).cuda(), GOOD.cuda()).shape == (0, 1)
    assert iou3d.nms_bev(torch.zeros(0, 7).cuda(), torch.zeros(0).cuda(), 0.1).shape == (0,)
    with pytest.raises(ValueError, match="same device"):
        iou3d.boxes_iou_bev(GOOD.cuda(), GOOD)
    with pytest.raises(ValueError, match="scores must be on the device of boxes"):
        iou3d.nms_bev(GOOD.cuda(), torch.ones(1), 0.1)
