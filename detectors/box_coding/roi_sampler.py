"""Stage-2 training targets of PointRCNN: which RoIs a sample trains on, and how a ground-truth box
is coded relative to its RoI (mmdetection3d's ``Max3DIoUAssigner`` + ``IoUNegPiecewiseSampler`` and
the target half of ``PointRCNNBboxHead``).

- Assignment: 3D IoU (``ops.boxes_iou_3d``) of every proposal against the sample's ground truth of
  the proposal's own (RPN) class, as mmdetection3d's one assigner per class; a proposal is
  positive when its best IoU is >= ``pos_iou``. GT boxes are not added as proposals
  (``add_gt_as_proposals=False`` in mmdetection3d's PointRCNN config).
- Sampling: ``rois_per_sample`` RoIs; up to ``pos_fraction`` of them positives, the rest negatives,
  ``hard_neg_fraction`` of those with IoU in ``[easy_neg_iou, pos_iou)`` and the remainder below
  ``easy_neg_iou``. A pool that runs short is filled from the others; a sample with fewer
  proposals than ``rois_per_sample`` repeats some (drawn again at random) instead of failing.
- The RoI frame: origin at the RoI centre, x along its heading. Points and targets are rotated by
  ``-yaw`` about the centre; the target heading is flipped by pi when it differs from the RoI's by
  more than pi/2, so the regressed yaw lies in ``[-pi/2, pi/2)``.

Random draws use torch's global generator of the tensors' device (``torch.randperm`` /
``torch.randint`` without a generator), which the trainer seeds.
"""
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import Tensor

from pointdistiller.detectors.box_coding.coder import ResidualCoder, limit_period

__all__ = ["RoISample", "RoISampler", "max_iou_assign", "soft_iou_labels", "canonical_points",
           "encode_roi_targets", "decode_roi_boxes"]


@dataclass
class RoISample:
    """The RoIs one sample trains on, positives first.

    Attributes:
        indices: ``[S]`` int64 rows of the sample's proposals (a row may repeat when the sample
            has fewer proposals than ``rois_per_sample``).
        iou: ``[S]`` float32 best 3D IoU with a ground-truth box of the proposal's class (0 without
            one).
        gt_index: ``[S]`` int64 row of the assigned box in the sample's ground truth for
            positives, -1 for negatives.
        positive: ``[S]`` bool.
    """

    indices: Tensor
    iou: Tensor
    gt_index: Tensor
    positive: Tensor


def _check_boxes(name: str, boxes, rows: Optional[int] = None) -> None:
    if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[1] != 7:
        got = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
        raise ValueError(f"{name} must be [*, 7] boxes, got {got}")
    if rows is not None and boxes.shape[0] != rows:
        raise ValueError(f"{name} must have {rows} rows, got {boxes.shape[0]}")


def _check_labels(name: str, labels, rows: int) -> None:
    if not isinstance(labels, Tensor) or labels.shape != (rows,):
        got = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"{name} must be [{rows}] labels, got {got}")


