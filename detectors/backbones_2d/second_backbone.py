"""SECOND-style 2D backbone: blocks of a strided 3x3 conv followed by 3x3 convs."""
from typing import List, Sequence, Tuple

from torch import Tensor, nn

# BatchNorm settings of mmdetection3d.
BN_EPS, BN_MOMENTUM = 1e-3, 0.01


def conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> List[nn.Module]:
    """3x3 conv (padding 1, no bias) + BatchNorm2d + ReLU."""
    return [nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM),
            nn.ReLU(inplace=True)]


class SECONDBackbone(nn.Module):
    """Blocks of a stride-``s`` 3x3 conv + ``n`` 3x3 convs (each + BN + ReLU); returns every block's
    output (mmdetection3d's ``SECOND`` backbone; PointPillars: layers 3, 5, 5, strides 2, 2, 2).

    Args:
        in_channels: channels of the input BEV map.
        layers: extra 3x3 convs per block (after the strided one).
        strides: stride of each block's first conv.
        channels: width of each block.
    """

    def __init__(self, in_channels: int, layers: Sequence[int] = (3, 5, 5),
                 strides: Sequence[int] = (2, 2, 2), channels: Sequence[int] = (64, 128, 256)):
        super().__init__()
        if not len(layers) == len(strides) == len(channels) >= 1:
            raise ValueError(f"layers, strides, channels: one entry per block expected, got "
                             f"{list(layers)}, {list(strides)}, {list(channels)}")
        self.strides = tuple(int(s) for s in strides)
        self.out_channels = tuple(int(c) for c in channels)
        blocks = []
        previous = in_channels
        for n, stride, width in zip(layers, strides, channels):
            modules = conv_bn_relu(previous, width, stride)
            for _ in range(n):
                modules += conv_bn_relu(width, width)
            blocks.append(nn.Sequential(*modules))
            previous = width
        self.blocks = nn.ModuleList(blocks)

    def output_sizes(self, height: int, width: int) -> List[Tuple[int, int]]:
        """``(H, W)`` of each block's output for an ``height x width`` input."""
        sizes = []
        for stride in self.strides:
            height, width = (height - 1) // stride + 1, (width - 1) // stride + 1
            sizes.append((height, width))
        return sizes

    def forward(self, x: Tensor) -> List[Tensor]:
        """``x``: ``[B, in_channels, H, W]`` -> list of ``[B, channels[i], H_i, W_i]``."""
        outs = []
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        return outs
