"""PointNet++ backbone of PointRCNN: multi-scale set abstraction (``PointNet2SAMSG``) and the
feature-propagation neck (``PointNetFPNeck``) that brings the features back to every input point.
They run on a :class:`~pointdistiller.detectors.backbones_3d.geometry.PointGeometry` (the xyz-only
sampling, grouping and interpolation, planned once per batch and shareable between a teacher and a
student). Batches are ragged (rows of all samples plus int64 offsets ``[B + 1]``).
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pointdistiller.detectors.backbones_3d.geometry import (LevelGeometry, PointGeometry, SALevel,
                                                            plan_geometry)
from pointdistiller.ops import three_interpolate

__all__ = ["SALevel", "LevelGeometry", "PointGeometry", "plan_geometry", "SAModuleMSG",
           "PointNet2SAMSG", "PointNetFPNeck"]

BN_MOMENTUM = 0.1


class _SharedMLP(nn.Module):
    """1x1 convolutions without bias + BN + ReLU over rows ``[R, C]`` (Linear == 1x1 conv).

    The first layer is split in two: ``forward`` gets its input as the sum of separately projected
    parts, which lets the callers project features before gathering or interpolating them.
    """

    def __init__(self, in_channels: int, widths: Sequence[int], bn_eps: float):
        super().__init__()
        chans = [in_channels] + [int(w) for w in widths]
        self.linears = nn.ModuleList(nn.Linear(i, o, bias=False) for i, o in zip(chans, chans[1:]))
        self.norms = nn.ModuleList(nn.BatchNorm1d(o, eps=bn_eps, momentum=BN_MOMENTUM)
                                   for o in chans[1:])
        for linear in self.linears:       # mmcv ConvModule's init of a conv followed by BN
            nn.init.kaiming_normal_(linear.weight, mode="fan_out", nonlinearity="relu")
        self.out_channels = chans[-1]

    @property
    def first_weight(self) -> Tensor:
        return self.linears[0].weight

    def first_layer_macs(self, first: Tensor) -> int:
        """Multiply-accumulates of the first layer as a dense 1x1 conv over the ``first.shape[0]``
        rows it produced (how mmcv's counter sees it; the callers' projection before gathering
        does fewer). ``pd-profile`` counts the other layers by their ``nn.Linear`` calls."""
        return int(first.shape[0]) * self.linears[0].in_features * self.linears[0].out_features

    def forward(self, first: Tensor) -> Tensor:
        """``first``: ``[R, widths[0]]``, the first layer's linear output; returns ``[R, out]``."""
        h = F.relu(self.norms[0](first))
        for linear, norm in zip(self.linears[1:], self.norms[1:]):
            h = F.relu(norm(linear(h)))
        return h


def _check_features(name: str, features: Optional[Tensor], rows: int, channels: int) -> None:
    if channels == 0 and features is None:
        return
    if not isinstance(features, Tensor) or features.dim() != 2 \
            or tuple(features.shape) != (rows, channels):
        got = tuple(features.shape) if isinstance(features, Tensor) else features
        raise ValueError(f"{name}: expected [{rows}, {channels}] features"
                         f"{' (or None)' if channels == 0 else ''}, got {got}")


