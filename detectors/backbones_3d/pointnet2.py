"""PointNet++ backbone of PointRCNN: multi-scale set abstraction (``PointNet2SAMSG``) and the
feature-propagation neck (``PointNetFPNeck``) that brings the features back to every input point.

Everything that depends on xyz alone (D-FPS picks, ball-query groups, three-nearest-neighbour
interpolation weights) is computed once by :func:`plan_geometry` into a :class:`PointGeometry`. A
teacher and a student that see the same points share it: D-FPS starts at each sample's first row
and, like the ball query, never looks at features. Batches are ragged (rows of all samples plus
int64 offsets ``[B + 1]``, see ``detectors/batch.py``).

Level numbering: level 0 is the input points, level ``i >= 1`` the centres of the ``i``-th
set-abstraction level.
"""
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pointdistiller.detectors.batch import offsets_from_counts
from pointdistiller.ops import ball_query, furthest_point_sample, three_interpolate, three_nn

__all__ = ["SALevel", "LevelGeometry", "PointGeometry", "plan_geometry", "SAModuleMSG",
           "PointNet2SAMSG", "PointNetFPNeck"]

BN_MOMENTUM = 0.1


@dataclass(frozen=True)
class SALevel:
    """One set-abstraction level's geometry.

    Attributes:
        num_points: D-FPS centres per sample (fewer when a sample has fewer points); None =
            group-all: one centre per sample at the origin whose group is every point of the sample
            (every sample must then have the same number of points).
        radii: ball-query radius of each scale, metres; ``()`` for group-all.
        samples: ball-query rows of each scale; group-all takes every point (``()`` or one ignored
            entry).
    """

    num_points: Optional[int]
    radii: Tuple[float, ...]
    samples: Tuple[int, ...]

    def __post_init__(self):
        # Stored as tuples, so that a level read from a YAML list compares equal to the same level.
        object.__setattr__(self, "radii", tuple(float(r) for r in self.radii))
        object.__setattr__(self, "samples", tuple(int(s) for s in self.samples))
        if self.num_points is None:
            if len(self.radii) > 1 or len(self.samples) > 1:
                raise ValueError(f"SALevel: a group-all level (num_points None) has one scale, got "
                                 f"radii {self.radii} and samples {self.samples}")
            return
        if isinstance(self.num_points, bool) or not isinstance(self.num_points, int) \
                or self.num_points < 1:
            raise ValueError(f"SALevel: num_points must be a positive int or None, got "
                             f"{self.num_points!r}")
        if len(self.radii) != len(self.samples) or not self.radii:
            raise ValueError(f"SALevel: radii and samples need one entry per scale (at least one), "
                             f"got radii {self.radii} and samples {self.samples}")
        if min(self.radii) <= 0 or min(self.samples) < 1:
            raise ValueError(f"SALevel: radii must be > 0 and samples >= 1, got radii "
                             f"{self.radii} and samples {self.samples}")

    @property
    def num_scales(self) -> int:
        return 1 if self.num_points is None else len(self.radii)


@dataclass
class LevelGeometry:
    """The centres and groups of one set-abstraction level.

    Attributes:
        xyz: ``[M, 3]`` float32 centres: rows of the previous level picked by D-FPS (zeros, the
            origin, for group-all).
        offsets: ``[B + 1]`` int64 offsets of ``xyz``.
        picked: ``[M]`` int64 rows of the previous level (None for group-all).
        groups: per scale ``[M, nsample]`` int64 rows of the previous level (group-all: one
            ``[B, n]`` tensor, every row of each sample).
    """

    xyz: Tensor
    offsets: Tensor
    picked: Optional[Tensor]
    groups: Tuple[Tensor, ...]


