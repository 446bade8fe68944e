"""SECOND (Yan et al., Sensors 2018), mmdetection3d's KITTI 3-class variant."""
from typing import ClassVar, Dict, List, Literal, Optional, Tuple

from torch import Tensor, nn

from pointdistiller.detectors.batch import Batch
from pointdistiller.detectors.backbones_2d import SECONDBackbone, SECONDFPN
from pointdistiller.detectors.heads.anchor_head import AnchorHead, AnchorHeadConfig
from pointdistiller.detectors.outputs import DetectorOutput, FeatureTap
from pointdistiller.detectors.voxel_encoders import MeanVFE, VoxelizationSettings, grid_size


class SECOND(nn.Module):
    """Voxel mean -> sparse 3D encoder (dense BEV) -> 2D backbone -> upsampling neck -> anchor head.

    Defaults are the paper's teacher (architectures.md); students change the widths only. The sparse
    grid has one more z layer than the voxel grid (41 x 1600 x 1408 for KITTI, as mmdetection3d).

    Args:
        point_range: ``(x_min, y_min, z_min, x_max, y_max, z_max)`` metres.
        voxel_size: ``(vx, vy, vz)`` metres.
        max_points_per_voxel: points kept per voxel by the voxelizer.
        max_voxels: ``(train, test)`` voxels kept per frame by the voxelizer.
        num_point_features: values per point (x, y, z, intensity).
        encoder_channels: widths of the sparse encoder's 4 stages (E0, E1, E2, E2).
        encoder_layers: convs per sparse stage (the stride-2 conv included).
        encoder_out_channels: width O of the last sparse conv (the BEV map has 2 O channels).
        sparse_algo: spconv algorithm (``"auto"``: from the input device; see ``SparseEncoder``).
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
                     0.0, -40.0, -3.0, 70.4, 40.0, 1.0),
                 voxel_size: Tuple[float, float, float] = (0.05, 0.05, 0.1),
                 max_points_per_voxel: int = 5,
                 max_voxels: Tuple[int, int] = (16000, 40000),
                 num_point_features: int = 4,
                 encoder_channels: Tuple[int, int, int, int] = (16, 32, 64, 64),
                 encoder_layers: Tuple[int, int, int, int] = (1, 3, 3, 3),
                 encoder_out_channels: int = 128,
                 sparse_algo: Literal["auto", "native", "mask_implicit_gemm",
                                      "mask_split_implicit_gemm"] = "auto",
                 backbone_layers: Tuple[int, ...] = (5, 5),
                 backbone_strides: Tuple[int, ...] = (1, 2),
                 backbone_channels: Tuple[int, ...] = (128, 256),
                 neck_strides: Tuple[int, ...] = (1, 2),
                 neck_channels: int = 256,
                 head: Optional[AnchorHeadConfig] = None):
        super().__init__()
        self.voxelization = VoxelizationSettings(tuple(voxel_size), tuple(point_range),
                                                 max_points_per_voxel, tuple(max_voxels))
        nx, ny, nz = grid_size(point_range, voxel_size)
        self.voxel_encoder = MeanVFE(num_point_features)
        # spconv is imported only when a SECOND is built (PointPillars and the ops never need it)
        from pointdistiller.detectors.middle_encoders.sparse_encoder import SparseEncoder

        self.encoder = SparseEncoder(num_point_features, (nz + 1, ny, nx), encoder_channels,
                                     encoder_layers, encoder_out_channels, sparse_algo)
        _, bev_h, bev_w = self.encoder.output_shape
        self.backbone = SECONDBackbone(self.encoder.out_channels, backbone_layers, backbone_strides,
                                       backbone_channels)
        self.neck = SECONDFPN(backbone_channels, neck_strides, neck_channels)
        sizes = self.backbone.output_sizes(bev_h, bev_w)
        feature_map_size = self.neck.output_size(sizes)
        self.head = AnchorHead(self.neck.out_channels, list(point_range), feature_map_size, head)
        self.feature_info: List[FeatureTap] = (
            [FeatureTap("encoder", self.encoder.out_channels, "bev", nx // bev_w)]
            + [FeatureTap(f"backbone.{i}", c, "bev", nx // w)
               for i, (c, (_, w)) in enumerate(zip(self.backbone.out_channels, sizes))]
            + [FeatureTap("neck", self.neck.out_channels, "bev", nx // feature_map_size[1])])

    def forward(self, batch: Batch, head: bool = True) -> DetectorOutput:
        """The head's raw maps and the feature taps (``head=False``: the taps only, as a frozen
        teacher needs them)."""
        voxel_features = self.voxel_encoder(batch.voxels, batch.voxel_num_points)   # [V, 4]
        bev = self.encoder(voxel_features, batch.voxel_coords, batch.batch_size)    # [B, 2O, H, W]
        stages: List[Tensor] = self.backbone(bev)                                   # 2 x [B, Ci, ..]
        neck = self.neck(stages)                                                    # [B, 2U, H, W]
        features = {"encoder": bev, **{f"backbone.{i}": x for i, x in enumerate(stages)},
                    "neck": neck}
        return DetectorOutput(head=self.head(neck) if head else None, features=features)

    def loss(self, batch: Batch, out: DetectorOutput) -> Dict[str, Tensor]:
        """Detection losses (``"cls"``, ``"box"``, ``"dir"``, ``"total"``) against ``batch``'s boxes."""
        return self.head.loss(out.head, batch)

    def predict(self, batch: Batch, out: DetectorOutput):
        """Post-processed detections, one ``Detections`` per sample."""
        return self.head.predict(out.head, batch)