class SAModuleMSG(nn.Module):
    """One set-abstraction level (PointNet++ multi-scale grouping, mmdet3d ``PointSAModuleMSG``
    with ``use_xyz=True, normalize_xyz=False, pool_mod='max'``).

    Per scale: gather each group's rows, relative xyz (row minus centre, not divided by the radius;
    raw xyz for group-all, whose centre is the origin) before the features, a shared MLP of 1x1
    convolutions without bias + BN(eps, momentum 0.1) + ReLU, max over the group; the scales are
    concatenated in order. Parameters per layer: ``in * out`` weights + ``2 * out`` BN affine.

    Args:
        in_channels: feature channels of the previous level, xyz not counted (``use_xyz`` adds 3
            to each scale's first layer).
        mlps: widths of each scale's layers.
        use_xyz: prepend the relative xyz to the grouped features.
        bn_eps: BatchNorm epsilon.
    """

    def __init__(self, in_channels: int, mlps: Sequence[Sequence[int]], use_xyz: bool = True,
                 bn_eps: float = 1e-3):
        super().__init__()
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 0:
            raise ValueError(f"SAModuleMSG: in_channels must be an int >= 0, got {in_channels!r}")
        if not mlps or any(not m or min(int(w) for w in m) < 1 for m in mlps):
            raise ValueError(f"SAModuleMSG: mlps must be one non-empty list of positive widths "
                             f"per scale, got {mlps!r}")
        if not use_xyz and in_channels == 0:
            raise ValueError("SAModuleMSG: use_xyz=False needs in_channels > 0")
        self.in_channels, self.use_xyz = in_channels, use_xyz
        self.scales = nn.ModuleList(_SharedMLP(in_channels + 3 * use_xyz, m, bn_eps) for m in mlps)
        self.out_channels = sum(s.out_channels for s in self.scales)

    def forward(self, xyz: Tensor, features: Optional[Tensor], level: LevelGeometry) -> Tensor:
        """
        Args:
            xyz: ``[N, 3]`` float32 points of the previous level.
            features: ``[N, in_channels]`` float32, or None when ``in_channels == 0``.
            level: this level's centres and groups (one group tensor per scale).

        Returns:
            ``[M, out_channels]`` float32, one row per centre of ``level``.
        """
        _check_features("SAModuleMSG features", features, xyz.shape[0], self.in_channels)
        if len(level.groups) != len(self.scales):
            raise ValueError(f"SAModuleMSG: level has {len(level.groups)} group tensors (scales) "
                             f"but the module has {len(self.scales)} MLPs")
        return torch.cat([self._scale(mlp, xyz, features, level.xyz, idx)
                          for mlp, idx in zip(self.scales, level.groups)], dim=1)

    def _scale(self, mlp: _SharedMLP, xyz: Tensor, features: Optional[Tensor], centres: Tensor,
               idx: Tensor) -> Tensor:
        # Rows layout [M * K, C] with Linear GEMMs: measured on this CPU (1 thread, forward +
        # backward of the teacher's level 2/3 scales) 1.3-1.4x faster than Conv2d on [1, C, M, K]
        # and 1.8-1.9x faster than batched matmul on group_points' [M, C, K]. The first layer's
        # feature part is projected at the N points before gathering (same sum, N instead of
        # M * K rows); its xyz part stays on the relative xyz, which avoids cancelling two large
        # projected coordinates.
        m, k = idx.shape
        weight = mlp.first_weight
        first = None
        if self.use_xyz:
            rel = xyz[idx] - centres[:, None]                            # [M, K, 3]
            first = rel @ weight[:, :3].t()
        if features is not None and self.in_channels > 0:
            gathered = (features @ weight[:, 3 * self.use_xyz:].t())[idx]  # [M, K, C1]
            first = gathered if first is None else first + gathered
        out = mlp(first.reshape(m * k, -1))
        # max, not amax: its backward routes the gradient by index (2.5x faster than amax's
        # tie-splitting); equal maxima here are padded copies of one row, or ReLU zeros.
        return out.view(m, k, -1).max(dim=1).values


def _check_mlps(levels: Tuple[SALevel, ...], mlps) -> None:
    if len(mlps) != len(levels):
        raise ValueError(f"PointNet2SAMSG: mlps has {len(mlps)} entries but there are "
                         f"{len(levels)} levels")
    for i, (level, m) in enumerate(zip(levels, mlps)):
        if len(m) != level.num_scales:
            raise ValueError(f"PointNet2SAMSG: mlps[{i}] has {len(m)} scales but levels[{i}] has "
                             f"{level.num_scales}")


