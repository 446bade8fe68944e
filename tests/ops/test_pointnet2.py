"""PointNet++ ops against the slow references of ops/reference/pointnet2.py (bit for bit where the
contract fixes the bits), on random, tied and real KITTI points, ragged batches, gradients, errors,
fake kernels, and CUDA == CPU (marked cuda)."""
import os

import numpy as np
import pytest
import torch

from pointdistiller.ops import pointnet2 as P
from pointdistiller.ops.reference import pointnet2 as ref

pytestmark = pytest.mark.usefixtures("one_thread")


def cloud(sizes, seed=0, spread=10.0, duplicates=0):
    gen = torch.Generator().manual_seed(seed)
    parts = []
    for n in sizes:
        pts = torch.rand(n, 3, generator=gen) * spread
        if duplicates and n > 1:      # exact copies of earlier rows: ties everywhere
            k = min(duplicates, n - 1)
            pts[n - k:] = pts[:k].clone()
        parts.append(pts)
    offsets = torch.tensor([0] + list(sizes)).cumsum(0)
    return torch.cat(parts), offsets


def kitti_points(kitti_sample, n=16384):
    path = os.path.join(kitti_sample, "training", "velodyne", "000000.bin")
    pts = np.fromfile(path, np.float32).reshape(-1, 4)[:, :3]
    return torch.from_numpy(np.ascontiguousarray(pts[pts[:, 0] > 0][:n]))


# ------------------------------------------------------------------------------------------------
# furthest point sampling
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sizes,counts", [([1], [1]), ([50], [50]), ([300, 1000, 7], [64, 200, 7]),
                                          ([2000], [0]), ([500, 0, 600], [100, 0, 600])])
@pytest.mark.parametrize("duplicates", [0, 40])
def test_fps_equals_reference(sizes, counts, duplicates):
    points, offsets = cloud(sizes, seed=len(sizes), duplicates=duplicates)
    counts = torch.tensor(counts)
    got = P.furthest_point_sample(points, offsets, counts)
    assert torch.equal(got, ref.furthest_point_sample(points, offsets, counts))
    starts = torch.repeat_interleave(offsets[:-1], counts)
    first = torch.cat([torch.tensor([0]), counts.cumsum(0)[:-1]])[counts > 0]
    assert torch.equal(got[first], starts[first])          # each sample starts at its first row


def test_fps_on_a_kitti_frame(kitti_sample):
    points = kitti_points(kitti_sample, 4096)
    offsets, counts = torch.tensor([0, len(points)]), torch.tensor([512])
    got = P.furthest_point_sample(points, offsets, counts)
    assert torch.equal(got, ref.furthest_point_sample(points, offsets, counts))
    assert len(set(got.tolist())) == 512


def test_fps_collinear_and_tied_points():
    # points on a line at integer positions: distances tie at every step
    points = torch.zeros(41, 3)
    points[:, 0] = torch.arange(41.0)
    offsets, counts = torch.tensor([0, 41]), torch.tensor([41])
    got = P.furthest_point_sample(points, offsets, counts)
    assert got[:5].tolist() == [0, 40, 20, 10, 30]       # the lower row wins every tie
    assert torch.equal(got, ref.furthest_point_sample(points, offsets, counts))


# ------------------------------------------------------------------------------------------------
# ball query
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("radius,nsample", [(0.3, 16), (1.0, 32), (3.0, 8), (1e-4, 4), (50.0, 5)])
def test_ball_query_equals_reference(radius, nsample):
    points, offsets = cloud([400, 900], seed=3, duplicates=30)
    centers = torch.cat([points[10:60], points[500:580], torch.rand(5, 3) * 10])
    center_offsets = torch.tensor([0, 50, 135])
    got = P.ball_query(points, offsets, centers, center_offsets, radius, nsample)
    exp = ref.ball_query(points, offsets, centers, center_offsets, radius, nsample)
    assert torch.equal(got[0], exp[0]) and torch.equal(got[1], exp[1])
    for c in range(50, 135):                 # centers of sample 1 only see its rows
        assert (got[0][c] >= 400).all()