@dataclass
class PointGeometry:
    """Everything PointNet++ computes from xyz alone, shareable between a teacher and a student
    that see the same points.

    Attributes:
        xyz: ``[N, 3]`` float32 input points (level 0); offsets: ``[B + 1]`` int64.
        levels: one :class:`LevelGeometry` per :class:`SALevel`.
        interpolation: ``interpolation[i] = (idx, weight)`` for feature propagation onto level
            ``i``: ``idx [M_i, 3]`` int64 rows of level ``i + 1`` (the three nearest of the same
            sample, nearest first), ``weight [M_i, 3]`` float32, ``1 / (d + 1e-8)`` normalised to
            sum 1. Empty when planned with ``with_interpolation=False``.
        specs: the levels it was planned for (see :meth:`spec`).
    """

    xyz: Tensor
    offsets: Tensor
    levels: List[LevelGeometry]
    interpolation: List[Tuple[Tensor, Tensor]]
    specs: Tuple[SALevel, ...] = field(default=())

    def spec(self) -> Tuple[SALevel, ...]:
        """The :class:`SALevel` tuple this geometry was planned for."""
        return self.specs


def _check_points(xyz, offsets) -> Tensor:
    """Validates ``xyz [N, 3]`` float32 and its offsets; returns the per-sample counts."""
    if not isinstance(xyz, Tensor) or xyz.dim() != 2 or xyz.shape[1] != 3 \
            or xyz.dtype != torch.float32:
        desc = (f"{tuple(xyz.shape)} {xyz.dtype}" if isinstance(xyz, Tensor)
                else type(xyz).__name__)
        raise ValueError(f"plan_geometry: xyz must be [N, 3] float32, got {desc}")
    if not isinstance(offsets, Tensor) or offsets.dim() != 1 or offsets.dtype != torch.int64 \
            or offsets.numel() < 2:
        desc = (f"{tuple(offsets.shape)} {offsets.dtype}" if isinstance(offsets, Tensor)
                else type(offsets).__name__)
        raise ValueError(f"plan_geometry: offsets must be [B + 1] int64 with B >= 1, got {desc}")
    counts = offsets.diff()
    if int(offsets[0]) != 0 or int(offsets[-1]) != xyz.shape[0] or bool((counts < 0).any()):
        raise ValueError(f"plan_geometry: offsets must start at 0, not decrease and end at the "
                         f"{xyz.shape[0]} rows of xyz, got {offsets.tolist()}")
    return counts


def _plan_sampled(level: SALevel, xyz: Tensor, offsets: Tensor) -> LevelGeometry:
    counts = offsets.diff().clamp(max=level.num_points)
    picked = furthest_point_sample(xyz, offsets, counts)
    centres = xyz[picked]
    centre_offsets = offsets_from_counts(counts).to(offsets.device)
    groups = tuple(ball_query(xyz, offsets, centres, centre_offsets, r, n)[0]
                   for r, n in zip(level.radii, level.samples))
    return LevelGeometry(centres, centre_offsets, picked, groups)


def _plan_group_all(index: int, xyz: Tensor, offsets: Tensor) -> LevelGeometry:
    counts = offsets.diff()
    n = int(counts[0])
    if n < 1 or bool((counts != n).any()):
        raise ValueError(f"plan_geometry: level {index} is group-all (num_points None) and needs "
                         f"the same, non-zero number of points in every sample, got "
                         f"{counts.tolist()}")
    batch = counts.numel()
    group = offsets[:-1, None] + torch.arange(n, device=xyz.device)
    return LevelGeometry(xyz.new_zeros(batch, 3), torch.arange(batch + 1, device=xyz.device),
                         None, (group,))


