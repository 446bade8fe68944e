"""What a detector's forward returns: the head's raw maps and the named feature taps."""
from dataclasses import dataclass, field
from typing import Any, Dict

from torch import Tensor


@dataclass
class DetectorOutput:
    """Output of ``PointPillars.forward`` / ``SECOND.forward``.

    Attributes:
        head: the anchor head's ``HeadOutput`` (``cls [B, A*3, H, W]``, ``box [B, A*7, H, W]``,
            ``dir [B, A*2, H, W]``).
        features: intermediate features tapped for distillation, by name. PointPillars: ``"pfn"``
            ``[V, P]`` (row-aligned with ``batch.voxels``), ``"backbone.0"``, ``"backbone.1"``,
            ``"backbone.2"``, ``"neck"`` ``[B, C, H, W]``. SECOND: ``"encoder"`` (dense BEV
            ``[B, 2*O, 200, 176]`` at KITTI size), ``"backbone.0"``, ``"backbone.1"``, ``"neck"``.
    """

    head: Any
    features: Dict[str, Tensor] = field(default_factory=dict)