def test_ball_query_boundary_and_padding():
    points = torch.tensor([[0.0, 0, 0], [0.5, 0, 0], [0.2, 0, 0], [9.0, 9, 9], [0.1, 0, 0]])
    offsets = torch.tensor([0, 5])
    idx, count = P.ball_query(points, offsets, torch.tensor([[0.0, 0, 0], [5.0, 5, 5]]),
                              torch.tensor([0, 2]), 0.5, 4)
    # row 1 lies at exactly the radius: not inside (d2 < r2); rows in index order, padded
    assert idx.tolist() == [[0, 2, 4, 0], [0, 0, 0, 0]] and count.tolist() == [3, 0]


def test_ball_query_centers_far_outside_the_cloud():
    # centers beyond the grid (and beyond int64 cell numbers) find nothing, without a crash
    points, offsets = cloud([300], seed=4)
    centers = torch.tensor([[1e30, 0, 0], [-1e30, -1e30, 1e30], [0.0, 0, 1e6], [1.0, 1, 1]])
    got = P.ball_query(points, offsets, centers, torch.tensor([0, 4]), 2.0, 8)
    exp = ref.ball_query(points, offsets, centers, torch.tensor([0, 4]), 2.0, 8)
    assert torch.equal(got[0], exp[0]) and torch.equal(got[1], exp[1])
    assert got[1][:3].tolist() == [0, 0, 0]


def test_ball_query_non_finite_and_far_points():
    # NaN and inf rows are never inside; a row at 1e30 stretches the grid without overflowing it
    points, offsets = cloud([200], seed=6)
    points[[3, 50, 120]] = torch.tensor([[float("nan"), 1, 1], [float("inf"), 0, 0], [1e30, 1e30, 0]])
    centers = torch.cat([points[:20], torch.tensor([[1e30, 1e30, 0]])])
    for radius in (0.8, 1e-3):
        got = P.ball_query(points, offsets, centers, torch.tensor([0, 21]), radius, 16)
        exp = ref.ball_query(points, offsets, centers, torch.tensor([0, 21]), radius, 16)
        assert torch.equal(got[0], exp[0]) and torch.equal(got[1], exp[1])
        assert 3 not in got[0][:3].tolist() and got[0][20, 0].item() == 120


# ------------------------------------------------------------------------------------------------
# grouping and interpolation
# ------------------------------------------------------------------------------------------------
def test_group_points_forward_backward():
    gen = torch.Generator().manual_seed(5)
    features = torch.randn(70, 6, generator=gen, requires_grad=True)
    idx = torch.randint(0, 70, (40, 9), generator=gen)
    out = P.group_points(features, idx)
    assert torch.equal(out, ref.group_points(features.detach(), idx))
    grad = torch.randn(out.shape, generator=gen)
    out.backward(grad)
    expected = torch.zeros(70, 6).index_add_(0, idx.reshape(-1),
                                             grad.permute(0, 2, 1).reshape(-1, 6))
    torch.testing.assert_close(features.grad, expected, rtol=1e-6, atol=1e-6)
    first = features.grad.clone()
    features.grad = None
    P.group_points(features, idx).backward(grad)
    assert torch.equal(features.grad, first)          # the CPU backward is deterministic


def test_three_nn_and_interpolate():
    unknown, u_off = cloud([200, 150], seed=7)
    known, k_off = cloud([30, 20], seed=8, duplicates=5)
    dist, idx = P.three_nn(unknown, u_off, known, k_off)
    for n in range(len(unknown)):
        b = int(n >= 200)
        rows = torch.arange(int(k_off[b]), int(k_off[b + 1]))
        d = ref._d2(known[rows], unknown[n])
        order = sorted(range(len(rows)), key=lambda i: (float(d[i]), i))[:3]
        assert idx[n].tolist() == rows[order].tolist()
        assert torch.equal(dist[n], d[order].sqrt())        # distances, not squared
    weight = 1.0 / (dist + 1e-8)
    weight = weight / weight.sum(dim=1, keepdim=True)
    features = torch.randn(50, 4, requires_grad=True)
    out = P.three_interpolate(features, idx, weight)
    assert torch.equal(out, ref.three_interpolate(features.detach(), idx, weight))
    grad = torch.randn(out.shape)
    out.backward(grad)
    expected = torch.zeros(50, 4).index_add_(0, idx.reshape(-1),
                                             (weight[..., None] * grad[:, None, :]).reshape(-1, 4))
    torch.testing.assert_close(features.grad, expected, rtol=1e-5, atol=1e-6)


