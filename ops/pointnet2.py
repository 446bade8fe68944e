"""PointNet++ ops of ragged batches (PointRCNN): furthest point sampling, ball query, grouping,
three-nearest-neighbour interpolation, points in boxes and RoI point pooling.

Every op takes concatenated rows plus int64 ``offsets`` ``[B + 1]`` per sample (``offsets[0] == 0``;
sample ``b`` owns rows ``offsets[b]:offsets[b + 1]``) and returns global row indices. The full
contract (orderings, ties, the float32 distance) is in ``ops/csrc/pointnet2/pointnet2.h``; CPU and
CUDA return the same indices on every run.
"""
from typing import Tuple

import torch
from torch import Tensor

from pointdistiller.ops._loader import after_load, op
from pointdistiller.ops.knn_search import knn

__all__ = ["furthest_point_sample", "ball_query", "group_points", "three_nn", "three_interpolate",
           "points_in_boxes", "roipoint_pool3d"]


def _check_tensor(name: str, t) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")


def _int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    return value


def furthest_point_sample(points: Tensor, offsets: Tensor, counts: Tensor) -> Tensor:
    """Distance-based furthest point sampling per sample.

    Args:
        points: ``[N, 3]`` float32.
        offsets: ``[B + 1]`` int64 offsets of ``points``.
        counts: ``[B]`` int64, picks per sample (at most its points).

    Returns:
        ``[sum(counts)]`` int64 global rows, sample-major, in pick order: the sample's first row,
        then each time the row farthest (largest min squared distance) from the picks so far, ties
        to the lowest row.
    """
    for name, t in (("points", points), ("offsets", offsets), ("counts", counts)):
        _check_tensor(name, t)
    return op("furthest_point_sample")(points, offsets, counts)


def ball_query(points: Tensor, offsets: Tensor, centers: Tensor, center_offsets: Tensor,
               radius: float, nsample: int) -> Tuple[Tensor, Tensor]:
    """The first ``nsample`` rows (in index order) within ``radius`` of each center.

    Args:
        points: ``[N, 3]`` float32; offsets: ``[B + 1]`` int64.
        centers: ``[M, 3]`` float32; center_offsets: ``[B + 1]`` int64 (a center of sample ``b``
            only sees the rows of sample ``b``).
        radius: metres; a row is within it when its float32 squared distance is ``< radius^2``.
        nsample: rows per center.

    Returns:
        ``idx [M, nsample]`` int64 global rows (the slots after the found rows repeat the first one
        found; a center that found none gets its sample's first row everywhere) and
        ``count [M]`` int64, rows found (at most ``nsample``).
    """
    for name, t in (("points", points), ("offsets", offsets), ("centers", centers),
                    ("center_offsets", center_offsets)):
        _check_tensor(name, t)
    if isinstance(radius, bool) or not isinstance(radius, (int, float)):
        raise TypeError(f"radius must be a float, got {type(radius).__name__}")
    return op("ball_query")(points, offsets, centers, center_offsets, float(radius),
                            _int("nsample", nsample))


def group_points(features: Tensor, idx: Tensor) -> Tensor:
    """Gathers rows: ``out[m, c, k] = features[idx[m, k], c]``, differentiable in ``features``.

    Args:
        features: ``[N, C]`` float32.
        idx: ``[M, K]`` int64 rows of ``features``.

    Returns:
        ``[M, C, K]`` float32 (channels before the group, ready for 1x1 convolutions).
    """
    _check_tensor("features", features)
    _check_tensor("idx", idx)
    return op("group_points")(features, idx)


def three_nn(unknown: Tensor, unknown_offsets: Tensor, known: Tensor,
             known_offsets: Tensor) -> Tuple[Tensor, Tensor]:
    """The three nearest known rows of each unknown row (same sample): ``(dist [N, 3] float32
    Euclidean distances, ascending, idx [N, 3] int64)``, ties to the lower row. The distances are
    not squared, as in PointNet++'s ``three_nn`` and OpenPCDet's / mmcv's wrappers (feature
    propagation weights by ``1 / (dist + 1e-8)``); :func:`pointdistiller.ops.knn` with ``k = 3``
    underneath (which returns squared distances)."""
    idx, dist2 = knn(unknown, known, 3, query_offsets=unknown_offsets, ref_offsets=known_offsets)
    return dist2.sqrt(), idx


def three_interpolate(features: Tensor, idx: Tensor, weight: Tensor) -> Tensor:
    """``out[n] = w[n, 0] f[idx[n, 0]] + w[n, 1] f[idx[n, 1]] + w[n, 2] f[idx[n, 2]]``,
    differentiable in ``features``.

    Args:
        features: ``[M, C]`` float32 (the known rows' features).
        idx: ``[N, 3]`` int64 rows of ``features``; weight: ``[N, 3]`` float32.

    Returns:
        ``[N, C]`` float32.
    """
    for name, t in (("features", features), ("idx", idx), ("weight", weight)):
        _check_tensor(name, t)
    return op("three_interpolate")(features, idx, weight)


