"""PointRCNN (Shi et al., CVPR 2019) as mmdetection3d configures it for PointDistiller: direct
residual box coding in both stages (not the original bin-based loss)."""
from dataclasses import dataclass
from typing import ClassVar, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from pointdistiller.detectors.backbones_3d.pointnet2 import (PointGeometry, PointNet2SAMSG,
                                                             PointNetFPNeck, SALevel, plan_geometry)
from pointdistiller.detectors.batch import Batch
from pointdistiller.detectors.heads.point_rcnn_roi_head import (PointRCNNRoIHead, RoIHeadConfig,
                                                                RoIOutput)
from pointdistiller.detectors.heads.point_rpn_head import (PointRPNHead, PointRPNHeadConfig,
                                                           Proposals)
from pointdistiller.detectors.outputs import DetectorOutput, FeatureTap

_TEACHER_SA_MLPS = (((16, 16, 32), (32, 32, 64)), ((64, 64, 128), (64, 96, 128)),
                    ((128, 196, 256), (128, 196, 256)), ((256, 256, 512), (256, 384, 512)))
_TEACHER_FP = ((1536, 512, 512), (768, 512, 512), (608, 256, 256), (257, 128, 128))


@dataclass
class PointRCNNOutput:
    """The raw outputs of both stages.

    Attributes:
        point_cls: ``[N, K]`` stage-1 class logits, one row per ``batch.points`` row.
        point_box: ``[N, 8]`` stage-1 box residuals (``PointResidualCoder``).
        proposals: the stage-1 proposals after NMS (None when the forward stopped at the features).
        roi: the stage-2 outputs on the RoIs (sampled against the ground truth in training).
    """

    point_cls: Tensor
    point_box: Tensor
    proposals: Optional[Proposals] = None
    roi: Optional[RoIOutput] = None

    def dense_response(self) -> Tuple[Tensor, Tensor]:
        """(class logits ``[n, K]``, box values ``[n, D]``) of the dense stage (response KD): the
        per-point stage-1 outputs."""
        return self.point_cls, self.point_box


