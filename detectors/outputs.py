"""What a detector's forward returns (the head's raw maps and the named feature taps), and what it
declares about its taps before running (``feature_info``, timm style)."""
from dataclasses import dataclass, field
from typing import Any, Dict, Literal

from torch import Tensor

TapKind = Literal["voxel", "bev", "point"]


@dataclass(frozen=True)
class FeatureTap:
    """One feature tap of a detector, as the detector declares it in ``feature_info``.

    Attributes:
        name: the key in ``DetectorOutput.features``.
        channels: its width.
        kind: ``"voxel"`` (``[V, C]``, row-aligned with ``batch.voxels``), ``"bev"`` (a BEV map
            ``[B, C, H, W]``) or ``"point"`` (``[N, C]``, one row per input point).
        stride: voxel-grid cells per map cell along x and y (``"bev"``); 1 otherwise.
    """

    name: str
    channels: int
    kind: TapKind
    stride: int = 1


@dataclass
class DetectorOutput:
    """Output of a detector's forward.

    Attributes:
        head: the head's raw outputs (the anchor head's ``HeadOutput``: ``cls [B, A*3, H, W]``,
            ``box [B, A*7, H, W]``, ``dir [B, A*2, H, W]``).
        features: intermediate features tapped for distillation, by name; the detector's
            ``feature_info`` lists them (:class:`FeatureTap`).
    """

    head: Any
    features: Dict[str, Tensor] = field(default_factory=dict)
