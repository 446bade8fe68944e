"""Rotated BEV IoU, 3D IoU and rotated NMS of LiDAR boxes (native ops ``pointdistiller::boxes_*``,
``pointdistiller::nms_bev``).

Used by target assignment (anchors vs ground truth) and by the post-processing of PointPillars and
SECOND. Boxes are float32 ``[*, 7] = (x, y, z_centre, l, w, h, yaw)`` in the LiDAR frame (metres,
radians; yaw about +z, ``l`` along +x at yaw 0). Overlaps are exact polygon intersections computed
in float64 and rounded once to float32; see ``ops/csrc/iou3d/iou3d.h`` for the full contract. The
ops are not differentiable (inputs are detached).
"""
import math
import numbers
from typing import Optional

import torch

from torch._subclasses.fake_tensor import is_fake

from pointdistiller.ops._loader import after_load, op

__all__ = ["boxes_overlap_bev", "boxes_iou_bev", "boxes_iou_3d", "nms_bev"]


def _has_values(tensor: torch.Tensor) -> bool:
    """False for meta/fake tensors and while tracing: value checks are skipped there."""
    return (tensor.numel() > 0 and tensor.device.type != "meta" and not is_fake(tensor)
            and not torch.compiler.is_compiling())


def _check_boxes(boxes, name: str) -> None:
    if not isinstance(boxes, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(boxes).__name__}")
    if boxes.dim() != 2 or boxes.shape[1] != 7:
        raise ValueError(
            f"{name} must have shape [*, 7] = (x, y, z, l, w, h, yaw), got {tuple(boxes.shape)}")
    if boxes.dtype != torch.float32:
        raise TypeError(f"{name} must be float32, got {boxes.dtype}")
    if boxes.device.type not in ("cpu", "cuda", "meta"):
        raise ValueError(f"{name} must be on a CPU or CUDA device, got {boxes.device}")
    if not _has_values(boxes):
        return
    if not bool(torch.isfinite(boxes).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    if bool((boxes[:, 3:6] < 0).any()):
        raise ValueError(f"{name} has negative sizes (l, w, h must be >= 0)")


def _check_pair(boxes_a, boxes_b) -> None:
    _check_boxes(boxes_a, "boxes_a")
    _check_boxes(boxes_b, "boxes_b")
    if boxes_a.device != boxes_b.device:
        raise ValueError(f"boxes_a and boxes_b must be on the same device, got {boxes_a.device} "
                         f"and {boxes_b.device}")


def _check_size(value, name: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int or None, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0 or None, got {value}")


def boxes_overlap_bev(boxes_a: torch.Tensor, boxes_b: torch.Tensor) -> torch.Tensor:
    """Area of intersection of the rotated BEV rectangles of every pair of boxes.

    Args:
        boxes_a: ``[N, 7]`` float32, (x, y, z_centre, l, w, h, yaw); CPU or CUDA.
        boxes_b: ``[M, 7]`` float32 on the device of ``boxes_a``.

    Returns:
        ``[N, M]`` float32 on the same device: ``out[i, j]`` is the BEV (x, y, l, w, yaw) overlap
        area of ``boxes_a[i]`` and ``boxes_b[j]`` in m^2 (0 for disjoint, touching or zero-size).

    Raises:
        TypeError: a box set is not a float32 tensor.
        ValueError: wrong shape, different devices, NaN/inf values or negative sizes.
    """
    _check_pair(boxes_a, boxes_b)
    return op("boxes_overlap_bev")(boxes_a.detach(), boxes_b.detach())


def boxes_iou_bev(boxes_a: torch.Tensor, boxes_b: torch.Tensor) -> torch.Tensor:
    """Rotated bird's-eye-view IoU of every pair of boxes.

    Args:
        boxes_a: ``[N, 7]`` float32, (x, y, z_centre, l, w, h, yaw); CPU or CUDA.
        boxes_b: ``[M, 7]`` float32 on the device of ``boxes_a``.

    Returns:
        ``[N, M]`` float32 in [0, 1] on the same device: BEV intersection area over BEV union area
        (z and h are ignored). Identical boxes give 1 (within 1e-6); disjoint, touching or
        zero-size boxes give 0.

    Raises:
        TypeError: a box set is not a float32 tensor.
        ValueError: wrong shape, different devices, NaN/inf values or negative sizes.
    """
    _check_pair(boxes_a, boxes_b)
    return op("boxes_iou_bev")(boxes_a.detach(), boxes_b.detach())


def boxes_iou_3d(boxes_a: torch.Tensor, boxes_b: torch.Tensor) -> torch.Tensor:
    """3D IoU of every pair of boxes (yaw-only rotation, vertical extent ``z +- h / 2``).

    Args:
        boxes_a: ``[N, 7]`` float32, (x, y, z_centre, l, w, h, yaw); CPU or CUDA.
        boxes_b: ``[M, 7]`` float32 on the device of ``boxes_a``.

    Returns:
        ``[N, M]`` float32 in [0, 1] on the same device: BEV overlap area x z-overlap divided by
        ``vol_a + vol_b - intersection``; 0 where either volume is 0.

    Raises:
        TypeError: a box set is not a float32 tensor.
        ValueError: wrong shape, different devices, NaN/inf values or negative sizes.
    """
    _check_pair(boxes_a, boxes_b)
    return op("boxes_iou_3d")(boxes_a.detach(), boxes_b.detach())


def nms_bev(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float,
            pre_max_size: Optional[int] = None,
            post_max_size: Optional[int] = None) -> torch.Tensor:
    """Greedy non-maximum suppression with rotated BEV IoU.

    Boxes are ranked by score, descending, equal scores by lower index; only the first
    ``pre_max_size`` take part. Walking that ranking, a box is kept unless its BEV IoU with an
    already kept box is greater than ``iou_threshold``; at most ``post_max_size`` are kept.
    The CPU and CUDA kernels return identical indices.

    Args:
        boxes: ``[N, 7]`` float32, (x, y, z_centre, l, w, h, yaw); CPU or CUDA.
        scores: ``[N]`` float32 on the device of ``boxes``, no NaN.
        iou_threshold: suppression threshold, >= 0 (>= 1 suppresses nothing).
        pre_max_size: keep only this many top-scoring boxes before suppression (None: all).
        post_max_size: return at most this many boxes (None: no limit).

    Returns:
        ``keep``: ``[K]`` int64 on the device of ``boxes``, indices into the original ``boxes``,
        in descending score order; ``K <= min(N, pre_max_size, post_max_size)``.

    Raises:
        TypeError: wrong tensor dtypes or argument types.
        ValueError: wrong shapes, different devices, NaN/inf values, negative sizes or threshold.
    """
    _check_boxes(boxes, "boxes")
    if not isinstance(scores, torch.Tensor):
        raise TypeError(f"scores must be a torch.Tensor, got {type(scores).__name__}")
    if scores.dim() != 1 or scores.shape[0] != boxes.shape[0]:
        raise ValueError(f"scores must have shape [N] with N = boxes.shape[0] = {boxes.shape[0]}, "
                         f"got {tuple(scores.shape)}")
    if scores.dtype != torch.float32:
        raise TypeError(f"scores must be float32, got {scores.dtype}")
    if scores.device != boxes.device:
        raise ValueError(f"scores must be on the device of boxes ({boxes.device}), "
                         f"got {scores.device}")
    if _has_values(scores) and bool(torch.isnan(scores).any()):
        raise ValueError("scores contains NaN")
    if isinstance(iou_threshold, bool) or not isinstance(iou_threshold, numbers.Real):
        raise TypeError(f"iou_threshold must be a float, got {type(iou_threshold).__name__}")
    if math.isnan(iou_threshold) or iou_threshold < 0:
        raise ValueError(f"iou_threshold must be >= 0, got {iou_threshold}")
    _check_size(pre_max_size, "pre_max_size")
    _check_size(post_max_size, "post_max_size")
    return op("nms_bev")(boxes.detach(), scores.detach(), float(iou_threshold),
                         None if pre_max_size is None else int(pre_max_size),
                         None if post_max_size is None else int(post_max_size))


@after_load("boxes_iou_bev")
def _register_fakes() -> None:
    def pairwise_fake(boxes_a, boxes_b):
        return boxes_a.new_empty((boxes_a.shape[0], boxes_b.shape[0]))

    for name in ("boxes_overlap_bev", "boxes_iou_bev", "boxes_iou_3d"):
        torch.library.register_fake(f"pointdistiller::{name}", pairwise_fake)

    @torch.library.register_fake("pointdistiller::nms_bev")
    def _nms_fake(boxes, scores, iou_threshold, pre_max_size=None, post_max_size=None):
        ctx = torch.library.get_ctx()
        keep = ctx.new_dynamic_size()
        return boxes.new_empty((keep,), dtype=torch.int64)
