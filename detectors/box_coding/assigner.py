"""Assignment of anchors to ground-truth boxes by BEV IoU, per class (mmdetection3d's
``Max3DIoUAssigner`` with ``assign_per_class=True``), and the training targets it implies.

For each class ``k`` the anchors of class ``k`` are matched only against the ground truths labelled
``k``. With ``iou [G_k, N_k]`` their BEV IoUs, ``max_iou`` / ``argmax`` over ground truths per anchor
and ``gt_max`` the best IoU of each ground truth:

1. every anchor starts ignored;
2. ``max_iou < neg_thr`` -> background (so, with no ground truth of the class, all its anchors);
3. ``max_iou >= pos_thr`` -> positive, matched to ``argmax``;
4. low-quality matches (mmdet's ``min_pos_iou`` with ``min_pos_iou = neg_thr``,
   ``gt_max_assign_all=True``): each ground truth with ``gt_max >= neg_thr`` (and > 0) also takes every
   anchor whose IoU with it equals ``gt_max``; where several ground truths claim one anchor this
   way, the one listed last wins (mmdet's loop order). A ground truth whose best anchor IoU stays
   below ``neg_thr`` gets no anchor.

Label encoding of :class:`AssignResult`: ``-1`` ignored, ``0 .. K-1`` positive of that class,
``K`` background.

IoU: ``"nearest_bev"`` (default of mmdetection3d and OpenPCDet) turns every box to the nearest of
0 / 90 degrees and takes the axis-aligned BEV IoU (pure torch, vectorised); ``"rotated_bev"`` uses
the exact rotated BEV IoU op ``pointdistiller.ops.iou3d.boxes_iou_bev``.
"""
import math
from dataclasses import dataclass
from typing import Literal, Optional, Sequence

import torch
from torch import Tensor

from pointdistiller.detectors.box_coding.coder import ResidualCoder, direction_bins, limit_period

IOU_MODES = ("nearest_bev", "rotated_bev")


def _nearest_aabb(boxes: Tensor) -> Tensor:
    """``[N, 7]`` boxes -> ``[N, 4]`` ``(x1, y1, x2, y2)`` after snapping yaw to 0 or 90 degrees."""
    x, y, l, w = boxes[:, 0], boxes[:, 1], boxes[:, 3], boxes[:, 4]
    swap = limit_period(boxes[:, 6], 0.5, math.pi).abs() > math.pi / 4
    dx = torch.where(swap, w, l) / 2
    dy = torch.where(swap, l, w) / 2
    return torch.stack([x - dx, y - dy, x + dx, y + dy], dim=1)


