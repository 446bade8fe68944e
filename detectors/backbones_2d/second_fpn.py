"""SECOND-style neck: every backbone block upsampled to one resolution and concatenated."""
from typing import List, Sequence

import torch
from torch import Tensor, nn

from pointdistiller.detectors.backbones_2d.second_backbone import BN_EPS, BN_MOMENTUM


class SECONDFPN(nn.Module):
    """Per block a ConvTranspose2d (kernel = stride = ``s``), or a 1x1 Conv2d for ``s == 1``, to
    ``out_channels``, each + BN + ReLU, then channel concatenation (mmdetection3d's ``SECONDFPN``).

    Args:
        in_channels: channels of each backbone block's output.
        strides: upsampling factor of each block (all outputs must come out the same size).
        out_channels: width U of each upsampled block; the output has ``U * len(in_channels)``.
    """

    def __init__(self, in_channels: Sequence[int], strides: Sequence[int] = (1, 2, 4),
                 out_channels: int = 128):
        super().__init__()
        if len(in_channels) != len(strides):
            raise ValueError(f"strides: one per backbone block ({len(in_channels)}) expected, got "
                             f"{list(strides)}")
        self.strides = tuple(int(s) for s in strides)
        self.out_channels = out_channels * len(in_channels)
        deblocks = []
        for width, stride in zip(in_channels, self.strides):
            if stride < 1:
                raise ValueError(f"strides: upsampling factors must be >= 1, got {list(strides)}")
            if stride == 1:
                up = nn.Conv2d(width, out_channels, 1, bias=False)
            else:
                up = nn.ConvTranspose2d(width, out_channels, stride, stride=stride, bias=False)
            deblocks.append(nn.Sequential(
                up, nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM),
                nn.ReLU(inplace=True)))
        self.deblocks = nn.ModuleList(deblocks)

    def forward(self, features: List[Tensor]) -> Tensor:
        """``features``: list of ``[B, C_i, H_i, W_i]`` -> ``[B, U * n, H_0 * s_0, W_0 * s_0]``."""
        return torch.cat([deblock(x) for deblock, x in zip(self.deblocks, features)], dim=1)

    def output_size(self, input_sizes: Sequence[Sequence[int]]):
        """``(H, W)`` of the output for blocks of sizes ``input_sizes``; ``ValueError`` if the
        upsampled blocks disagree (they could not be concatenated)."""
        sizes = {(int(h) * s, int(w) * s) for (h, w), s in zip(input_sizes, self.strides)}
        if len(sizes) != 1:
            raise ValueError(f"neck strides {list(self.strides)} bring the backbone outputs "
                             f"{[tuple(s) for s in input_sizes]} to different sizes {sorted(sizes)}; "
                             f"choose point_range/voxel_size so that the grid divides evenly")
        return sizes.pop()
