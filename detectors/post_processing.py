"""Turns anchor-head outputs of one sample into final detections (mmdetection3d's
``Anchor3DHead.get_bboxes`` with ``box3d_multiclass_nms``).

Steps: sigmoid class scores; keep the ``nms_pre`` anchors with the highest best-class score among
those whose best score passes ``score_threshold`` (ties at the cut go to lower anchor indices);
decode the residuals; fix the heading with the direction classifier
(``yaw = limit_period(yaw - dir_offset, 0, pi) + dir_offset + pi * bin``); per class, candidates
with score > ``score_threshold`` go through rotated BEV NMS (``pointdistiller.ops.iou3d.nms_bev``);
the survivors of all classes are sorted by score (stable, class order breaks ties) and the first
``max_detections`` kept (:func:`class_wise_nms`, also PointRCNN's last step). An anchor may appear once per class whose score passes the threshold.
Candidates whose decoded box is not finite are dropped. The result is deterministic.
"""
import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from pointdistiller.detectors.box_coding.coder import ResidualCoder, limit_period


@dataclass
class Detections:
    """Detections of one sample.

    Attributes:
        boxes: ``[k, 7]`` float32 LiDAR boxes ``(x, y, z_centre, l, w, h, yaw)``.
        scores: ``[k]`` float32 class probabilities, descending.
        labels: ``[k]`` int64 class indices into ``CLASS_NAMES``.
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @staticmethod
    def empty(device: Optional[torch.device] = None) -> "Detections":
        return Detections(boxes=torch.zeros(0, 7, dtype=torch.float32, device=device),
                          scores=torch.zeros(0, dtype=torch.float32, device=device),
                          labels=torch.zeros(0, dtype=torch.int64, device=device))

    def to(self, device) -> "Detections":
        return Detections(self.boxes.to(device), self.scores.to(device), self.labels.to(device))


def correct_direction(yaw: Tensor, dir_bins: Tensor, dir_offset: float) -> Tensor:
    """Heading from a yaw known modulo pi and a direction bin: ``limit_period(yaw - dir_offset, 0,
    pi) + dir_offset + pi * dir_bins``. ``yaw [...]`` float, ``dir_bins [...]`` int64 -> ``[...]``."""
    return limit_period(yaw - dir_offset, 0.0, math.pi) + dir_offset + math.pi * dir_bins.to(yaw.dtype)


def top_k_lowest_index(values: Tensor, k: int) -> Tensor:
    """Ascending indices of the ``k`` largest of ``values [N]`` (``N > k``), ties at the ``k``-th
    value broken towards lower indices, independent of ``torch.topk``'s tie order."""
    kth = torch.topk(values, k).values[-1]
    above = values > kth
    ties = torch.nonzero(values == kth).squeeze(1)[: k - int(above.sum())]
    chosen = above.clone()
    chosen[ties] = True
    return torch.nonzero(chosen).squeeze(1)


