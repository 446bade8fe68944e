"""Per-point RPN head of PointRCNN (mmdetection3d's ``PointRPNHead``): class logits and an 8-value
box code for every input point, the training targets and losses, and the proposals handed to the
RoI head.

Points are ragged batches: rows of all samples concatenated, int64 ``offsets [B + 1]``
(``detectors/batch.py``). Targets: a point inside a ground-truth box is foreground of that box's
class (the lowest box index when boxes overlap, as ``points_in_boxes``), a point inside a box
enlarged by ``ignore_margin`` on every side but in no box is ignored, every other point is
background.
"""
import math
from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pointdistiller.detectors.batch import Batch, check_offsets, offsets_from_counts
from pointdistiller.detectors.box_coding.point_coder import PointResidualCoder
from pointdistiller.detectors.losses import sigmoid_focal_loss
from pointdistiller.detectors.post_processing import top_k_lowest_index
from pointdistiller.kitti_tools.classes import CLASS_NAMES
from pointdistiller.detectors.heads.config_block import ConfigBlock
from pointdistiller.detectors.heads.mlp import check_widths, linear_bn_relu


def _default_mean_sizes() -> Dict[str, Tuple[float, float, float]]:
    return {"Car": (3.9, 1.6, 1.56), "Pedestrian": (0.8, 0.6, 1.73), "Cyclist": (1.76, 0.6, 1.73)}


@dataclass
class PointRPNHeadConfig(ConfigBlock):
    """The RPN block of a PointRCNN config. Defaults: mmdetection3d's KITTI 3-class PointRCNN.

    Attributes:
        cls_channels: hidden widths of the class branch (Linear without bias + BN1d + ReLU each).
        reg_channels: hidden widths of the box branch.
        mean_sizes: ``(l, w, h)`` metres per class name; every name of ``CLASS_NAMES`` exactly once,
            in any order (the head orders them by ``CLASS_NAMES``).
        ignore_margin: metres added to each side of a ground-truth box (``l, w, h`` grow by twice
            it); points in that shell are ignored by the class loss.
        focal_gamma, focal_alpha: sigmoid focal loss parameters.
        smooth_l1_beta: smooth-L1 transition point of the box loss.
        nms_pre: highest-scoring points per sample decoded into proposals.
        nms_post_train, nms_post_test: proposals kept per sample after NMS while training /
            testing (mmdetection3d 512 / 512; OpenPCDet 512 / 100).
        nms_iou_train, nms_iou_test: rotated BEV NMS IoU threshold while training / testing.
    """

    cls_channels: Tuple[int, ...] = (256, 256)
    reg_channels: Tuple[int, ...] = (256, 256)
    mean_sizes: Dict[str, Tuple[float, float, float]] = field(default_factory=_default_mean_sizes)
    ignore_margin: float = 0.1
    focal_gamma: float = 2.0
    focal_alpha: float = 0.25
    smooth_l1_beta: float = 1.0 / 9.0
    nms_pre: int = 9000
    nms_post_train: int = 512
    nms_post_test: int = 512
    nms_iou_train: float = 0.8
    nms_iou_test: float = 0.85



def ordered_mean_sizes(mean_sizes: Mapping[str, Sequence[float]]) -> Tensor:
    """``[K, 3]`` float32 mean sizes, row ``k`` the class ``CLASS_NAMES[k]``.

    Keyed by name so the size of a class cannot be paired with another class's label (the
    mmdetection3d 1.x config reorders the classes but not its ``mean_size`` list).

    Raises:
        ValueError: a name that is not in ``CLASS_NAMES``, a class without a size, or a size that
            is not three finite numbers > 0.
    """
    if not isinstance(mean_sizes, Mapping):
        raise ValueError(f"PointRPNHead: mean_sizes must map class names to (l, w, h), got "
                         f"{type(mean_sizes).__name__}")
    unknown = [name for name in mean_sizes if name not in CLASS_NAMES]
    if unknown:
        raise ValueError(f"PointRPNHead: mean_sizes has unknown class {unknown[0]!r} (classes: "
                         f"{', '.join(CLASS_NAMES)})")
    missing = [name for name in CLASS_NAMES if name not in mean_sizes]
    if missing:
        raise ValueError(f"PointRPNHead: mean_sizes lacks class {missing[0]!r} (every one of "
                         f"{', '.join(CLASS_NAMES)} needs a size)")
    rows = []
    for name in CLASS_NAMES:
        size = tuple(mean_sizes[name])
        if len(size) != 3 or not all(math.isfinite(v) and v > 0 for v in size):
            raise ValueError(f"PointRPNHead: mean_sizes[{name!r}] must be three sizes > 0 "
                             f"(l, w, h), got {size}")
        rows.append(size)
    return torch.tensor(rows, dtype=torch.float32)