@torch.no_grad()
def max_iou_assign(boxes: Tensor, labels: Optional[Tensor], gt_boxes: Tensor,
                   gt_labels: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    """Best ground-truth match of each proposal by 3D IoU.

    Args:
        boxes: ``[P, 7]`` float32 proposals; labels: ``[P]`` int64 their classes, or None to match
            every class.
        gt_boxes: ``[G, 7]`` float32; gt_labels: ``[G]`` int64 (None when ``labels`` is None).

    Returns:
        ``iou [P]`` float32, the best IoU with a box of the same class (0 if none), and
        ``gt_index [P]`` int64, that box's row (-1 when the best IoU is 0).
    """
    _check_boxes("max_iou_assign: boxes", boxes)
    _check_boxes("max_iou_assign: gt_boxes", gt_boxes)
    if (labels is None) != (gt_labels is None):
        raise ValueError("max_iou_assign: give both labels and gt_labels, or neither")
    if labels is not None:
        _check_labels("max_iou_assign: labels", labels, boxes.shape[0])
        _check_labels("max_iou_assign: gt_labels", gt_labels, gt_boxes.shape[0])
    p, g = boxes.shape[0], gt_boxes.shape[0]
    if p == 0 or g == 0:
        return (boxes.new_zeros(p), torch.full((p,), -1, dtype=torch.int64, device=boxes.device))
    from pointdistiller.ops import boxes_iou_3d

    iou = boxes_iou_3d(boxes.float(), gt_boxes.float())
    if labels is not None:
        iou = iou * (labels[:, None] == gt_labels[None, :])
    best, index = iou.max(dim=1)
    return best, torch.where(best > 0, index, torch.full_like(index, -1))


def _draw(pool: Tensor, k: int) -> Tensor:
    """``k`` distinct entries of ``pool`` at random (global generator)."""
    if k >= pool.numel():
        return pool
    return pool[torch.randperm(pool.numel(), device=pool.device)[:k]]


class RoISampler:
    """IoU-piecewise RoI sampler of one sample (mmdetection3d ``IoUNegPiecewiseSampler`` with
    ``neg_piece_fractions [hard_neg_fraction, 1 - hard_neg_fraction]``, ``neg_iou_piece_thrs
    [pos_iou, easy_neg_iou]``); see the module doc for the pools and the fill rules.

    Args:
        rois_per_sample: RoIs per sample (128).
        pos_fraction: at most this fraction are positives (0.5).
        pos_iou: positive at IoU >= this (0.55).
        hard_neg_fraction: fraction of the negatives with IoU in ``[easy_neg_iou, pos_iou)`` (0.8).
        easy_neg_iou: below this a negative is easy (0.1).
    """

    def __init__(self, rois_per_sample: int = 128, pos_fraction: float = 0.5,
                 pos_iou: float = 0.55, hard_neg_fraction: float = 0.8,
                 easy_neg_iou: float = 0.1):
        if isinstance(rois_per_sample, bool) or not isinstance(rois_per_sample, int) \
                or rois_per_sample < 1:
            raise ValueError(f"RoISampler: rois_per_sample must be a positive int, got "
                             f"{rois_per_sample!r}")
        if not 0 < pos_fraction <= 1 or not 0 <= hard_neg_fraction <= 1:
            raise ValueError(f"RoISampler: need 0 < pos_fraction <= 1 and 0 <= hard_neg_fraction "
                             f"<= 1, got {pos_fraction} and {hard_neg_fraction}")
        if not 0 <= easy_neg_iou <= pos_iou <= 1:
            raise ValueError(f"RoISampler: need 0 <= easy_neg_iou <= pos_iou <= 1, got "
                             f"{easy_neg_iou} and {pos_iou}")
        self.rois_per_sample = rois_per_sample
        self.pos_fraction, self.pos_iou = float(pos_fraction), float(pos_iou)
        self.hard_neg_fraction, self.easy_neg_iou = float(hard_neg_fraction), float(easy_neg_iou)

    def select(self, iou: Tensor) -> Tuple[Tensor, Tensor]:
        """Samples rows by their best IoU.

        Args:
            iou: ``[P]`` float best IoU of each proposal.

        Returns:
            ``indices [S]`` int64 rows, positives first, and ``positive [S]`` bool;
            ``S = rois_per_sample`` unless ``P == 0`` (then ``S = 0``).
        """
        if not isinstance(iou, Tensor) or iou.dim() != 1:
            raise ValueError(f"RoISampler.select: iou must be [P], got "
                             f"{tuple(iou.shape) if isinstance(iou, Tensor) else iou!r}")
        total = self.rois_per_sample
        pos = torch.nonzero(iou >= self.pos_iou).squeeze(1)
        hard = torch.nonzero((iou >= self.easy_neg_iou) & (iou < self.pos_iou)).squeeze(1)
        easy = torch.nonzero(iou < self.easy_neg_iou).squeeze(1)
        n_pos = min(pos.numel(), int(total * self.pos_fraction))
        n_neg = total - n_pos
        n_hard = min(hard.numel(), int(n_neg * self.hard_neg_fraction))
        n_easy = min(easy.numel(), n_neg - n_hard)
        n_hard = min(hard.numel(), n_neg - n_easy)            # hard ones fill a short easy pool
        n_pos = min(pos.numel(), total - n_hard - n_easy)     # positives fill short negatives
        pos = _draw(pos, n_pos)
        neg = torch.cat([_draw(hard, n_hard), _draw(easy, n_easy)])
        short = total - pos.numel() - neg.numel()
        if short > 0 and iou.numel() > 0:
            # fewer proposals than RoIs: repeat negatives (positives when there are none), so the
            # positive share never grows by repetition
            if neg.numel() > 0:
                neg = torch.cat([neg, neg[torch.randint(neg.numel(), (short,), device=neg.device)]])
            else:
                pos = torch.cat([pos, pos[torch.randint(pos.numel(), (short,), device=pos.device)]])
        positive = torch.arange(pos.numel() + neg.numel(), device=iou.device) < pos.numel()
        return torch.cat([pos, neg]), positive

    @torch.no_grad()
    def sample(self, boxes: Tensor, labels: Tensor, gt_boxes: Tensor,
               gt_labels: Tensor) -> RoISample:
        """Assigns and samples the proposals of one sample.

        Args:
            boxes: ``[P, 7]`` float32 proposals; labels: ``[P]`` int64 their RPN classes.
            gt_boxes: ``[G, 7]`` float32 (``G`` may be 0: every proposal is a negative with IoU 0);
                gt_labels: ``[G]`` int64.
        """
        iou, gt_index = max_iou_assign(boxes, labels, gt_boxes, gt_labels)
        indices, positive = self.select(iou)
        gt_index = torch.where(positive, gt_index[indices], torch.full_like(indices, -1))
        return RoISample(indices=indices, iou=iou[indices], gt_index=gt_index, positive=positive)


def soft_iou_labels(iou: Tensor, fg_iou: float = 0.7, bg_iou: float = 0.25) -> Tensor:
    """Soft classification label of the IoU-score branch: 1 above ``fg_iou``, 0 below ``bg_iou``,
    linear in between. ``iou [...]`` float -> ``[...]`` float."""
    return ((iou - bg_iou) / (fg_iou - bg_iou)).clamp(0.0, 1.0)


def canonical_points(points: Tensor, rois: Tensor) -> Tensor:
    """Points in their RoI's frame: ``R(-yaw) (p - centre)``.

    Args:
        points: ``[R, S, 3]`` float (LiDAR frame); rois: ``[R, 7]`` float LiDAR boxes.

    Returns:
        ``[R, S, 3]``: x along the RoI's heading, y to its left, z up from its centre.
    """
    d = points - rois[:, None, 0:3]
    c, s = torch.cos(rois[:, 6])[:, None], torch.sin(rois[:, 6])[:, None]
    x = d[..., 0] * c + d[..., 1] * s
    y = -d[..., 0] * s + d[..., 1] * c
    return torch.stack([x, y, d[..., 2]], dim=-1)


def _local_anchors(rois: Tensor) -> Tensor:
    """The RoIs moved to the origin with yaw 0 (the anchors of the RoI-frame coder)."""
    zeros = torch.zeros_like(rois[:, :3])
    return torch.cat([zeros, rois[:, 3:6], torch.zeros_like(rois[:, 6:7])], dim=1)


def encode_roi_targets(rois: Tensor, gt_boxes: Tensor) -> Tensor:
    """Regression targets of ``gt_boxes`` relative to their ``rois``, both ``[P, 7]`` LiDAR boxes.

    The box is moved into the RoI frame (centre rotated by ``-yaw_roi`` about the RoI centre, yaw
    ``yaw_gt - yaw_roi`` flipped by pi into ``[-pi/2, pi/2)``) and coded by
    :class:`ResidualCoder` against the RoI at the origin with yaw 0 (``d = sqrt(l_r^2 + w_r^2)``,
    ``x, y, z, yaw`` in the RoI frame)::

        (x / d, y / d, z / h_r, log(l / l_r), log(w / w_r), log(h / h_r), yaw)

    Returns:
        ``[P, 7]`` float.
    """
    _check_boxes("encode_roi_targets: rois", rois)
    _check_boxes("encode_roi_targets: gt_boxes", gt_boxes, rois.shape[0])
    centre = canonical_points(gt_boxes[:, None, 0:3], rois)[:, 0]
    yaw = limit_period(gt_boxes[:, 6:7] - rois[:, 6:7], 0.5, torch.pi)
    local = torch.cat([centre, gt_boxes[:, 3:6], yaw], dim=1)
    return ResidualCoder().encode(_local_anchors(rois), local)


def decode_roi_boxes(rois: Tensor, deltas: Tensor) -> Tensor:
    """Inverse of :func:`encode_roi_targets`: LiDAR boxes ``[P, 7]`` from ``rois [P, 7]`` and
    ``deltas [P, 7]`` (differentiable in ``deltas``). The yaw is ``yaw_roi + delta``, not wrapped:
    a target flipped by pi decodes to the ground truth turned by pi (the same box)."""
    _check_boxes("decode_roi_boxes: rois", rois)
    _check_boxes("decode_roi_boxes: deltas", deltas, rois.shape[0])
    local = ResidualCoder().decode(_local_anchors(rois), deltas)
    c, s = torch.cos(rois[:, 6]), torch.sin(rois[:, 6])
    x = local[:, 0] * c - local[:, 1] * s + rois[:, 0]
    y = local[:, 0] * s + local[:, 1] * c + rois[:, 1]
    return torch.cat([torch.stack([x, y, local[:, 2] + rois[:, 2]], dim=1), local[:, 3:6],
                      local[:, 6:7] + rois[:, 6:7]], dim=1)