def decode_detections(cls_logits: Tensor, box_deltas: Tensor, dir_logits: Tensor, anchors: Tensor,
                      coder: Optional[ResidualCoder] = None, score_threshold: float = 0.1,
                      nms_pre: int = 100, nms_iou_threshold: float = 0.01, max_detections: int = 50,
                      dir_offset: float = -math.pi / 4) -> Detections:
    """Detections of one sample from its flattened head outputs (steps in the module doc).

    Args:
        cls_logits: ``[N, K]`` float class logits of the ``N`` anchors.
        box_deltas: ``[N, 7]`` float predicted residuals.
        dir_logits: ``[N, bins]`` float direction logits (2 bins: heading bins of width pi).
        anchors: ``[N, 7]`` float anchors, same order.
        coder: residual coder (default :class:`ResidualCoder`).
        score_threshold: minimum class probability (exclusive).
        nms_pre: anchors kept before NMS (``<= 0``: all).
        nms_iou_threshold: rotated BEV IoU above which the lower-scored box of a class is removed.
        max_detections: boxes kept per sample.
        dir_offset: radians, as in training.

    Returns:
        :class:`Detections` on the inputs' device.
    """
    n = anchors.shape[0]
    if anchors.shape != (n, 7) or box_deltas.shape != (n, 7):
        raise ValueError(f"decode_detections: anchors {tuple(anchors.shape)} and box_deltas "
                         f"{tuple(box_deltas.shape)} must both be [N, 7]")
    if cls_logits.dim() != 2 or cls_logits.shape[0] != n:
        raise ValueError(f"decode_detections: cls_logits must be [{n}, K], got {tuple(cls_logits.shape)}")
    if dir_logits.dim() != 2 or dir_logits.shape[0] != n:
        raise ValueError(f"decode_detections: dir_logits must be [{n}, bins], got "
                         f"{tuple(dir_logits.shape)}")
    if max_detections < 0:
        raise ValueError(f"decode_detections: max_detections must be >= 0, got {max_detections}")
    device = anchors.device
    coder = coder if coder is not None else ResidualCoder()
    scores = torch.sigmoid(cls_logits.float())
    best = scores.max(dim=1).values if n > 0 else scores.new_zeros(0)
    # anchors whose best score passes the threshold are the only ones any class can keep, so
    # dropping the rest first leaves the top-nms_pre selection unchanged
    keep = torch.nonzero(best > score_threshold).squeeze(1)
    if nms_pre > 0 and keep.numel() > nms_pre:
        keep = keep[top_k_lowest_index(best[keep], nms_pre)]
    scores, box_deltas, dir_logits, anchors = (
        scores[keep], box_deltas[keep], dir_logits[keep], anchors[keep])
    boxes = coder.decode(anchors.float(), box_deltas.float())
    boxes[:, 6] = correct_direction(boxes[:, 6], dir_logits.argmax(dim=1), dir_offset)
    finite = torch.isfinite(boxes).all(dim=1)

    candidates = [torch.nonzero((scores[:, k] > score_threshold) & finite).squeeze(1)
                  for k in range(scores.shape[1])]
    rows = torch.cat(candidates)
    labels = torch.cat([torch.full((c.numel(),), k, dtype=torch.int64, device=device)
                        for k, c in enumerate(candidates)])
    return class_wise_nms(boxes[rows], scores[rows, labels], labels, nms_iou_threshold,
                          max_detections)


def class_wise_nms(boxes: Tensor, scores: Tensor, labels: Tensor, iou_threshold: float,
                   max_detections: int, class_agnostic: bool = False) -> Detections:
    """Final detections of one sample from scored, labelled candidates: per class (ascending),
    rotated BEV NMS (``pointdistiller.ops.iou3d.nms_bev``) over that class's rows in row order;
    the survivors of all classes sorted by score (stable, so class order breaks ties) and the
    first ``max_detections`` kept.

    Args:
        boxes: ``[n, 7]`` float32 LiDAR boxes; scores: ``[n]`` float32; labels: ``[n]`` int64.
        iou_threshold: BEV IoU above which the lower-scored box of a class is removed.
        max_detections: boxes kept.
        class_agnostic: one NMS over all rows whatever their label (a box suppresses an
            overlapping lower-scored box of any class; each keeps its label).
    """
    from pointdistiller.ops.iou3d import nms_bev

    kept = []
    groups = torch.zeros_like(labels) if class_agnostic else labels
    for k in torch.unique(groups).tolist():
        rows = torch.nonzero(groups == k).squeeze(1)
        kept.append(rows[nms_bev(boxes[rows].contiguous(), scores[rows].contiguous(),
                                 iou_threshold)])
    if not kept:
        return Detections.empty(boxes.device)
    rows = torch.cat(kept)
    rows = rows[torch.sort(scores[rows], descending=True, stable=True).indices[:max_detections]]
    return Detections(boxes=boxes[rows], scores=scores[rows], labels=labels[rows])