def test_opcheck_of_the_differentiable_ops():
    features = torch.randn(20, 3, requires_grad=True)
    idx = torch.randint(0, 20, (6, 4))
    torch.library.opcheck(torch.ops.pointdistiller.group_points.default, (features, idx))
    weight = torch.rand(6, 3)
    torch.library.opcheck(torch.ops.pointdistiller.three_interpolate.default,
                          (features, idx[:, :3].contiguous(), weight))


def test_opcheck_of_the_index_ops():
    """Schema and fake kernels of the non-differentiable ops against their CPU kernels (shapes,
    dtypes, devices; FPS's output length is data-dependent)."""
    from pointdistiller.ops._loader import op

    op("furthest_point_sample")      # loads the library and registers the fake kernels
    utils = ("test_schema", "test_faketensor")
    points, offsets = cloud([300, 0, 120], seed=3)
    torch.library.opcheck(torch.ops.pointdistiller.furthest_point_sample.default,
                          (points, offsets, torch.tensor([40, 0, 120])), test_utils=utils)
    centers, c_off = points[[0, 5, 9, 301, 302]].contiguous(), torch.tensor([0, 3, 3, 5])
    torch.library.opcheck(torch.ops.pointdistiller.ball_query.default,
                          (points, offsets, centers, c_off, 1.5, 16), test_utils=utils)
    boxes = torch.cat([_boxes(4, 5), _boxes(5, 3)])
    b_off = torch.tensor([0, 5, 5, 8])
    torch.library.opcheck(torch.ops.pointdistiller.points_in_boxes.default,
                          (points, offsets, boxes, b_off), test_utils=utils)
    features = torch.randn(len(points), 6)
    torch.library.opcheck(torch.ops.pointdistiller.roipoint_pool3d.default,
                          (points, features, offsets, boxes, b_off, 24), test_utils=utils)


# ------------------------------------------------------------------------------------------------
# boxes
# ------------------------------------------------------------------------------------------------
def _boxes(seed, n):
    gen = torch.Generator().manual_seed(seed)
    return torch.cat([torch.rand(n, 3, generator=gen) * 10, 0.5 + torch.rand(n, 3, generator=gen) * 3,
                      (torch.rand(n, 1, generator=gen) - 0.5) * 6.3], dim=1)


def test_points_in_boxes_equals_reference():
    points, offsets = cloud([3000, 2000], seed=11)
    boxes = torch.cat([_boxes(1, 12), _boxes(2, 7)])
    box_offsets = torch.tensor([0, 12, 19])
    got = P.points_in_boxes(points, offsets, boxes, box_offsets)
    assert torch.equal(got, ref.points_in_boxes(points, offsets, boxes, box_offsets))
    assert (got[:3000] < 12).all() and ((got[3000:] == -1) | (got[3000:] >= 12)).all()
    assert (got >= 0).sum() > 100


def test_points_on_box_borders_are_inside():
    box = torch.tensor([[1.0, 2.0, 0.0, 4.0, 2.0, 2.0, 0.0]])
    points = torch.tensor([[3.0, 2.0, 0.0], [1.0, 3.0, 1.0], [3.001, 2.0, 0.0], [1.0, 2.0, -1.5]])
    got = P.points_in_boxes(points, torch.tensor([0, 4]), box, torch.tensor([0, 1]))
    assert got.tolist() == [0, 0, -1, -1]


def test_roipoint_pool3d_equals_reference():
    points, offsets = cloud([800, 600], seed=13)
    features = torch.randn(len(points), 5)
    boxes = torch.cat([_boxes(3, 10), _boxes(4, 6), torch.tensor([[50.0, 50, 50, 1, 1, 1, 0]])])
    box_offsets = torch.tensor([0, 10, 17])
    pooled, empty = P.roipoint_pool3d(points, features, offsets, boxes, box_offsets, 64)
    exp_pooled, exp_empty = ref.roipoint_pool3d(points, features, offsets, boxes, box_offsets, 64)
    assert torch.equal(pooled, exp_pooled) and torch.equal(empty, exp_empty)
    assert empty[16] and (pooled[16] == 0).all()                       # far away: empty
    assert (~empty[:16]).sum() >= 8


