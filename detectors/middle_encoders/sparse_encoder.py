"""SECOND's sparse 3D convolutional encoder (spconv), ending in a dense BEV map."""
import warnings
from typing import List, Literal, Sequence, Tuple

import torch
from torch import Tensor, nn

with warnings.catch_warnings():
    # spconv 2.3 decorates its functions with torch.cuda.amp.custom_fwd/bwd, deprecated since torch
    # 2.4: 16 lines of FutureWarning at import that say nothing about this program
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"spconv\.")
    import spconv.pytorch as spconv

from pointdistiller.detectors.spconv_utils import (ALGOS, algo_for_device, patch_spconv_cpu_stream,
                                                   set_conv_algo)

# spconv's CPU backward needs stream 0 instead of a CUDA stream: see spconv_utils.
patch_spconv_cpu_stream()

# BatchNorm settings of mmdetection3d's SECOND.
BN_EPS, BN_MOMENTUM = 1e-3, 0.01
# Padding of each later stage's stride-2 conv (the last one keeps z from growing, as mmdetection3d).
DOWN_PADDINGS = ((1, 1, 1), (1, 1, 1), (0, 1, 1))


def _block(conv: nn.Module, channels: int) -> spconv.SparseSequential:
    return spconv.SparseSequential(
        conv, nn.BatchNorm1d(channels, eps=BN_EPS, momentum=BN_MOMENTUM), nn.ReLU(inplace=True))


class SparseEncoder(nn.Module):
    """Sparse 3D encoder of SECOND (mmdetection3d's ``SparseEncoder``).

    ``conv_input``: submanifold 3x3x3 conv to ``channels[0]``; 4 stages of ``stage_layers`` convs at
    widths ``channels``, stages 2-4 starting with a stride-2 3x3x3 sparse conv (paddings
    ``DOWN_PADDINGS``) and continuing with submanifold convs; ``conv_out``: sparse conv (3, 1, 1),
    stride (2, 1, 1) to ``out_channels``. Every conv has no bias and is followed by BatchNorm1d
    (eps 1e-3, momentum 0.01) and ReLU. Submanifold convs of one stage share an ``indice_key`` (their
    rulebook is built once). The result is densified and z is folded into channels:
    ``[B, out_channels * D, H, W]`` (D = 2, H x W = 200 x 176 for KITTI's 41 x 1600 x 1408 grid).

    Args:
        in_channels: voxel feature width (4 for the mean of x, y, z, r).
        sparse_shape: ``(D, H, W)`` = ``(z, y, x)`` voxels of the input grid.
        channels: width of each of the 4 stages (E0, E1, E2, E2 in architectures.md).
        stage_layers: convs per stage (the stride-2 conv included).
        out_channels: width O of ``conv_out``.
        algo: spconv algorithm: ``"auto"`` sets it from the input's device at every forward
            (``Native`` on CPU, ``MaskImplicitGemm`` on CUDA), or a fixed name from
            ``spconv_utils.ALGOS`` (``"native"`` also runs on both devices).
    """

    def __init__(self, in_channels: int = 4, sparse_shape: Sequence[int] = (41, 1600, 1408),
                 channels: Sequence[int] = (16, 32, 64, 64),
                 stage_layers: Sequence[int] = (1, 3, 3, 3), out_channels: int = 128,
                 algo: Literal["auto", "native", "mask_implicit_gemm",
                               "mask_split_implicit_gemm"] = "auto"):
        super().__init__()
        if len(channels) != 4 or len(stage_layers) != 4:
            raise ValueError(f"channels and stage_layers: 4 stages expected, got {list(channels)} "
                             f"and {list(stage_layers)}")
        if algo != "auto" and algo not in ALGOS:
            raise ValueError(f"algo: expected 'auto' or one of {sorted(ALGOS)}, got {algo!r}")
        self.algo = algo
        self.sparse_shape = tuple(int(s) for s in sparse_shape)
        native = spconv.ConvAlgo.Native  # the starting algorithm; "auto" switches it per device
        self.conv_input = _block(spconv.SubMConv3d(in_channels, channels[0], 3, padding=1, bias=False,
                                                   indice_key="subm1", algo=native), channels[0])
        stages: List[nn.Module] = []
        previous = channels[0]
        for i, (width, layers) in enumerate(zip(channels, stage_layers)):
            convs = []
            for j in range(layers):
                if i > 0 and j == 0:
                    conv = spconv.SparseConv3d(previous, width, 3, stride=2,
                                               padding=DOWN_PADDINGS[i - 1], bias=False,
                                               indice_key=f"spconv{i + 1}", algo=native)
                else:
                    conv = spconv.SubMConv3d(previous, width, 3, padding=1, bias=False,
                                             indice_key=f"subm{i + 1}", algo=native)
                convs.append(_block(conv, width))
                previous = width
            stages.append(spconv.SparseSequential(*convs))
        self.stages = nn.ModuleList(stages)
        self.conv_out = _block(spconv.SparseConv3d(previous, out_channels, (3, 1, 1), stride=(2, 1, 1),
                                                   padding=0, bias=False, indice_key="spconv_down2",
                                                   algo=native), out_channels)
        self.conv_out_channels = out_channels
        if algo != "auto":
            set_conv_algo(self, ALGOS[algo])
        self._algo_device = None

    @property
    def output_shape(self) -> Tuple[int, int, int]:
        """``(D, H, W)`` of the last sparse conv's output grid."""
        shape = list(self.sparse_shape)
        for padding in DOWN_PADDINGS:
            shape = [(n + 2 * p - 3) // 2 + 1 for n, p in zip(shape, padding)]
        return ((shape[0] - 3) // 2 + 1, shape[1], shape[2])

    @property
    def out_channels(self) -> int:
        """Channels of the BEV map: ``out_channels * D``."""
        return self.conv_out_channels * self.output_shape[0]

    def forward(self, voxel_features: Tensor, coords: Tensor, batch_size: int) -> Tensor:
        """
        Args:
            voxel_features: ``[V, in_channels]`` float.
            coords: ``[V, 4]`` integer ``(batch, z, y, x)`` inside ``sparse_shape``.
            batch_size: B.

        Returns:
            ``[B, out_channels * D, H, W]`` float dense BEV map (channel index ``c * D + d``).
        """
        if coords.dim() != 2 or coords.shape != (voxel_features.shape[0], 4):
            raise ValueError(f"coords: expected [{voxel_features.shape[0]}, 4], got "
                             f"{list(coords.shape)}")
        if self.algo == "auto" and self._algo_device != voxel_features.device.type:
            set_conv_algo(self, algo_for_device(voxel_features.device))
            self._algo_device = voxel_features.device.type
        x = spconv.SparseConvTensor(voxel_features, coords.to(torch.int32).contiguous(),
                                    list(self.sparse_shape), batch_size)
        x = self.conv_input(x)
        for stage in self.stages:
            x = stage(x)
        dense = self.conv_out(x).dense()                      # [B, O, D, H, W]
        b, c, d, h, w = dense.shape
        return dense.view(b, c * d, h, w)
