"""Stage 2 of PointRCNN (mmdetection3d's ``PointRCNNRoIHead`` + ``Single3DRoIPointExtractor`` +
``PointRCNNBboxHead``): pools the stage-1 points of every RoI, refines each RoI with a small
PointNet++ in the RoI's own frame, and scores it with an IoU-like confidence.

Per RoI: ``roipoint_pool3d`` gathers ``num_sampled_points`` points inside the (not enlarged) box,
each with ``[point score, depth = ||xyz|| / depth_normalizer - 0.5, stage-1 features]``; the xyz
go to the RoI frame (``box_coding/roi_sampler.canonical_points``) and empty RoIs are zeroed. As in
mmdetection3d this runs under ``no_grad`` on detached inputs, so the stage-2 losses train the RoI
head only, never the backbone. ``[xyz, score, depth]`` (5) is lifted by ``xyz_up`` (1x1 conv with
bias + ReLU, no BN), concatenated with the features and merged (1x1 conv + ReLU); three
set-abstraction levels (``backbones_3d/pointnet2``, each RoI its own sample of the ragged ops, the
last one group-all) reduce the RoI to one vector; the cls and reg branches (1x1 conv + BN + ReLU)
give one IoU-score logit and 7 box deltas (``roi_sampler.encode_roi_targets``).
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pointdistiller.detectors.backbones_3d.pointnet2 import SALevel, SAModuleMSG, plan_geometry
from pointdistiller.detectors.batch import Batch, check_offsets, offsets_from_counts
from pointdistiller.detectors.box_coding.roi_sampler import (RoISampler, canonical_points,
                                                             decode_roi_boxes, encode_roi_targets,
                                                             soft_iou_labels)
from pointdistiller.detectors.heads.point_rpn_head import Proposals
from pointdistiller.detectors.post_processing import Detections, class_wise_nms
from pointdistiller.detectors.heads.config_block import ConfigBlock
from pointdistiller.detectors.heads.mlp import check_widths, linear_bn_relu

__all__ = ["RoIHeadConfig", "RoITargets", "RoIOutput", "PointRCNNRoIHead", "box_corners",
           "corner_loss"]

POINT_CHANNELS = 5       # canonical xyz, point score, depth


@dataclass
class RoIHeadConfig(ConfigBlock):
    """The RoI-head block of a PointRCNN config. Defaults: mmdetection3d's KITTI 3-class teacher.

    Attributes:
        num_sampled_points: points pooled per RoI.
        depth_normalizer: metres; the depth feature is ``||xyz|| / depth_normalizer - 0.5``.
        xyz_up_channels: widths lifting the 5 point channels (1x1 conv with bias + ReLU).
        merge_channels: width after merging with the stage-1 features (1x1 conv with bias + ReLU).
        sa_num_points: D-FPS centres per RoI of each SA level; the last must be None (group-all).
        sa_radii, sa_samples: ball query of each level (ignored for the group-all level).
        sa_mlps: layer widths of each (single-scale) SA level.
        cls_channels, reg_channels: hidden widths of the two branches (1x1 conv + BN + ReLU).
        rois_per_sample, pos_fraction, pos_iou, hard_neg_fraction, easy_neg_iou: the training
            sampler (:class:`RoISampler`).
        cls_fg_iou, cls_bg_iou: soft IoU label 1 above / 0 below, linear between.
        nms_iou, score_threshold, max_detections: test-time rotated BEV NMS per class, minimum
            score (exclusive), boxes kept per sample.
        nms_class_agnostic: one test-time NMS over the RoIs of all classes instead of one per
            class (OpenPCDet's PointRCNN: ``MULTI_CLASSES_NMS: False``).
        bn_eps: BatchNorm epsilon of the SA levels and branches (mmcv's BN default).
        smooth_l1_beta: transition point of the box loss.
        corner_delta: Huber transition of the corner loss, metres.
    """

    num_sampled_points: int = 512
    depth_normalizer: float = 70.0
    xyz_up_channels: Tuple[int, ...] = (128, 128)
    merge_channels: int = 128
    sa_num_points: Tuple[Optional[int], ...] = (128, 32, None)
    sa_radii: Tuple[float, ...] = (0.2, 0.4, 100.0)
    sa_samples: Tuple[int, ...] = (16, 16, 16)
    sa_mlps: Tuple[Tuple[int, ...], ...] = ((128, 128, 128), (128, 128, 256), (256, 256, 512))
    cls_channels: Tuple[int, ...] = (256, 256)
    reg_channels: Tuple[int, ...] = (256, 256)
    rois_per_sample: int = 128
    pos_fraction: float = 0.5
    pos_iou: float = 0.55
    hard_neg_fraction: float = 0.8
    easy_neg_iou: float = 0.1
    cls_fg_iou: float = 0.7
    cls_bg_iou: float = 0.25
    nms_iou: float = 0.1
    score_threshold: float = 0.1
    max_detections: int = 100
    nms_class_agnostic: bool = False
    bn_eps: float = 1e-5
    smooth_l1_beta: float = 1.0 / 9.0
    corner_delta: float = 1.0



@dataclass
class RoITargets:
    """Training targets of the sampled RoIs (row-aligned with :class:`RoIOutput`).

    Attributes:
        iou: ``[R]`` float32 best 3D IoU with a ground-truth box of the RoI's class.
        cls_labels: ``[R]`` float32 soft IoU labels.
        reg: ``[R, 7]`` float32 encoded boxes (zeros for negatives).
        gt_boxes: ``[R, 7]`` float32 assigned LiDAR ground truth (zeros for negatives).
        positive: ``[R]`` bool.
    """

    iou: Tensor
    cls_labels: Tensor
    reg: Tensor
    gt_boxes: Tensor
    positive: Tensor


@dataclass
class RoIOutput:
    """What the RoI head computed for a batch.

    Attributes:
        rois: ``[R, 7]`` float32 LiDAR boxes the head ran on; roi_scores: ``[R]`` float32 RPN
            scores; roi_labels: ``[R]`` int64 RPN classes; roi_offsets: ``[B + 1]`` int64.
        cls: ``[R, 1]`` IoU-score logits.
        reg: ``[R, 7]`` deltas in the RoI frame.
        targets: training targets (when the forward got a batch), else None.
    """

    rois: Tensor
    roi_scores: Tensor
    roi_labels: Tensor
    roi_offsets: Tensor
    cls: Tensor
    reg: Tensor
    targets: Optional[RoITargets] = None


def box_corners(boxes: Tensor) -> Tensor:
    """``[P, 7]`` LiDAR boxes -> ``[P, 8, 3]`` corners (differentiable; order as
    ``kitti_tools.geometry.lidar_box_corners``, bottom face first)."""
    sx = boxes.new_tensor([0.5, 0.5, -0.5, -0.5, 0.5, 0.5, -0.5, -0.5])
    sy = boxes.new_tensor([0.5, -0.5, -0.5, 0.5, 0.5, -0.5, -0.5, 0.5])
    sz = boxes.new_tensor([-0.5, -0.5, -0.5, -0.5, 0.5, 0.5, 0.5, 0.5])
    lx, ly, lz = boxes[:, 3:4] * sx, boxes[:, 4:5] * sy, boxes[:, 5:6] * sz
    c, s = torch.cos(boxes[:, 6:7]), torch.sin(boxes[:, 6:7])
    return torch.stack([lx * c - ly * s, lx * s + ly * c, lz], dim=2) + boxes[:, None, 0:3]


def corner_loss(pred: Tensor, gt: Tensor, delta: float = 1.0) -> Tensor:
    """Per box, the mean over the 8 corners of the Huber loss of the corner distance, each corner
    the closer of the ground truth's and of the ground truth turned by pi (mmdetection3d's
    ``get_corner_loss_lidar``). ``pred, gt [P, 7]`` -> ``[P]``."""
    flipped = torch.cat([gt[:, :6], gt[:, 6:7] + torch.pi], dim=1)
    corners = box_corners(pred)
    dist = torch.minimum((corners - box_corners(gt)).norm(dim=2),
                         (corners - box_corners(flipped)).norm(dim=2))
    return F.huber_loss(dist, torch.zeros_like(dist), reduction="none", delta=delta).mean(dim=1)


def _relu_layers(in_channels: int, widths: Sequence[int]) -> nn.Sequential:
    layers = []
    for width in widths:
        layers += [nn.Linear(in_channels, width), nn.ReLU()]
        in_channels = width
    return nn.Sequential(*layers)


def _check_widths(name: str, widths) -> None:
    check_widths("PointRCNNRoIHead", name, widths)


def _check_config(cfg: RoIHeadConfig) -> None:
    for name in ("xyz_up_channels", "cls_channels", "reg_channels"):
        _check_widths(name, getattr(cfg, name))
    _check_widths("merge_channels", (cfg.merge_channels,))
    _check_widths("num_sampled_points", (cfg.num_sampled_points,))
    levels = len(cfg.sa_num_points)
    per_level = ("sa_radii", "sa_samples", "sa_mlps")
    if not levels or any(len(getattr(cfg, n)) != levels for n in per_level):
        raise ValueError(f"PointRCNNRoIHead: sa_num_points, sa_radii, sa_samples and sa_mlps need "
                         f"one entry per level, got {cfg.sa_num_points}, {cfg.sa_radii}, "
                         f"{cfg.sa_samples}, {cfg.sa_mlps}")
    if cfg.sa_num_points[-1] is not None or None in cfg.sa_num_points[:-1]:
        raise ValueError(f"PointRCNNRoIHead: the last SA level (only) must be group-all (None), "
                         f"got sa_num_points {cfg.sa_num_points}")
    for i, widths in enumerate(cfg.sa_mlps):
        _check_widths(f"sa_mlps[{i}]", tuple(widths))
    if not 0 <= cfg.cls_bg_iou < cfg.cls_fg_iou <= 1:
        raise ValueError(f"PointRCNNRoIHead: need 0 <= cls_bg_iou < cls_fg_iou <= 1, got "
                         f"{cfg.cls_bg_iou} and {cfg.cls_fg_iou}")
    if cfg.depth_normalizer <= 0 or cfg.nms_iou < 0 or cfg.max_detections < 0 \
            or cfg.smooth_l1_beta < 0 or cfg.corner_delta <= 0:
        raise ValueError("PointRCNNRoIHead: need depth_normalizer > 0, nms_iou >= 0, "
                         "max_detections >= 0, smooth_l1_beta >= 0 and corner_delta > 0")


class PointRCNNRoIHead(nn.Module):
    """PointRCNN's RoI refinement head (see the module doc).

    Init (mmdetection3d's ``PointRCNNBboxHead``): Xavier-normal weights and zero biases for the
    head's own layers, the box output normal(0, 0.001); the SA levels keep
    :class:`SAModuleMSG`'s init.

    Args:
        in_channels: ``C`` of the stage-1 per-point features.
        cfg: :class:`RoIHeadConfig` (or a mapping of its fields; None: the defaults).
    """

    def __init__(self, in_channels: int, cfg: Optional[RoIHeadConfig] = None):
        super().__init__()
        cfg = RoIHeadConfig.of(cfg)
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"PointRCNNRoIHead: in_channels must be a positive int, got "
                             f"{in_channels!r}")
        _check_config(cfg)
        self.cfg, self.in_channels = cfg, in_channels
        self.sampler = RoISampler(cfg.rois_per_sample, cfg.pos_fraction, cfg.pos_iou,
                                  cfg.hard_neg_fraction, cfg.easy_neg_iou)
        self.xyz_up = _relu_layers(POINT_CHANNELS, cfg.xyz_up_channels)
        self.merge_down = _relu_layers(cfg.xyz_up_channels[-1] + in_channels, (cfg.merge_channels,))
        self.levels = tuple(
            SALevel(n, (), ()) if n is None else SALevel(n, (r,), (k,))
            for n, r, k in zip(cfg.sa_num_points, cfg.sa_radii, cfg.sa_samples))
        self.sa_modules = nn.ModuleList()
        width = cfg.merge_channels
        for widths in cfg.sa_mlps:
            self.sa_modules.append(SAModuleMSG(width, [tuple(widths)], use_xyz=True,
                                               bn_eps=cfg.bn_eps))
            width = self.sa_modules[-1].out_channels
        self.cls_branch = nn.Sequential(*linear_bn_relu(width, cfg.cls_channels, cfg.bn_eps))
        self.reg_branch = nn.Sequential(*linear_bn_relu(width, cfg.reg_channels, cfg.bn_eps))
        self.cls_out = nn.Linear(cfg.cls_channels[-1], 1)
        self.reg_out = nn.Linear(cfg.reg_channels[-1], 7)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The init of the class doc (the SA levels are left as built)."""
        for module in (self.xyz_up, self.merge_down, self.cls_branch, self.reg_branch,
                       self.cls_out):
            for layer in module.modules():
                if isinstance(layer, nn.Linear):
                    nn.init.xavier_normal_(layer.weight)
                    if layer.bias is not None:
                        nn.init.zeros_(layer.bias)
        nn.init.normal_(self.reg_out.weight, std=0.001)
        nn.init.zeros_(self.reg_out.bias)

    def forward(self, xyz: Tensor, features: Tensor, point_scores: Tensor, offsets: Tensor,
                proposals: Proposals, batch: Optional[Batch] = None) -> RoIOutput:
        """
        Args:
            xyz: ``[N, 3]`` float32 stage-1 points (LiDAR frame); offsets: ``[B + 1]`` int64.
            features: ``[N, in_channels]`` float32 stage-1 per-point features.
            point_scores: ``[N]`` float32 per-point foreground score (max sigmoid of the RPN
                class logits).
            proposals: the RPN's :class:`Proposals` of the same ``B`` samples.
            batch: the batch with ground truth: then ``rois_per_sample`` RoIs per sample are
                sampled from the proposals (random, global generator) and targets computed; None:
                every proposal is a RoI.

        Returns:
            :class:`RoIOutput`.
        """
        self._check_inputs(xyz, features, point_scores, offsets, proposals, batch)
        targets = None
        if batch is not None:
            rois, roi_scores, roi_labels, roi_offsets, targets = self._sample(proposals, batch)
        else:
            rois, roi_scores, roi_labels, roi_offsets = (proposals.boxes, proposals.scores,
                                                         proposals.labels, proposals.offsets)
        pooled = self._pool(xyz, features, point_scores, offsets, rois, roi_offsets)
        cls, reg = self._refine(pooled)
        return RoIOutput(rois, roi_scores, roi_labels, roi_offsets, cls, reg, targets)

    def _check_inputs(self, xyz, features, point_scores, offsets, proposals, batch) -> None:
        def shape(t):
            return tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__

        if not isinstance(xyz, Tensor) or xyz.dim() != 2 or xyz.shape[1] != 3:
            raise ValueError(f"PointRCNNRoIHead: xyz must be [N, 3], got {shape(xyz)}")
        n = xyz.shape[0]
        if not isinstance(features, Tensor) or tuple(features.shape) != (n, self.in_channels):
            raise ValueError(f"PointRCNNRoIHead: features must be [{n}, {self.in_channels}], got "
                             f"{shape(features)}")
        if not isinstance(point_scores, Tensor) or tuple(point_scores.shape) != (n,):
            raise ValueError(f"PointRCNNRoIHead: point_scores must be [{n}], got "
                             f"{shape(point_scores)}")
        check_offsets("PointRCNNRoIHead", offsets, n)
        if not isinstance(proposals, Proposals):
            raise ValueError(f"PointRCNNRoIHead: proposals must be Proposals, got "
                             f"{type(proposals).__name__}")
        r = proposals.boxes.shape[0] if proposals.boxes.dim() == 2 else -1
        if tuple(proposals.boxes.shape) != (r, 7) or tuple(proposals.scores.shape) != (r,) \
                or tuple(proposals.labels.shape) != (r,):
            raise ValueError(f"PointRCNNRoIHead: proposals need boxes [R, 7], scores [R], labels "
                             f"[R], got {shape(proposals.boxes)}, {shape(proposals.scores)}, "
                             f"{shape(proposals.labels)}")
        po = proposals.offsets
        if po.shape != offsets.shape or int(po[0]) != 0 or int(po[-1]) != r:
            raise ValueError(f"PointRCNNRoIHead: proposals.offsets must be [{offsets.numel()}] "
                             f"from 0 to {r} (the points' batch), got {po.tolist()}")
        if batch is not None and batch.batch_size != offsets.numel() - 1:
            raise ValueError(f"PointRCNNRoIHead: batch has {batch.batch_size} samples, the points "
                             f"{offsets.numel() - 1}")

    @torch.no_grad()
    def _sample(self, proposals: Proposals, batch: Batch):
        """Sampled RoIs (boxes, scores, labels, offsets) of every sample and their targets."""
        rows, ious, positives, gts = [], [], [], []
        for b in range(proposals.offsets.numel() - 1):
            start, end = int(proposals.offsets[b]), int(proposals.offsets[b + 1])
            gt_boxes, gt_labels = batch.sample_gt(b)
            gt_boxes = gt_boxes.to(proposals.boxes)
            s = self.sampler.sample(proposals.boxes[start:end], proposals.labels[start:end],
                                    gt_boxes, gt_labels.to(proposals.labels.device))
            gt = gt_boxes.new_zeros(s.indices.numel(), 7)
            gt[s.positive] = gt_boxes[s.gt_index[s.positive]]
            rows.append(start + s.indices)
            ious.append(s.iou)
            positives.append(s.positive)
            gts.append(gt)
        counts = [r.numel() for r in rows]
        rows, iou, positive, gt = (torch.cat(rows), torch.cat(ious), torch.cat(positives),
                                   torch.cat(gts))
        rois = proposals.boxes[rows]
        reg = torch.zeros_like(rois)
        reg[positive] = encode_roi_targets(rois[positive], gt[positive])
        labels = soft_iou_labels(iou, self.cfg.cls_fg_iou, self.cfg.cls_bg_iou)
        targets = RoITargets(iou=iou, cls_labels=labels, reg=reg, gt_boxes=gt, positive=positive)
        offsets = offsets_from_counts(counts).to(proposals.offsets.device)
        return rois, proposals.scores[rows], proposals.labels[rows], offsets, targets

    @torch.no_grad()
    def _pool(self, xyz: Tensor, features: Tensor, point_scores: Tensor, offsets: Tensor,
              rois: Tensor, roi_offsets: Tensor) -> Tensor:
        """``[R, num_sampled_points, 5 + C]``: canonical xyz, score, depth, features."""
        from pointdistiller.ops import roipoint_pool3d

        xyz = xyz.detach().float().contiguous()
        depth = xyz.norm(dim=1, keepdim=True) / self.cfg.depth_normalizer - 0.5
        extra = torch.cat([point_scores.detach().float()[:, None], depth,
                           features.detach().float()], dim=1).contiguous()
        pooled, empty = roipoint_pool3d(xyz, extra, offsets, rois.detach().float().contiguous(),
                                        roi_offsets, self.cfg.num_sampled_points)
        pooled[..., 0:3] = canonical_points(pooled[..., 0:3], rois)
        pooled[empty] = 0
        return pooled

    def _refine(self, pooled: Tensor) -> Tuple[Tensor, Tensor]:
        r, s, _ = pooled.shape
        if r == 0:
            # no RoIs: empty outputs that still reach the graph, so loss().backward() works
            tie = self.cls_out.bias.sum() * 0 + self.reg_out.bias.sum() * 0
            return pooled.new_zeros(0, 1) + tie, pooled.new_zeros(0, 7) + tie
        rows = pooled.reshape(r * s, -1)
        xyz = rows[:, 0:3].contiguous()
        lifted = self.xyz_up(rows[:, :POINT_CHANNELS])
        feats = self.merge_down(torch.cat([lifted, rows[:, POINT_CHANNELS:]], dim=1))
        offsets = torch.arange(r + 1, device=rows.device, dtype=torch.int64) * s
        geometry = plan_geometry(xyz, offsets, self.levels, with_interpolation=False)
        for sa, level in zip(self.sa_modules, geometry.levels):
            feats = sa(xyz, feats, level)
            xyz = level.xyz
        return self.cls_out(self.cls_branch(feats)), self.reg_out(self.reg_branch(feats))

    def _check_output(self, where: str, out: RoIOutput) -> None:
        r = out.rois.shape[0]
        if tuple(out.cls.shape) != (r, 1) or tuple(out.reg.shape) != (r, 7):
            raise ValueError(f"PointRCNNRoIHead.{where}: cls must be [{r}, 1] and reg [{r}, 7] for "
                             f"{r} RoIs, got {tuple(out.cls.shape)} and {tuple(out.reg.shape)}")

    def loss(self, out: RoIOutput) -> Dict[str, Tensor]:
        """Losses of a training forward (``out.targets`` set):

        - ``rcnn_cls``: BCE with logits against the soft IoU labels, mean over the sampled RoIs;
        - ``rcnn_box``: smooth L1 (``smooth_l1_beta``) of the positives' deltas, summed / #pos;
        - ``rcnn_corner``: :func:`corner_loss` of the positives' decoded boxes, summed / #pos.

        ``max(1, count)`` normalises, so a batch without RoIs or positives gives zeros.
        """
        if out.targets is None:
            raise ValueError("PointRCNNRoIHead.loss: the output has no targets (run forward with "
                             "the batch)")
        self._check_output("loss", out)
        t = out.targets
        pos = t.positive
        num = max(1, out.rois.shape[0])
        num_pos = max(1, int(pos.sum()))
        cls = F.binary_cross_entropy_with_logits(out.cls[:, 0], t.cls_labels.to(out.cls),
                                                 reduction="sum") / num
        reg = out.reg[pos]
        box = F.smooth_l1_loss(reg, t.reg[pos], beta=self.cfg.smooth_l1_beta, reduction="sum")
        boxes = decode_roi_boxes(out.rois[pos].detach(), reg)
        corner = corner_loss(boxes, t.gt_boxes[pos], self.cfg.corner_delta).sum()
        return {"rcnn_cls": cls, "rcnn_box": box / num_pos, "rcnn_corner": corner / num_pos}

    @torch.no_grad()
    def predict(self, out: RoIOutput) -> List[Detections]:
        """Final detections, one :class:`Detections` per sample (empty ones included): refined
        boxes decoded to the LiDAR frame, score ``sigmoid(cls)``, label the RoI's RPN class; per
        class (or over all classes at once, ``nms_class_agnostic``), boxes with score >
        ``score_threshold`` go through rotated BEV NMS (``nms_iou``);
        the survivors sorted by score (stable, class order breaks ties), at most
        ``max_detections``. Boxes that decode to non-finite values are dropped."""
        self._check_output("predict", out)
        boxes = decode_roi_boxes(out.rois.float(), out.reg.float())
        scores = torch.sigmoid(out.cls[:, 0].float())
        valid = (scores > self.cfg.score_threshold) & torch.isfinite(boxes).all(dim=1)
        results = []
        for b in range(out.roi_offsets.numel() - 1):
            start, end = int(out.roi_offsets[b]), int(out.roi_offsets[b + 1])
            rows = start + torch.nonzero(valid[start:end]).squeeze(1)
            results.append(class_wise_nms(boxes[rows], scores[rows], out.roi_labels[rows],
                                          self.cfg.nms_iou, self.cfg.max_detections,
                                          self.cfg.nms_class_agnostic))
        return results