class PointNet2SAMSG(nn.Module):
    """PointNet++ backbone with multi-scale grouping (mmdet3d ``PointNet2SAMSG`` with D-FPS).

    Args:
        in_channels: extra features per input point besides xyz (1: intensity).
        levels: the set-abstraction levels; :func:`plan_geometry` must be given the same ones.
        mlps: per level, per scale, the layer widths.
        bn_eps: BatchNorm epsilon (mmdet3d's PointRCNN: 1e-3).

    Attributes:
        levels: the levels as a tuple.
        out_channels: widths of the forward outputs: ``[in_channels, C_1, ..., C_L]``.
    """

    def __init__(self, in_channels: int, levels: Sequence[SALevel],
                 mlps: Sequence[Sequence[Sequence[int]]], bn_eps: float = 1e-3):
        super().__init__()
        self.levels = tuple(levels)
        if not self.levels or not all(isinstance(lv, SALevel) for lv in self.levels):
            raise ValueError(f"PointNet2SAMSG: levels must be a non-empty sequence of SALevel, "
                             f"got {levels!r}")
        _check_mlps(self.levels, mlps)
        self.in_channels = in_channels
        self.sa_modules = nn.ModuleList()
        self.out_channels = [in_channels]
        for m in mlps:
            sa = SAModuleMSG(self.out_channels[-1], m, use_xyz=True, bn_eps=bn_eps)
            self.sa_modules.append(sa)
            self.out_channels.append(sa.out_channels)

    def forward(self, features: Optional[Tensor], geometry: PointGeometry) -> List[Tensor]:
        """
        Args:
            features: ``[N, in_channels]`` float32 extra features of ``geometry.xyz`` (None when
                ``in_channels == 0``).
            geometry: planned for :attr:`levels`.

        Returns:
            ``L + 1`` tensors: ``features`` itself (level 0, the FP neck's last skip), then
            ``[M_i, out_channels[i]]`` for each level ``i``, rows as in ``geometry.levels``.
        """
        if geometry.spec() != self.levels:
            raise ValueError(f"PointNet2SAMSG: geometry was planned for levels {geometry.spec()} "
                             f"but the backbone has {self.levels}")
        _check_features("PointNet2SAMSG features", features, geometry.xyz.shape[0],
                        self.in_channels)
        outs = [features]
        xyz = geometry.xyz
        for sa, level in zip(self.sa_modules, geometry.levels):
            outs.append(sa(xyz, outs[-1], level))
            xyz = level.xyz
        return outs