def _aabb_iou(a: Tensor, b: Tensor, eps: float) -> Tensor:
    """``[N, 4]``, ``[M, 4]`` ``(x1, y1, x2, y2)`` -> ``[N, M]`` IoU."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    iw = (torch.minimum(a[:, None, 2], b[None, :, 2]) - torch.maximum(a[:, None, 0], b[None, :, 0]))
    ih = (torch.minimum(a[:, None, 3], b[None, :, 3]) - torch.maximum(a[:, None, 1], b[None, :, 1]))
    inter = iw.clamp_min_(0).mul_(ih.clamp_min_(0))
    union = (area_a[:, None] + area_b[None, :]).sub_(inter).clamp_min_(eps)
    return inter.div_(union)


def nearest_bev_iou(boxes_a: Tensor, boxes_b: Tensor, eps: float = 1e-6) -> Tensor:
    """Axis-aligned BEV IoU after rotating each box to the nearest of 0 / 90 degrees.

    Args:
        boxes_a: ``[N, 7]`` float LiDAR boxes ``(x, y, z, l, w, h, yaw)``.
        boxes_b: ``[M, 7]`` float, same dtype and device.
        eps: lower bound of the union area.

    Returns:
        ``[N, M]`` IoU in ``[0, 1]``, dtype of the inputs.
    """
    for name, t in (("boxes_a", boxes_a), ("boxes_b", boxes_b)):
        if t.dim() != 2 or t.shape[1] != 7:
            raise ValueError(f"nearest_bev_iou: {name} must be [N, 7], got {tuple(t.shape)}")
    return _aabb_iou(_nearest_aabb(boxes_a), _nearest_aabb(boxes_b), eps)


@dataclass
class AssignResult:
    """Targets of ``N`` anchors for one sample.

    Attributes:
        labels: ``[N]`` int64, ``-1`` ignored, ``0 .. K-1`` positive of that class, ``K`` background.
        pos_mask: ``[N]`` bool, ``0 <= labels < K``.
        gt_index: ``[N]`` int64 index of the matched ground truth in the sample, ``-1`` if not positive.
        box_targets: ``[N, 7]`` float, residuals (:class:`ResidualCoder`) of the matched ground truth;
            zero where not positive.
        dir_targets: ``[N]`` int64 direction bin of the matched ground truth's yaw; zero where not
            positive.
        max_iou: ``[N]`` float, best IoU of each anchor with a ground truth of its class.
    """

    labels: Tensor
    pos_mask: Tensor
    gt_index: Tensor
    box_targets: Tensor
    dir_targets: Tensor
    max_iou: Tensor


class AnchorAssigner:
    """Per-class max-IoU assignment and target encoding (rules in the module doc).

    Args:
        num_classes: ``K``.
        pos_iou_thresholds: per class, IoU at or above which an anchor is positive.
        neg_iou_thresholds: per class, IoU below which an anchor is background; also the minimum
            IoU of a ground truth's best-anchor match.
        iou_mode: ``"nearest_bev"`` or ``"rotated_bev"``.
        coder: box coder of the regression targets (default :class:`ResidualCoder`).
        dir_offset: radians, see :func:`direction_bins`.
        num_dir_bins: direction classes.
    """

    def __init__(self, num_classes: int, pos_iou_thresholds: Sequence[float],
                 neg_iou_thresholds: Sequence[float],
                 iou_mode: Literal["nearest_bev", "rotated_bev"] = "nearest_bev",
                 coder: Optional[ResidualCoder] = None, dir_offset: float = -math.pi / 4,
                 num_dir_bins: int = 2):
        if num_classes < 1:
            raise ValueError(f"AnchorAssigner: num_classes must be >= 1, got {num_classes}")
        pos, neg = [float(v) for v in pos_iou_thresholds], [float(v) for v in neg_iou_thresholds]
        if len(pos) != num_classes or len(neg) != num_classes:
            raise ValueError(f"AnchorAssigner: pos_iou_thresholds ({len(pos)}) and neg_iou_thresholds "
                             f"({len(neg)}) need one value per class ({num_classes})")
        for k, (p, n) in enumerate(zip(pos, neg)):
            if not 0.0 <= n <= p <= 1.0:
                raise ValueError(f"AnchorAssigner: class {k} needs 0 <= neg_iou_threshold ({n}) <= "
                                 f"pos_iou_threshold ({p}) <= 1")
        if iou_mode not in IOU_MODES:
            raise ValueError(f"AnchorAssigner: iou_mode must be one of {IOU_MODES}, got {iou_mode!r}")
        if num_dir_bins < 1:
            raise ValueError(f"AnchorAssigner: num_dir_bins must be >= 1, got {num_dir_bins}")
        self.num_classes = num_classes
        self.pos_iou_thresholds = pos
        self.neg_iou_thresholds = neg
        self.iou_mode = iou_mode
        self.coder = coder if coder is not None else ResidualCoder()
        self.dir_offset = float(dir_offset)
        self.num_dir_bins = num_dir_bins
        self._cache = None

    def iou(self, gt_boxes: Tensor, anchors: Tensor) -> Tensor:
        """``[G, 7]``, ``[N, 7]`` -> ``[G, N]`` BEV IoU of the configured mode."""
        if self.iou_mode == "nearest_bev":
            return nearest_bev_iou(gt_boxes, anchors)
        from pointdistiller.ops.iou3d import boxes_iou_bev

        return boxes_iou_bev(gt_boxes.contiguous(), anchors.contiguous())

    def _class_anchors(self, anchors: Tensor, anchor_classes: Tensor):
        """Per class ``(indices [N_k], anchors [N_k, 7], axis-aligned boxes [N_k, 4] or None)``,
        remembered for the last ``(anchors, anchor_classes)`` pair (same objects, unmodified)."""
        versions = (anchors._version, anchor_classes._version)
        cache = self._cache
        if cache is not None and cache[0] is anchors and cache[1] is anchor_classes and cache[2] == versions:
            return cache[3]
        per_class = []
        for k in range(self.num_classes):
            idx = torch.nonzero(anchor_classes == k).squeeze(1)
            subset = anchors[idx]
            aabb = _nearest_aabb(subset) if self.iou_mode == "nearest_bev" else None
            per_class.append((idx, subset, aabb))
        self._cache = (anchors, anchor_classes, versions, per_class)
        return per_class

    def _match_class(self, iou: Tensor, k: int):
        """``iou [G_k, N_k]`` -> (matched gt ``[N_k]`` int64 or -1, background ``[N_k]`` bool,
        max IoU ``[N_k]``)."""
        pos_thr, neg_thr = self.pos_iou_thresholds[k], self.neg_iou_thresholds[k]
        max_iou, argmax = iou.max(dim=0)
        matched = torch.where(max_iou >= pos_thr, argmax, torch.full_like(argmax, -1))
        gt_max = iou.max(dim=1).values
        takes_best = (iou == gt_max[:, None]) & ((gt_max >= neg_thr) & (gt_max > 0))[:, None]
        gt_i, anchor_i = torch.nonzero(takes_best, as_tuple=True)
        if gt_i.numel() > 0:
            # the last ground truth claiming an anchor wins (scatter of the largest gt index)
            low_quality = torch.full_like(matched, -1).scatter_reduce_(0, anchor_i, gt_i, "amax")
            matched = torch.where(low_quality >= 0, low_quality, matched)
        background = (matched < 0) & (max_iou < neg_thr)
        return matched, background, max_iou

    def assign(self, anchors: Tensor, anchor_classes: Tensor, gt_boxes: Tensor,
               gt_labels: Tensor) -> AssignResult:
        """Assigns one sample's anchors.

        Args:
            anchors: ``[N, 7]`` float LiDAR anchors.
            anchor_classes: ``[N]`` int64 class of each anchor in ``0 .. K-1``.
            gt_boxes: ``[G, 7]`` float LiDAR boxes (``G`` may be 0), sizes > 0.
            gt_labels: ``[G]`` int64 in ``0 .. K-1``.

        Returns:
            :class:`AssignResult` of the ``N`` anchors.
        """
        if anchors.dim() != 2 or anchors.shape[1] != 7:
            raise ValueError(f"AnchorAssigner.assign: anchors must be [N, 7], got {tuple(anchors.shape)}")
        n = anchors.shape[0]
        if anchor_classes.shape != (n,):
            raise ValueError(f"AnchorAssigner.assign: anchor_classes must be [{n}], got "
                             f"{tuple(anchor_classes.shape)}")
        if gt_boxes.dim() != 2 or gt_boxes.shape[1] != 7:
            raise ValueError(f"AnchorAssigner.assign: gt_boxes must be [G, 7], got {tuple(gt_boxes.shape)}")
        if gt_labels.shape != (gt_boxes.shape[0],):
            raise ValueError(f"AnchorAssigner.assign: gt_labels must be [{gt_boxes.shape[0]}], got "
                             f"{tuple(gt_labels.shape)}")
        device, k_bg = anchors.device, self.num_classes
        gt_boxes = gt_boxes.to(device=device, dtype=anchors.dtype)
        gt_labels = gt_labels.to(device=device, dtype=torch.int64)
        if gt_boxes.shape[0] > 0:
            if bool(((gt_labels < 0) | (gt_labels >= k_bg)).any()):
                raise ValueError(f"AnchorAssigner.assign: gt_labels must lie in 0..{k_bg - 1}, got "
                                 f"{sorted(set(gt_labels.tolist()))}")
            if not bool(torch.isfinite(gt_boxes).all()) or bool((gt_boxes[:, 3:6] <= 0).any()):
                raise ValueError("AnchorAssigner.assign: gt_boxes must be finite with sizes > 0")

        labels = torch.full((n,), -1, dtype=torch.int64, device=device)
        gt_index = torch.full((n,), -1, dtype=torch.int64, device=device)
        max_iou = anchors.new_zeros(n)
        for k, (idx, class_anchors, class_aabb) in enumerate(self._class_anchors(anchors, anchor_classes)):
            if idx.numel() == 0:
                continue
            gt_ids = torch.nonzero(gt_labels == k).squeeze(1)
            if gt_ids.numel() == 0:
                labels[idx] = k_bg
                continue
            if class_aabb is not None:
                iou = _aabb_iou(_nearest_aabb(gt_boxes[gt_ids]), class_aabb, 1e-6)
            else:
                iou = self.iou(gt_boxes[gt_ids], class_anchors)
            matched, background, best = self._match_class(iou, k)
            max_iou[idx] = best.to(max_iou.dtype)
            class_labels = torch.where(background, k_bg, -1)
            class_labels[matched >= 0] = k
            labels[idx] = class_labels
            gt_index[idx] = torch.where(matched >= 0, gt_ids[matched.clamp_min(0)], matched)

        pos_mask = (labels >= 0) & (labels < k_bg)
        box_targets = anchors.new_zeros(n, 7)
        dir_targets = torch.zeros(n, dtype=torch.int64, device=device)
        pos = torch.nonzero(pos_mask).squeeze(1)
        if pos.numel() > 0:
            matched_gt = gt_boxes[gt_index[pos]]
            box_targets[pos] = self.coder.encode(anchors[pos], matched_gt)
            dir_targets[pos] = direction_bins(matched_gt[:, 6], self.dir_offset, self.num_dir_bins)
        return AssignResult(labels=labels, pos_mask=pos_mask, gt_index=gt_index,
                            box_targets=box_targets, dir_targets=dir_targets, max_iou=max_iou)
