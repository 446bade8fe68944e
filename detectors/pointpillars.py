"""PointPillars (Lang et al., CVPR 2019), mmdetection3d's KITTI 3-class variant."""
from typing import ClassVar, Dict, List, Optional, Tuple

from torch import Tensor, nn

from pointdistiller.detectors.batch import Batch
from pointdistiller.detectors.backbones_2d import SECONDBackbone, SECONDFPN
from pointdistiller.detectors.heads.anchor_head import AnchorHead, AnchorHeadConfig
from pointdistiller.detectors.middle_encoders import PointPillarsScatter
from pointdistiller.detectors.outputs import DetectorOutput, FeatureTap
from pointdistiller.detectors.voxel_encoders import PillarFeatureNet, VoxelizationSettings, grid_size


class PointPillars(nn.Module):
    """Pillar feature net -> dense BEV scatter -> 2D backbone -> upsampling neck -> anchor head.

    Defaults are the paper's teacher (architectures.md); students change the widths only.

    Args:
        point_range: ``(x_min, y_min, z_min, x_max, y_max, z_max)`` metres.
        voxel_size: pillar size ``(vx, vy, vz)`` metres (vz spans the range: one pillar per cell).
        max_points_per_voxel: points kept per pillar by the voxelizer.
        max_voxels: ``(train, test)`` pillars kept per frame by the voxelizer.
        num_point_features: values per point (x, y, z, intensity).
        pillar_channels: width P of the pillar feature net.
        backbone_layers: extra 3x3 convs per backbone block.
        backbone_strides: stride of each backbone block.
        backbone_channels: width of each backbone block.
        neck_strides: upsampling factor of each block in the neck.
        neck_channels: width U of each upsampled block (the head sees ``U * blocks``).
        head: the head block (:class:`AnchorHeadConfig`, or a mapping of its fields).
    """

    # what the loader feeds it: hard voxels of its voxelization settings (data/collate.py)
    input_kind: ClassVar[str] = "voxels"

    def __init__(self,
                 point_range: Tuple[float, float, float, float, float, float] = (
                     0.0, -39.68, -3.0, 69.12, 39.68, 1.0),
                 voxel_size: Tuple[float, float, float] = (0.16, 0.16, 4.0),
                 max_points_per_voxel: int = 32,
                 max_voxels: Tuple[int, int] = (16000, 40000),
                 num_point_features: int = 4,
                 pillar_channels: int = 64,
                 backbone_layers: Tuple[int, ...] = (3, 5, 5),
                 backbone_strides: Tuple[int, ...] = (2, 2, 2),
                 backbone_channels: Tuple[int, ...] = (64, 128, 256),
                 neck_strides: Tuple[int, ...] = (1, 2, 4),
                 neck_channels: int = 128,
                 head: Optional[AnchorHeadConfig] = None):
        super().__init__()
        self.voxelization = VoxelizationSettings(tuple(voxel_size), tuple(point_range),
                                                 max_points_per_voxel, tuple(max_voxels))
        nx, ny, nz = grid_size(point_range, voxel_size)
        if nz != 1:
            raise ValueError(f"voxel_size: a pillar spans the whole z range, got {nz} voxels in z")
        self.voxel_encoder = PillarFeatureNet(voxel_size, point_range, pillar_channels,
                                              num_point_features)
        self.scatter = PointPillarsScatter(pillar_channels, (nx, ny))
        self.backbone = SECONDBackbone(pillar_channels, backbone_layers, backbone_strides,
                                       backbone_channels)
        self.neck = SECONDFPN(backbone_channels, neck_strides, neck_channels)
        sizes = self.backbone.output_sizes(ny, nx)
        feature_map_size = self.neck.output_size(sizes)
        self.head = AnchorHead(self.neck.out_channels, list(point_range), feature_map_size, head)
        self.feature_info: List[FeatureTap] = (
            [FeatureTap("pfn", pillar_channels, "voxel")]
            + [FeatureTap(f"backbone.{i}", c, "bev", nx // w)
               for i, (c, (_, w)) in enumerate(zip(self.backbone.out_channels, sizes))]
            + [FeatureTap("neck", self.neck.out_channels, "bev", nx // feature_map_size[1])])

    def forward(self, batch: Batch, head: bool = True) -> DetectorOutput:
        """The head's raw maps and the feature taps (``head=False``: the taps only, as a frozen
        teacher needs them)."""
        pfn = self.voxel_encoder(batch.voxels, batch.voxel_num_points, batch.voxel_coords)  # [V, P]
        bev = self.scatter(pfn, batch.voxel_coords, batch.batch_size)           # [B, P, ny, nx]
        stages: List[Tensor] = self.backbone(bev)                               # 3 x [B, Ci, Hi, Wi]
        neck = self.neck(stages)                                                # [B, 3U, H0, W0]
        features = {"pfn": pfn, **{f"backbone.{i}": x for i, x in enumerate(stages)}, "neck": neck}
        return DetectorOutput(head=self.head(neck) if head else None, features=features)

    def loss(self, batch: Batch, out: DetectorOutput) -> Dict[str, Tensor]:
        """Detection losses (``"cls"``, ``"box"``, ``"dir"``, ``"total"``) against ``batch``'s boxes."""
        return self.head.loss(out.head, batch)

    def predict(self, batch: Batch, out: DetectorOutput):
        """Post-processed detections, one ``Detections`` per sample."""
        return self.head.predict(out.head, batch)