class PointNetFPNeck(nn.Module):
    """PointNet++ feature propagation (mmdet3d ``PointNetFPNeck``), from the deepest level upward.

    FP ``j`` interpolates the features of level ``L - j`` (for ``j = 0`` the deepest SA output,
    afterwards FP ``j - 1``'s output) onto the points of level ``L - 1 - j`` (three nearest
    neighbours, the geometry's inverse-distance weights), concatenates that level's skip features
    after them, and applies 1x1 convolutions without bias + BN + ReLU of widths
    ``fp_channels[j][1:]``.

    Args:
        fp_channels: per FP module ``(in, out, ..., out)``; ``in`` = known width + skip width.
        bn_eps: BatchNorm epsilon (mmdet3d's default BN2d: 1e-5).

    Attributes:
        out_channels: ``fp_channels[-1][-1]``.
    """

    def __init__(self, fp_channels: Sequence[Sequence[int]], bn_eps: float = 1e-5):
        super().__init__()
        self.fp_channels = tuple(tuple(int(c) for c in ch) for ch in fp_channels)
        for j, ch in enumerate(self.fp_channels):
            if len(ch) < 2 or min(ch) < 1:
                raise ValueError(f"PointNetFPNeck: fp_channels[{j}] must be (in, out, ...) of "
                                 f"positive widths, got {ch}")
            if j and ch[0] < self.fp_channels[j - 1][-1]:
                raise ValueError(f"PointNetFPNeck: fp_channels[{j}][0] = {ch[0]} is less than the "
                                 f"known width {self.fp_channels[j - 1][-1]} of FP {j - 1}'s "
                                 f"output")
        if not self.fp_channels:
            raise ValueError("PointNetFPNeck: fp_channels is empty")
        self.fp_modules = nn.ModuleList(_SharedMLP(ch[0], ch[1:], bn_eps)
                                        for ch in self.fp_channels)
        self.out_channels = self.fp_channels[-1][-1]

    def check_inputs(self, channels: Sequence[int]) -> None:
        """Raises ValueError, naming the FP module, unless ``channels`` (the widths of the
        backbone outputs, e.g. :attr:`PointNet2SAMSG.out_channels`) fit ``fp_channels``."""
        depth = len(channels) - 1
        if depth < len(self.fp_modules):
            raise ValueError(f"PointNetFPNeck: {len(self.fp_modules)} FP modules need at least "
                             f"{len(self.fp_modules) + 1} feature levels, got {len(channels)}")
        known = channels[depth]
        for j, ch in enumerate(self.fp_channels):
            skip = channels[depth - 1 - j]
            if ch[0] != known + skip:
                raise ValueError(f"PointNetFPNeck: FP {j} (fp_channels[{j}]) expects {ch[0]} input "
                                 f"channels but gets {known} known + {skip} skip = {known + skip}")
            known = ch[-1]

    def forward(self, features: List[Optional[Tensor]], geometry: PointGeometry) -> Tensor:
        """
        Args:
            features: the backbone's outputs: ``features[0]`` the input points' extra features
                ``[N, C_0]`` (or None), ``features[i]`` level ``i``'s ``[M_i, C_i]``.
            geometry: the backbone's geometry, planned with ``with_interpolation=True``.

        Returns:
            ``[M, out_channels]`` on level ``L - len(fp_channels)``: with one FP per level, the
            input points ``[N, out_channels]``, row-aligned with ``geometry.xyz``.
        """
        depth = len(features) - 1
        if len(geometry.interpolation) != len(geometry.levels) or len(geometry.levels) != depth:
            raise ValueError(f"PointNetFPNeck: got {depth + 1} feature levels and a geometry of "
                             f"{len(geometry.levels)} levels with {len(geometry.interpolation)} "
                             f"interpolations (plan it with with_interpolation=True)")
        points = [geometry.xyz] + [level.xyz for level in geometry.levels]
        for i, (f, p) in enumerate(zip(features, points)):
            if f is not None and (f.dim() != 2 or f.shape[0] != p.shape[0]):
                raise ValueError(f"PointNetFPNeck: features[{i}] has shape {tuple(f.shape)} but "
                                 f"level {i} of the geometry has {p.shape[0]} points")
        self.check_inputs([0 if f is None else f.shape[1] for f in features])
        known = features[depth]
        for j, mlp in enumerate(self.fp_modules):
            idx, weight = geometry.interpolation[depth - 1 - j]
            known = self._propagate(mlp, known, features[depth - 1 - j], idx, weight)
        return known

    @staticmethod
    def _propagate(mlp: _SharedMLP, known: Tensor, skip: Optional[Tensor], idx: Tensor,
                   weight: Tensor) -> Tensor:
        # Interpolation is linear, so the first layer's known part is applied before it: a GEMM
        # on the known rows (e.g. 4096) instead of the interpolated ones (32768 for the last FP).
        w = mlp.first_weight
        c = known.shape[1]
        # float(): under CUDA autocast the GEMM gives fp16, the op takes float32
        first = three_interpolate((known @ w[:, :c].t()).float().contiguous(), idx, weight)
        if skip is not None and skip.shape[1] > 0:
            first = first + skip @ w[:, c:].t()
        return mlp(first)