class PointRCNN(nn.Module):
    """PointNet++ MSG backbone -> feature propagation to every input point -> per-point stage-1
    head (segmentation + box proposals) -> proposal NMS -> RoI point pooling and stage-2
    refinement.

    Defaults are the paper's teacher (architectures.md); students change the widths only (depth,
    radii and sample counts stay, so a teacher and its students sample and group identically and
    share that work through ``batch.cache``).

    Args:
        point_range: ``(x_min, y_min, z_min, x_max, y_max, z_max)`` metres; the loader keeps the
            points inside.
        num_points: ``(train, test)`` points per frame the loader resamples each cloud to.
        num_point_features: values per point (x, y, z, intensity); the columns after xyz are the
            backbone's input features.
        sa_num_points: D-FPS centres of each set-abstraction level.
        sa_radii: ball-query radii of each level (one per scale).
        sa_samples: ball-query samples of each level (one per scale).
        sa_mlps: per level, per scale, the MLP widths.
        fp_channels: per feature-propagation module, ``(in, out, out)``, deepest first.
        rpn: the stage-1 head (:class:`PointRPNHeadConfig`).
        roi: the stage-2 head (:class:`RoIHeadConfig`).
    """

    # what the loader feeds it: clouds cropped and resampled to num_points (data/collate.py)
    input_kind: ClassVar[str] = "points"

    def __init__(self,
                 point_range: Tuple[float, float, float, float, float, float] = (
                     0.0, -40.0, -3.0, 70.4, 40.0, 1.0),
                 num_points: Tuple[int, int] = (16384, 16384),
                 num_point_features: int = 4,
                 sa_num_points: Tuple[int, ...] = (4096, 1024, 256, 64),
                 sa_radii: Tuple[Tuple[float, ...], ...] = ((0.1, 0.5), (0.5, 1.0), (1.0, 2.0),
                                                            (2.0, 4.0)),
                 sa_samples: Tuple[Tuple[int, ...], ...] = ((16, 32), (16, 32), (16, 32), (16, 32)),
                 sa_mlps: Tuple[Tuple[Tuple[int, ...], ...], ...] = _TEACHER_SA_MLPS,
                 fp_channels: Tuple[Tuple[int, ...], ...] = _TEACHER_FP,
                 rpn: Optional[PointRPNHeadConfig] = None,
                 roi: Optional[RoIHeadConfig] = None):
        super().__init__()
        if num_point_features < 3:
            raise ValueError(f"num_point_features: at least x, y, z (3), got {num_point_features}")
        lengths = {len(sa_num_points), len(sa_radii), len(sa_samples), len(sa_mlps)}
        if len(lengths) != 1:
            raise ValueError("sa_num_points, sa_radii, sa_samples and sa_mlps must have one entry "
                             f"per level, got {len(sa_num_points)}, {len(sa_radii)}, "
                             f"{len(sa_samples)}, {len(sa_mlps)}")
        if len(fp_channels) != len(sa_num_points):
            raise ValueError(f"fp_channels: one module per level ({len(sa_num_points)}), got "
                             f"{len(fp_channels)}")
        self.point_range = tuple(float(v) for v in point_range)
        self.num_points = tuple(int(v) for v in num_points)
        self.num_point_features = int(num_point_features)
        self.levels = tuple(SALevel(int(n), tuple(float(r) for r in radii), tuple(int(s) for s in samples))
                            for n, radii, samples in zip(sa_num_points, sa_radii, sa_samples))
        self.backbone = PointNet2SAMSG(num_point_features - 3, self.levels, sa_mlps)
        self.neck = PointNetFPNeck(fp_channels)
        self.neck.check_inputs(self.backbone.out_channels)
        self.rpn = PointRPNHead(self.neck.out_channels, rpn)
        self.roi_head = PointRCNNRoIHead(self.neck.out_channels, roi)
        self.feature_info: List[FeatureTap] = [FeatureTap("fp", self.neck.out_channels, "point")]

    def geometry(self, batch: Batch) -> PointGeometry:
        """The sampling, grouping and interpolation indices of ``batch`` for this model's levels,
        computed once per batch and kept in ``batch.cache`` (a teacher and a student with the same
        levels see the same points and share them)."""
        key = ("pointnet2", self.levels)
        geometry = batch.cache.get(key)
        if geometry is None:
            geometry = plan_geometry(batch.points[:, :3].contiguous(), batch.point_offsets,
                                     self.levels)
            batch.cache[key] = geometry
        return geometry

    def forward(self, batch: Batch, head: bool = True) -> DetectorOutput:
        """Both stages (``head=False``: only the feature taps, as a frozen teacher needs them)."""
        xyz = batch.points[:, :3].contiguous()
        extra = batch.points[:, 3:self.num_point_features].contiguous()
        geometry = self.geometry(batch)
        levels = self.backbone(extra if extra.shape[1] else None, geometry)   # [N, C0], L x [M_i, C_i]
        fp = self.neck(levels, geometry)                                      # [N, C]
        features = {"fp": fp}
        if not head:
            return DetectorOutput(head=None, features=features)
        point_cls, point_box = self.rpn(fp)                                   # [N, K], [N, 8]
        proposals = self.rpn.proposals(point_cls, point_box, xyz, batch.point_offsets,
                                       training=self.training)
        point_scores = torch.sigmoid(point_cls.detach()).max(dim=1).values
        roi = self.roi_head(xyz, fp, point_scores, batch.point_offsets, proposals,
                            batch if self.training else None)
        return DetectorOutput(head=PointRCNNOutput(point_cls, point_box, proposals, roi),
                              features=features)

    def loss(self, batch: Batch, out: DetectorOutput) -> Dict[str, Tensor]:
        """Both stages' losses (``rpn_cls``, ``rpn_box``, ``rcnn_cls``, ``rcnn_box``,
        ``rcnn_corner``) and their sum ``total``."""
        head: PointRCNNOutput = out.head
        losses = dict(self.rpn.loss(head.point_cls, head.point_box, batch.points[:, :3],
                                    batch.point_offsets, batch))
        losses.update(self.roi_head.loss(head.roi))
        losses["total"] = sum(losses.values())
        return losses

    def predict(self, batch: Batch, out: DetectorOutput):
        """Post-processed detections, one ``Detections`` per sample."""
        return self.roi_head.predict(out.head.roi)