def _interpolation(unknown: Tensor, unknown_offsets: Tensor, known: Tensor,
                   known_offsets: Tensor) -> Tuple[Tensor, Tensor]:
    """Three nearest known rows of each unknown row and their inverse-distance weights.

    ``three_nn`` (knn with k = 3) refuses a sample with fewer than three known rows; such samples
    take their one or two rows here instead, the missing slots holding the sample's last known
    row with weight 0, so the weights still sum to 1 over the rows that exist.
    """
    unknown_counts, known_counts = unknown_offsets.diff(), known_offsets.diff()
    short = (known_counts < 3) & (unknown_counts > 0)
    if bool(((known_counts == 0) & (unknown_counts > 0)).any()):
        raise ValueError("plan_geometry: a sample has points but no deeper-level point to "
                         "interpolate from")
    dist = unknown.new_empty(unknown.shape[0], 3)
    idx = torch.empty(unknown.shape[0], 3, dtype=torch.int64, device=unknown.device)
    sample = torch.repeat_interleave(torch.arange(unknown_counts.numel(), device=unknown.device),
                                     unknown_counts)
    rows_short = short[sample]
    full_counts = torch.where(short, torch.zeros_like(unknown_counts), unknown_counts)
    full_offsets = offsets_from_counts(full_counts).to(unknown.device)
    dist[~rows_short], idx[~rows_short] = three_nn(unknown[~rows_short], full_offsets, known,
                                                   known_offsets)
    if bool(rows_short.any()):
        b = sample[rows_short]
        slot = torch.arange(3, device=unknown.device)
        candidates = known_offsets[b, None] + torch.minimum(slot, known_counts[b, None] - 1)
        d = unknown[rows_short, None] - known[candidates]
        d2 = (d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1]) + d[..., 2] * d[..., 2]
        d2 = d2.masked_fill(slot >= known_counts[b, None], float("inf"))
        d2, order = d2.sort(dim=1, stable=True)               # ties to the lower row
        dist[rows_short], idx[rows_short] = d2.sqrt(), candidates.gather(1, order)
    weight = 1.0 / (dist + 1e-8)                              # inf (missing slot) -> 0
    return idx, weight / weight.sum(dim=1, keepdim=True)


@torch.no_grad()
def plan_geometry(xyz: Tensor, offsets: Tensor, levels: Sequence[SALevel],
                  with_interpolation: bool = True) -> PointGeometry:
    """D-FPS centres, ball-query groups and FP interpolation of every level, from xyz alone.

    Args:
        xyz: ``[N, 3]`` float32 input points, metres; offsets: ``[B + 1]`` int64.
        levels: the set-abstraction levels, in order. A sampled level picks
            ``min(num_points, points of the sample)`` centres per sample by D-FPS from the
            sample's first row, and groups each scale with ``ball_query`` (the first ``nsample``
            rows in index order with squared distance ``< r^2``, padded with the first found; see
            ``ops/pointnet2.py``). A group-all level needs equal point counts in every sample.
        with_interpolation: also plan the three-NN interpolation of the FP neck (not needed for a
            backbone without a neck).

    Returns:
        The :class:`PointGeometry`.

    Raises:
        ValueError: bad xyz/offsets/levels, or a group-all level on unequal sample sizes.
    """
    levels = tuple(levels)
    for i, level in enumerate(levels):
        if not isinstance(level, SALevel):
            raise ValueError(f"plan_geometry: levels[{i}] must be an SALevel, got "
                             f"{type(level).__name__}")
    _check_points(xyz, offsets)
    planned = []
    prev_xyz, prev_offsets = xyz, offsets
    for i, level in enumerate(levels):
        if level.num_points is None:
            geometry = _plan_group_all(i, prev_xyz, prev_offsets)
        else:
            geometry = _plan_sampled(level, prev_xyz, prev_offsets)
        planned.append(geometry)
        prev_xyz, prev_offsets = geometry.xyz, geometry.offsets
    interpolation = []
    if with_interpolation:
        points = [(xyz, offsets)] + [(g.xyz, g.offsets) for g in planned]
        interpolation = [_interpolation(*points[i], *points[i + 1]) for i in range(len(levels))]
    return PointGeometry(xyz, offsets, planned, interpolation, levels)


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
        first = three_interpolate((known @ w[:, :c].t()).contiguous(), idx, weight)
        if skip is not None and skip.shape[1] > 0:
            first = first + skip @ w[:, c:].t()
        return mlp(first)