def points_in_boxes(points: Tensor, offsets: Tensor, boxes: Tensor, box_offsets: Tensor) -> Tensor:
    """The box of each point: ``[N]`` int64, the lowest global index of a box of the point's sample
    that contains it (borders included), -1 if none.

    Args:
        points: ``[N, 3]`` float32; offsets: ``[B + 1]`` int64.
        boxes: ``[R, 7]`` float32 LiDAR boxes ``(x, y, z_centre, l, w, h, yaw)``; box_offsets:
            ``[B + 1]`` int64.
    """
    for name, t in (("points", points), ("offsets", offsets), ("boxes", boxes),
                    ("box_offsets", box_offsets)):
        _check_tensor(name, t)
    return op("points_in_boxes")(points, offsets, boxes, box_offsets)


def roipoint_pool3d(points: Tensor, features: Tensor, offsets: Tensor, boxes: Tensor,
                    box_offsets: Tensor, num_sampled: int) -> Tuple[Tensor, Tensor]:
    """The points of each box (PointRCNN's RoI pooling).

    Args:
        points: ``[N, 3]`` float32; features: ``[N, C]`` float32; offsets: ``[B + 1]`` int64.
        boxes: ``[R, 7]`` float32 LiDAR boxes; box_offsets: ``[B + 1]`` int64.
        num_sampled: slots per box.

    Returns:
        ``pooled [R, num_sampled, 3 + C]`` float32 (xyz, then the features, of the box's rows in
        index order, repeated cyclically when fewer; zeros for an empty box) and ``empty [R]``
        bool.
    """
    for name, t in (("points", points), ("features", features), ("offsets", offsets),
                    ("boxes", boxes), ("box_offsets", box_offsets)):
        _check_tensor(name, t)
    return op("roipoint_pool3d")(points, features, offsets, boxes, box_offsets,
                                 _int("num_sampled", num_sampled))


@after_load("furthest_point_sample")
def _register() -> None:
    lib = "pointdistiller::"

    @torch.library.register_fake(lib + "furthest_point_sample")
    def _fps(points, offsets, counts):
        ctx = torch.library.get_ctx()
        return points.new_empty((ctx.new_dynamic_size(),), dtype=torch.int64)

    @torch.library.register_fake(lib + "ball_query")
    def _ball(points, offsets, centers, center_offsets, radius, nsample):
        m = centers.shape[0]
        return (centers.new_empty((m, nsample), dtype=torch.int64),
                centers.new_empty((m,), dtype=torch.int64))

    @torch.library.register_fake(lib + "group_points")
    def _group(features, idx):
        return features.new_empty((idx.shape[0], features.shape[1], idx.shape[1]))

    @torch.library.register_fake(lib + "group_points_backward")
    def _group_bw(grad, idx, num_rows):
        return grad.new_empty((num_rows, grad.shape[1]))

    @torch.library.register_fake(lib + "three_interpolate")
    def _interp(features, idx, weight):
        return features.new_empty((idx.shape[0], features.shape[1]))

    @torch.library.register_fake(lib + "three_interpolate_backward")
    def _interp_bw(grad, idx, weight, num_rows):
        return grad.new_empty((num_rows, grad.shape[1]))

    @torch.library.register_fake(lib + "points_in_boxes")
    def _pib(points, offsets, boxes, box_offsets):
        return points.new_empty((points.shape[0],), dtype=torch.int64)

    @torch.library.register_fake(lib + "roipoint_pool3d")
    def _pool(points, features, offsets, boxes, box_offsets, num_sampled):
        r = boxes.shape[0]
        return (points.new_empty((r, num_sampled, 3 + features.shape[1])),
                points.new_empty((r,), dtype=torch.bool))

    def group_setup(ctx, inputs, output):
        features, idx = inputs
        ctx.save_for_backward(idx)
        ctx.num_rows = features.shape[0]

    def group_backward(ctx, grad):
        (idx,) = ctx.saved_tensors
        grad_features = None
        if ctx.needs_input_grad[0]:
            grad_features = torch.ops.pointdistiller.group_points_backward(
                grad.contiguous(), idx, ctx.num_rows)
        return grad_features, None

    torch.library.register_autograd(lib + "group_points", group_backward, setup_context=group_setup)

    def interp_setup(ctx, inputs, output):
        features, idx, weight = inputs
        ctx.save_for_backward(idx, weight)
        ctx.num_rows = features.shape[0]

    def interp_backward(ctx, grad):
        idx, weight = ctx.saved_tensors
        grad_features = None
        if ctx.needs_input_grad[0]:
            grad_features = torch.ops.pointdistiller.three_interpolate_backward(
                grad.contiguous(), idx, weight, ctx.num_rows)
        return grad_features, None, None

    torch.library.register_autograd(lib + "three_interpolate", interp_backward,
                                    setup_context=interp_setup)