@dataclass
class Proposals:
    """RPN proposals of a batch, sample-major.

    Attributes:
        boxes: ``[R, 7]`` float32 LiDAR boxes ``(x, y, z_centre, l, w, h, yaw)``.
        scores: ``[R]`` float32 class-agnostic score (max sigmoid over classes), descending within a
            sample.
        labels: ``[R]`` int64 argmax class into ``CLASS_NAMES``.
        offsets: ``[B + 1]`` int64.
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    offsets: Tensor


@dataclass
class PointTargets:
    """Per-point RPN training targets.

    Attributes:
        labels: ``[N]`` int64: the class of the point's box, ``K`` background, ``-1`` ignored.
        box_targets: ``[N, 8]`` float32 code of the point's box (:class:`PointResidualCoder`),
            zeros where ``positive`` is false.
        positive: ``[N]`` bool, the point is inside a ground-truth box.
    """

    labels: Tensor
    box_targets: Tensor
    positive: Tensor


def _mlp(in_channels: int, hidden: Sequence[int], out_channels: int) -> nn.Sequential:
    width = hidden[-1] if hidden else in_channels
    return nn.Sequential(*linear_bn_relu(in_channels, hidden), nn.Linear(width, out_channels))


def _check_config(in_channels: int, cfg: PointRPNHeadConfig) -> None:
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"PointRPNHead: in_channels must be a positive int, got {in_channels!r}")
    for name in ("cls_channels", "reg_channels"):     # empty: one Linear straight to the outputs
        check_widths("PointRPNHead", name, getattr(cfg, name), allow_empty=True)
    if cfg.ignore_margin < 0 or cfg.smooth_l1_beta < 0 or cfg.focal_gamma < 0 \
            or not 0 <= cfg.focal_alpha <= 1:
        raise ValueError("PointRPNHead: need ignore_margin >= 0, smooth_l1_beta >= 0, "
                         "focal_gamma >= 0 and 0 <= focal_alpha <= 1")
    if min(cfg.nms_pre, cfg.nms_post_train, cfg.nms_post_test) < 1 or cfg.nms_iou_train < 0 \
            or cfg.nms_iou_test < 0:
        raise ValueError(f"PointRPNHead: need nms_pre, nms_post_train, nms_post_test >= 1 and NMS "
                         f"IoUs >= 0, got {cfg.nms_pre}, {cfg.nms_post_train}, {cfg.nms_post_test}, "
                         f"{cfg.nms_iou_train}, {cfg.nms_iou_test}")


def boxes_contain_points(boxes: Tensor, points: Tensor, hint_rows: Tensor) -> Tensor:
    """Whether each box holds at least one of ``points`` (borders included, the in-box test of
    ``pointdistiller.ops.points_in_boxes``).

    ``points_in_boxes`` gives only the lowest box of each point, so a box whose points all lie in a
    lower box would look empty. Instead: first each box is tested against its hint row alone (the
    point that predicted it, which the box usually contains; one test per box), then the remaining
    boxes go to ``roipoint_pool3d`` with one slot, whose per-box scan stops at the first point
    inside and whose ``empty`` flag is exact. Cost: ``R`` tests plus, per box not holding its hint,
    the rows scanned up to its first point (all ``n`` rows for an empty box).

    Args:
        boxes: ``[R, 7]`` float32 finite LiDAR boxes of one sample.
        points: ``[n, 3]`` float32 points of that sample.
        hint_rows: ``[R]`` int64 rows of ``points``, one per box.

    Returns:
        ``[R]`` bool.
    """
    from pointdistiller.ops import points_in_boxes, roipoint_pool3d

    r, device = boxes.shape[0], boxes.device
    one_each = torch.arange(r + 1, device=device)
    inside = points_in_boxes(points[hint_rows].contiguous(), one_each, boxes, one_each) >= 0
    rest = torch.nonzero(~inside).squeeze(1)
    if rest.numel() > 0:
        n = points.shape[0]
        _, empty = roipoint_pool3d(points, points.new_zeros(n, 0),
                                   torch.tensor([0, n], device=device), boxes[rest].contiguous(),
                                   torch.tensor([0, rest.numel()], device=device), 1)
        inside[rest] = ~empty
    return inside


class PointRPNHead(nn.Module):
    """Per-point RPN of PointRCNN: two MLP branches on each point's feature, focal / smooth-L1
    losses against points-in-boxes targets, and class-agnostic proposals with rotated BEV NMS.

    Init: PyTorch's default for the linear layers (as mmdetection3d), except the class bias,
    ``-log((1 - 0.01) / 0.01)`` so every point starts at probability 0.01 (the usual focal-loss
    prior; mmdetection3d leaves it at the default).

    Args:
        in_channels: ``C`` of the per-point features.
        cfg: :class:`PointRPNHeadConfig` (or a mapping of its fields; None: the defaults).

    Attributes:
        num_classes: ``K = len(CLASS_NAMES)``.
        mean_sizes: ``[K, 3]`` float32 buffer (not saved in checkpoints: the config is the source).
        coder: the :class:`PointResidualCoder` of those sizes.
    """

    def __init__(self, in_channels: int, cfg: Optional[PointRPNHeadConfig] = None):
        super().__init__()
        cfg = PointRPNHeadConfig.of(cfg)
        _check_config(in_channels, cfg)
        self.cfg = cfg
        self.in_channels = in_channels
        self.num_classes = len(CLASS_NAMES)
        self.register_buffer("mean_sizes", ordered_mean_sizes(cfg.mean_sizes), persistent=False)
        self.coder = PointResidualCoder(self.mean_sizes)
        self.cls_layers = _mlp(in_channels, cfg.cls_channels, self.num_classes)
        self.reg_layers = _mlp(in_channels, cfg.reg_channels, PointResidualCoder.code_size)
        nn.init.constant_(self.cls_layers[-1].bias, -math.log((1 - 0.01) / 0.01))

    def forward(self, features: Tensor) -> Tuple[Tensor, Tensor]:
        """``features [N, C]`` float -> ``(cls [N, K] logits, box [N, 8] codes)``."""
        if not isinstance(features, Tensor) or features.dim() != 2 \
                or features.shape[1] != self.in_channels:
            shape = (tuple(features.shape) if isinstance(features, Tensor)
                     else type(features).__name__)
            raise ValueError(f"PointRPNHead: features must be [N, {self.in_channels}], got {shape}")
        return self.cls_layers(features), self.reg_layers(features)

    def _check(self, where: str, cls: Tensor, box: Tensor, xyz: Tensor, offsets: Tensor) -> None:
        n = cls.shape[0] if cls.dim() == 2 else -1
        if cls.dim() != 2 or cls.shape[1] != self.num_classes:
            raise ValueError(f"PointRPNHead.{where}: cls must be [N, {self.num_classes}], got "
                             f"{tuple(cls.shape)}")
        if box.shape != (n, PointResidualCoder.code_size):
            raise ValueError(f"PointRPNHead.{where}: box must be [{n}, 8] like cls "
                             f"{tuple(cls.shape)}, got {tuple(box.shape)}")
        if xyz.shape != (n, 3):
            raise ValueError(f"PointRPNHead.{where}: xyz must be [{n}, 3], got {tuple(xyz.shape)}")
        check_offsets(f"PointRPNHead.{where}", offsets, n)

    @torch.no_grad()
    def targets(self, xyz: Tensor, offsets: Tensor, batch: Batch) -> PointTargets:
        """Per-point targets of ``xyz [N, 3]`` (ragged by ``offsets [B + 1]``) against ``batch``'s
        ground truth (module doc). Samples without boxes are all background."""
        if batch.gt_boxes is None or batch.gt_labels is None or batch.gt_offsets is None:
            raise ValueError("PointRPNHead: the batch carries no ground truth")
        if batch.batch_size != offsets.numel() - 1:
            raise ValueError(f"PointRPNHead: offsets hold {offsets.numel() - 1} samples, batch "
                             f"{batch.batch_size}")
        from pointdistiller.ops import points_in_boxes

        points = xyz.detach().float().contiguous()
        device = points.device
        gt = batch.gt_boxes.to(device=device, dtype=torch.float32).contiguous()
        gt_labels = batch.gt_labels.to(device)
        gt_offsets = batch.gt_offsets.to(device)
        box_of = points_in_boxes(points, offsets, gt, gt_offsets)
        enlarged = gt.clone()
        enlarged[:, 3:6] += 2 * self.cfg.ignore_margin
        near = points_in_boxes(points, offsets, enlarged.contiguous(), gt_offsets) >= 0
        positive = box_of >= 0
        labels = torch.full_like(box_of, self.num_classes)
        labels[near & ~positive] = -1
        rows = box_of[positive]
        labels[positive] = gt_labels[rows]
        box_targets = points.new_zeros(points.shape[0], PointResidualCoder.code_size)
        box_targets[positive] = self.coder.encode(gt[rows], points[positive], gt_labels[rows])
        return PointTargets(labels=labels, box_targets=box_targets, positive=positive)

    def loss(self, cls: Tensor, box: Tensor, xyz: Tensor, offsets: Tensor,
             batch: Batch) -> Dict[str, Tensor]:
        """Training losses of a batch: 0-dim float32 ``"rpn_cls"`` (sigmoid focal loss summed over
        the non-ignored points) and ``"rpn_box"`` (smooth L1 summed over the 8 codes of the
        positive points), each divided by the number of positive points in the batch (at least 1).

        Args:
            cls: ``[N, K]``, box: ``[N, 8]``: :meth:`forward`'s outputs.
            xyz: ``[N, 3]`` float the points the outputs belong to; offsets: ``[B + 1]`` int64.
            batch: the batch with its ground truth.
        """
        self._check("loss", cls, box, xyz, offsets)
        t = self.targets(xyz, offsets, batch)
        norm = t.positive.sum().clamp_min(1).float()
        cls_loss = sigmoid_focal_loss(cls.float(), t.labels, self.cfg.focal_gamma,
                                      self.cfg.focal_alpha)
        box_loss = F.smooth_l1_loss(box[t.positive].float(), t.box_targets[t.positive],
                                    beta=self.cfg.smooth_l1_beta, reduction="sum")
        return {"rpn_cls": cls_loss / norm, "rpn_box": box_loss / norm}

    @torch.no_grad()
    def proposals(self, cls: Tensor, box: Tensor, xyz: Tensor, offsets: Tensor,
                  training: bool) -> Proposals:
        """Proposals of a batch. Per sample: score = max sigmoid over classes, label = its class;
        the ``nms_pre`` highest scores (ties to lower rows) are decoded with their label's mean
        size; non-finite boxes and boxes holding none of the sample's ``xyz`` are dropped
        (:func:`boxes_contain_points`); rotated BEV NMS at ``nms_iou_train`` / ``nms_iou_test``
        keeps at most ``nms_post_train`` / ``nms_post_test``, in descending score (ties to lower rows). Deterministic.

        Args: as :meth:`loss`, plus ``training`` (picks the NMS threshold).
        """
        from pointdistiller.ops import nms_bev

        self._check("proposals", cls, box, xyz, offsets)
        iou = self.cfg.nms_iou_train if training else self.cfg.nms_iou_test
        post = self.cfg.nms_post_train if training else self.cfg.nms_post_test
        points = xyz.detach().float().contiguous()
        score, label = torch.sigmoid(cls.detach().float()).max(dim=1)
        boxes, scores, labels, counts = [], [], [], []
        for b in range(offsets.numel() - 1):
            s, e = int(offsets[b]), int(offsets[b + 1])
            rows = torch.nonzero(torch.isfinite(score[s:e])).squeeze(1)
            if rows.numel() > self.cfg.nms_pre:
                rows = rows[top_k_lowest_index(score[s:e][rows], self.cfg.nms_pre)]
            decoded = self.coder.decode(box[s:e][rows].detach().float(), points[s:e][rows],
                                        label[s:e][rows])
            finite = torch.isfinite(decoded).all(dim=1)
            rows, decoded = rows[finite], decoded[finite].contiguous()
            filled = boxes_contain_points(decoded, points[s:e], rows)
            rows, decoded = rows[filled], decoded[filled]
            keep = nms_bev(decoded, score[s:e][rows].contiguous(), iou,
                           post_max_size=post)
            boxes.append(decoded[keep])
            scores.append(score[s:e][rows[keep]])
            labels.append(label[s:e][rows[keep]])
            counts.append(keep.numel())
        return Proposals(boxes=torch.cat(boxes) if boxes else points.new_zeros(0, 7),
                         scores=torch.cat(scores) if scores else points.new_zeros(0),
                         labels=torch.cat(labels) if labels else label.new_zeros(0),
                         offsets=offsets_from_counts(counts).to(points.device))
