"""Per-row MLP blocks of the point-based heads (PointRCNN's stage 1 and stage 2): Linear == a 1x1
conv over rows ``[R, C]``."""
from typing import List, Sequence

from torch import nn


def check_widths(owner: str, name: str, widths, allow_empty: bool = False) -> None:
    """``widths`` must be a sequence of positive ints (non-empty unless ``allow_empty``); else a
    ValueError naming ``name``."""
    if (not widths and not allow_empty) or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1
                             for w in widths):
        raise ValueError(f"{owner}: {name} must be positive ints, got {widths!r}")


def linear_bn_relu(in_channels: int, widths: Sequence[int], eps: float = 1e-5) -> List[nn.Module]:
    """Layers of ``Linear (no bias) + BatchNorm1d(eps) + ReLU`` per width, in order (mmcv's
    ConvModule of a 1x1 conv with BN)."""
    layers: List[nn.Module] = []
    for width in widths:
        layers += [nn.Linear(in_channels, width, bias=False), nn.BatchNorm1d(width, eps=eps),
                   nn.ReLU()]
        in_channels = width
    return layers
