"""Anchor-based dense head of PointPillars and SECOND: 1x1 convolutions for class scores, box
residuals and direction bins on the BEV feature map, with its training losses and post-processing.

Channel layouts (mmdetection3d's): with ``A`` anchors per cell (class-major, then rotation) and
``K`` classes, channel ``a * K + k`` of ``cls`` is the logit of class ``k`` for anchor ``a``,
channel ``a * 7 + c`` of ``box`` residual ``c`` and channel ``a * 2 + d`` of ``dir`` bin ``d``;
``x.permute(0, 2, 3, 1).reshape(B, ny * nx * A, C)`` lines the maps up with the flattened anchors
of :class:`~pointdistiller.detectors.box_coding.AnchorGenerator`.
"""
import math
from dataclasses import dataclass
from typing import Dict, List, Literal, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from pointdistiller.detectors.batch import Batch
from pointdistiller.kitti_tools.classes import CLASS_NAMES

from pointdistiller.detectors.box_coding.anchors import AnchorGenerator
from pointdistiller.detectors.box_coding.assigner import AnchorAssigner, AssignResult
from pointdistiller.detectors.box_coding.coder import ResidualCoder
from pointdistiller.detectors.losses import box_regression_loss, direction_loss, sigmoid_focal_loss
from pointdistiller.detectors.post_processing import Detections, decode_detections
from pointdistiller.detectors.heads.config_block import ConfigBlock

NUM_DIR_BINS = 2


@dataclass
class HeadOutput:
    """Raw head maps of a batch.

    Attributes:
        cls: ``[B, A * K, ny, nx]`` class logits.
        box: ``[B, A * 7, ny, nx]`` box residuals (:class:`ResidualCoder`).
        dir: ``[B, A * 2, ny, nx]`` direction-bin logits.
    """

    cls: Tensor
    box: Tensor
    dir: Tensor

    def dense_response(self) -> Tuple[Tensor, Tensor]:
        """(class logits ``[n, K]``, box residuals ``[n, 7]``), one row per anchor of every map
        cell (``n = B * A * ny * nx``), for response KD."""
        b, a7, h, w = self.box.shape
        a = a7 // 7
        k = self.cls.shape[1] // a
        cls = self.cls.reshape(b, a, k, h, w).permute(0, 1, 3, 4, 2).reshape(-1, k)
        box = self.box.reshape(b, a, 7, h, w).permute(0, 1, 3, 4, 2).reshape(-1, 7)
        return cls, box


@dataclass
class AnchorHeadConfig(ConfigBlock):
    """The ``head`` block of a detector config: everything of :class:`AnchorHead` except what the
    detector derives (input width, point range, feature map size). Defaults: mmdetection3d's
    PointPillars KITTI 3-class head; the fields are documented on :class:`AnchorHead`."""

    class_names: Tuple[str, ...] = CLASS_NAMES
    anchor_sizes: Tuple[Tuple[float, float, float], ...] = ((3.9, 1.6, 1.56), (0.8, 0.6, 1.73),
                                                          (1.76, 0.6, 1.73))
    anchor_z_centers: Tuple[float, ...] = (-1.78, -0.6, -0.6)
    anchor_z_origin: Literal["bottom", "center"] = "bottom"
    anchor_rotations: Tuple[float, ...] = (0.0, math.pi / 2)
    pos_iou_thresholds: Tuple[float, ...] = (0.6, 0.5, 0.5)
    neg_iou_thresholds: Tuple[float, ...] = (0.45, 0.35, 0.35)
    assign_iou: Literal["nearest_bev", "rotated_bev"] = "nearest_bev"
    focal_gamma: float = 2.0
    focal_alpha: float = 0.25
    cls_weight: float = 1.0
    box_weight: float = 2.0
    smooth_l1_beta: float = 1.0 / 9.0
    code_weights: Tuple[float, ...] = (1.0,) * 7
    dir_weight: float = 0.2
    dir_offset: float = -math.pi / 4
    score_threshold: float = 0.1
    nms_pre: int = 100
    nms_iou_threshold: float = 0.01
    max_detections: int = 50