# ------------------------------------------------------------------------------------------------
# errors and empty inputs
# ------------------------------------------------------------------------------------------------
def test_errors_name_the_argument():
    points, offsets = cloud([10, 5])
    with pytest.raises(ValueError, match=r"counts\[1\] = 6 but sample 1 has 5 points"):
        P.furthest_point_sample(points, offsets, torch.tensor([3, 6]))
    with pytest.raises(ValueError, match="offsets must start at 0 and end at 15"):
        P.furthest_point_sample(points, torch.tensor([0, 10, 14]), torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="points must be float32"):
        P.furthest_point_sample(points.double(), offsets, torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="radius must be finite and > 0"):
        P.ball_query(points, offsets, points, offsets, 0.0, 4)
    with pytest.raises(ValueError, match="sample 1 has centers but no points"):
        P.ball_query(points[:10], torch.tensor([0, 10, 10]), points, offsets, 1.0, 4)
    with pytest.raises(ValueError, match=r"idx holds row 15 outside \[0, 15\)"):
        P.group_points(torch.randn(15, 2), torch.tensor([[0, 15]]))
    with pytest.raises(TypeError, match="nsample must be an int"):
        P.ball_query(points, offsets, points, offsets, 1.0, 4.0)


def test_empty_inputs():
    points = torch.zeros(0, 3)
    none = torch.tensor([0, 0])
    assert P.furthest_point_sample(points, none, torch.tensor([0])).shape == (0,)
    idx, count = P.ball_query(points, none, points, none, 1.0, 3)
    assert idx.shape == (0, 3) and count.shape == (0,)
    assert P.points_in_boxes(points, none, torch.zeros(0, 7), none).shape == (0,)
    pooled, empty = P.roipoint_pool3d(points, torch.zeros(0, 2), none, torch.zeros(0, 7), none, 4)
    assert pooled.shape == (0, 4, 5) and empty.shape == (0,)


# ------------------------------------------------------------------------------------------------
# CUDA
# ------------------------------------------------------------------------------------------------
@pytest.mark.cuda
def test_cuda_equals_cpu(kitti_sample):
    points = kitti_points(kitti_sample, 6000)
    offsets = torch.tensor([0, 4000, 6000])
    counts = torch.tensor([512, 256])
    cuda = [t.cuda() for t in (points, offsets, counts)]
    assert torch.equal(P.furthest_point_sample(*cuda).cpu(), P.furthest_point_sample(points, offsets, counts))
    centers = points[P.furthest_point_sample(points, offsets, counts)]
    c_off = torch.tensor([0, 512, 768])
    for radius, nsample in ((0.5, 32), (2.0, 16)):
        a = P.ball_query(points, offsets, centers, c_off, radius, nsample)
        b = P.ball_query(points.cuda(), offsets.cuda(), centers.cuda(), c_off.cuda(), radius, nsample)
        assert torch.equal(a[0], b[0].cpu()) and torch.equal(a[1], b[1].cpu())
    features = torch.randn(len(points), 8)
    idx = a[0]
    torch.testing.assert_close(P.group_points(features.cuda(), idx.cuda()).cpu(),
                               P.group_points(features, idx))
    boxes = torch.cat([points[:20], torch.full((20, 3), 3.0), torch.zeros(20, 1)], dim=1)
    b_off = torch.tensor([0, 12, 20])
    assert torch.equal(P.points_in_boxes(points, offsets, boxes, b_off),
                       P.points_in_boxes(points.cuda(), offsets.cuda(), boxes.cuda(), b_off.cuda()).cpu())
    pooled, empty = P.roipoint_pool3d(points, features, offsets, boxes, b_off, 128)
    g_pooled, g_empty = P.roipoint_pool3d(points.cuda(), features.cuda(), offsets.cuda(), boxes.cuda(),
                                          b_off.cuda(), 128)
    assert torch.equal(g_pooled.cpu(), pooled) and torch.equal(g_empty.cpu(), empty)
    _, nn = P.three_nn(points[:3000], torch.tensor([0, 3000]), centers[:512], torch.tensor([0, 512]))
    w = torch.rand(3000, 3)
    torch.testing.assert_close(
        P.three_interpolate(features[:512].cuda(), nn.cuda(), w.cuda()).cpu(),
        P.three_interpolate(features[:512], nn, w))
