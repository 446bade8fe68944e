"""The geometry of PointNet++ (PointRCNN): everything that depends on xyz alone, computed once by
:func:`plan_geometry` into a :class:`PointGeometry`: the D-FPS picks, the ball-query groups and the
three-nearest-neighbour interpolation weights. A teacher and a student that see the same points
share it: D-FPS starts at each sample's first row and, like the ball query, never looks at
features. Batches are ragged (rows of all samples plus int64 offsets ``[B + 1]``, see
``detectors/batch.py``).

Level numbering: level 0 is the input points, level ``i >= 1`` the centres of the ``i``-th
set-abstraction level.
"""
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from pointdistiller.detectors.batch import check_offsets, offsets_from_counts
from pointdistiller.ops import ball_query, furthest_point_sample, three_nn

__all__ = ["SALevel", "LevelGeometry", "PointGeometry", "plan_geometry"]


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
    return check_offsets("plan_geometry", offsets, xyz.shape[0])


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