class AnchorHead(nn.Module):
    """Anchor head with per-class anchors, per-class max-IoU assignment, focal / smooth-L1 /
    direction losses and rotated-NMS post-processing. Defaults are mmdetection3d's PointPillars
    KITTI 3-class settings (SECOND overrides the thresholds: Car 0.6 / 0.45, Pedestrian and
    Cyclist 0.35 / 0.2).

    Args:
        in_channels: ``C`` of the BEV input map.
        point_range: ``(x_min, y_min, z_min, x_max, y_max, z_max)`` metres covered by the input map.
        feature_map_size: ``(ny, nx)`` of the input map.
        config: :class:`AnchorHeadConfig` (or a mapping of its fields; None: the defaults):

    Config fields:
        class_names: class order of the outputs (``K`` classes).
        anchor_sizes: per class ``(l, w, h)`` metres.
        anchor_z_centers: per class anchor height in metres; by default (``anchor_z_origin=
            "bottom"``) these are mmdetection3d's anchor-range z values, i.e. anchor bottoms, and the
            anchor centre is ``z + h / 2`` (Car -1.0); see ``box_coding/anchors.py``.
        anchor_z_origin: ``"bottom"`` or ``"center"``: how ``anchor_z_centers`` are read.
        anchor_rotations: anchor yaws, radians (``R``); ``A = K * R``.
        pos_iou_thresholds, neg_iou_thresholds: per class BEV IoU thresholds of the assignment.
        assign_iou: ``"nearest_bev"`` (axis-aligned after snapping yaw to 0 / 90 degrees) or
            ``"rotated_bev"`` (needs the ``iou3d`` op).
        focal_gamma, focal_alpha: sigmoid focal loss parameters.
        cls_weight, box_weight, dir_weight: loss multipliers.
        smooth_l1_beta: smooth-L1 transition point of the box loss.
        code_weights: 7 per-residual weights of the box loss.
        dir_offset: radians subtracted from yaw before binning the direction (mmdetection3d: -pi/4).
        score_threshold: test-time minimum class probability.
        nms_pre: test-time anchors kept before NMS.
        nms_iou_threshold: test-time rotated BEV NMS IoU.
        max_detections: test-time boxes kept per sample.
    """

    def __init__(self, in_channels: int, point_range: Sequence[float],
                 feature_map_size: Tuple[int, int], config: Optional[AnchorHeadConfig] = None):
        super().__init__()
        cfg = AnchorHeadConfig.of(config)
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"AnchorHead: in_channels must be a positive int, got {in_channels!r}")
        self.class_names = tuple(cfg.class_names)
        if len(cfg.anchor_sizes) != len(self.class_names):
            raise ValueError(f"AnchorHead: anchor_sizes has {len(cfg.anchor_sizes)} entries for "
                             f"{len(self.class_names)} classes {self.class_names}")
        if len(cfg.code_weights) != 7:
            raise ValueError(f"AnchorHead: code_weights needs 7 values, got {len(cfg.code_weights)}")
        if cfg.smooth_l1_beta < 0 or cfg.focal_gamma < 0 or not 0 <= cfg.focal_alpha <= 1:
            raise ValueError("AnchorHead: need smooth_l1_beta >= 0, focal_gamma >= 0 and "
                             "0 <= focal_alpha <= 1")
        self.anchor_generator = AnchorGenerator(point_range, feature_map_size, cfg.anchor_sizes,
                                                cfg.anchor_z_centers, cfg.anchor_rotations,
                                                cfg.anchor_z_origin)
        self.coder = ResidualCoder()
        self.assigner = AnchorAssigner(len(self.class_names), cfg.pos_iou_thresholds,
                                       cfg.neg_iou_thresholds, iou_mode=cfg.assign_iou,
                                       coder=self.coder, dir_offset=cfg.dir_offset,
                                       num_dir_bins=NUM_DIR_BINS)
        self.num_classes = len(self.class_names)
        self.num_anchors = self.anchor_generator.num_anchors_per_location
        self.feature_map_size = self.anchor_generator.feature_map_size
        self.in_channels = in_channels
        self.focal_gamma, self.focal_alpha = float(cfg.focal_gamma), float(cfg.focal_alpha)
        self.cls_weight, self.box_weight = float(cfg.cls_weight), float(cfg.box_weight)
        self.dir_weight = float(cfg.dir_weight)
        self.smooth_l1_beta = float(cfg.smooth_l1_beta)
        self.code_weights = tuple(float(w) for w in cfg.code_weights)
        self.dir_offset = float(cfg.dir_offset)
        self.score_threshold = float(cfg.score_threshold)
        self.nms_pre = int(cfg.nms_pre)
        self.nms_iou_threshold = float(cfg.nms_iou_threshold)
        self.max_detections = int(cfg.max_detections)

        self.conv_cls = nn.Conv2d(in_channels, self.num_anchors * self.num_classes, 1)
        self.conv_box = nn.Conv2d(in_channels, self.num_anchors * ResidualCoder.code_size, 1)
        self.conv_dir = nn.Conv2d(in_channels, self.num_anchors * NUM_DIR_BINS, 1)
        self._anchor_cache: Dict[torch.device, Tuple[Tensor, Tensor]] = {}
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """mmdetection3d init: weights normal(0, 0.01), biases 0, class bias -log((1 - 0.01) / 0.01)
        so every anchor starts at probability 0.01 (focal-loss prior)."""
        for conv in (self.conv_cls, self.conv_box, self.conv_dir):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        nn.init.constant_(self.conv_cls.bias, -math.log((1 - 0.01) / 0.01))

    def anchors(self, device: Optional[torch.device] = None) -> Tuple[Tensor, Tensor]:
        """Flattened anchors ``[N, 7]`` float32 and their classes ``[N]`` int64 on ``device``
        (``N = ny * nx * A``), cached per device."""
        device = torch.device(device) if device is not None else torch.device("cpu")
        if device not in self._anchor_cache:
            anchors = self.anchor_generator.generate(device=device).reshape(-1, 7)
            self._anchor_cache[device] = (anchors, self.anchor_generator.anchor_classes(device))
        return self._anchor_cache[device]

    def forward(self, bev: Tensor) -> HeadOutput:
        """``bev [B, C, ny, nx]`` float -> :class:`HeadOutput`."""
        if bev.dim() != 4 or bev.shape[1] != self.in_channels or tuple(bev.shape[2:]) != self.feature_map_size:
            raise ValueError(f"AnchorHead: bev must be [B, {self.in_channels}, {self.feature_map_size[0]}, "
                             f"{self.feature_map_size[1]}], got {tuple(bev.shape)}")
        return HeadOutput(cls=self.conv_cls(bev), box=self.conv_box(bev), dir=self.conv_dir(bev))

    def _flatten(self, out: HeadOutput) -> Tuple[Tensor, Tensor, Tensor]:
        """-> cls ``[B, N, K]``, box ``[B, N, 7]``, dir ``[B, N, 2]``."""
        b, _, ny, nx = out.cls.shape
        expected = {"cls": self.num_classes, "box": ResidualCoder.code_size, "dir": NUM_DIR_BINS}
        flat = []
        for name, width in expected.items():
            t = getattr(out, name)
            if tuple(t.shape) != (b, self.num_anchors * width, *self.feature_map_size):
                raise ValueError(f"AnchorHead: HeadOutput.{name} must be [{b}, {self.num_anchors * width}, "
                                 f"{self.feature_map_size[0]}, {self.feature_map_size[1]}], got "
                                 f"{tuple(t.shape)}")
            flat.append(t.permute(0, 2, 3, 1).reshape(b, ny * nx * self.num_anchors, width))
        return flat[0], flat[1], flat[2]

    @torch.no_grad()
    def assign(self, batch: Batch, device: Optional[torch.device] = None) -> List[AssignResult]:
        """Training targets of every sample of ``batch`` (one :class:`AssignResult` over the ``N``
        flattened anchors per sample)."""
        anchors, anchor_classes = self.anchors(device)
        return [self.assigner.assign(anchors, anchor_classes, *batch.sample_gt(b))
                for b in range(batch.batch_size)]

    def loss(self, out: HeadOutput, batch: Batch) -> Dict[str, Tensor]:
        """Training losses of a batch.

        Returns a dict of 0-dim float32 tensors: ``"cls"`` (focal), ``"box"`` (smooth L1),
        ``"dir"`` (cross-entropy), each already multiplied by its weight and divided by the number of
        positive anchors in the batch (at least 1); ``"total"`` their sum; ``"num_pos"`` the number
        of positive anchors (no gradient).
        """
        cls, box, dirs = self._flatten(out)
        if batch.batch_size != cls.shape[0]:
            raise ValueError(f"AnchorHead.loss: head outputs hold {cls.shape[0]} samples, batch "
                             f"{batch.batch_size}")
        targets = self.assign(batch, cls.device)
        labels = torch.stack([t.labels for t in targets])
        pos = torch.stack([t.pos_mask for t in targets])
        box_targets = torch.stack([t.box_targets for t in targets])
        dir_targets = torch.stack([t.dir_targets for t in targets])
        num_pos = pos.sum()
        norm = num_pos.clamp_min(1).float()
        cls_loss = sigmoid_focal_loss(cls.reshape(-1, self.num_classes).float(), labels.reshape(-1),
                                      self.focal_gamma, self.focal_alpha)
        box_loss = box_regression_loss(box[pos].float(), box_targets[pos], self.smooth_l1_beta,
                                       cls.new_tensor(self.code_weights, dtype=torch.float32))
        dir_loss = direction_loss(dirs[pos].float(), dir_targets[pos])
        losses = {
            "cls": self.cls_weight * cls_loss / norm,
            "box": self.box_weight * box_loss / norm,
            "dir": self.dir_weight * dir_loss / norm,
        }
        losses["total"] = losses["cls"] + losses["box"] + losses["dir"]
        losses["num_pos"] = num_pos.float()
        return losses

    @torch.no_grad()
    def predict(self, out: HeadOutput, batch: Optional[Batch] = None) -> List[Detections]:
        """Post-processed detections, one :class:`Detections` per sample (``post_processing.py``)."""
        cls, box, dirs = self._flatten(out)
        if batch is not None and batch.batch_size != cls.shape[0]:
            raise ValueError(f"AnchorHead.predict: head outputs hold {cls.shape[0]} samples, batch "
                             f"{batch.batch_size}")
        anchors, _ = self.anchors(cls.device)
        return [decode_detections(cls[b], box[b], dirs[b], anchors, self.coder,
                                  score_threshold=self.score_threshold, nms_pre=self.nms_pre,
                                  nms_iou_threshold=self.nms_iou_threshold,
                                  max_detections=self.max_detections, dir_offset=self.dir_offset)
                for b in range(cls.shape[0])]
