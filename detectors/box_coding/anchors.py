"""Anchor boxes of the anchor head, one set per BEV feature-map cell (mmdetection3d's
``AlignedAnchor3DRangeGenerator`` with ``align_corner=False``).

Alignment: the head's feature map of ``(ny, nx)`` cells covers the x/y extent of ``point_range``
exactly, so a cell is ``(x_max - x_min) / nx`` by ``(y_max - y_min) / ny`` metres and the anchors of
cell ``(iy, ix)`` are centred on the cell centre::

    x = x_min + (ix + 0.5) * (x_max - x_min) / nx
    y = y_min + (iy + 0.5) * (y_max - y_min) / ny

(PointPillars: 0.16 m pillars, head at stride 2 -> 216 x 248 cells of 0.32 m, first centre
(0.16, -39.52); SECOND: 176 x 200 cells of 0.4 m, first centre (0.2, -39.8)).

Height: mmdetection3d's KITTI configs give per class a z of -1.78 (Car) and -0.6 (Pedestrian,
Cyclist) in their anchor ranges. mmdetection3d's LiDAR boxes have a bottom-centre origin, so these
are anchor *bottom* heights (OpenPCDet names them ``anchor_bottom_heights``), and the Car anchor's
box centre is -1.78 + 1.56 / 2 = -1.0. This toolkit's boxes carry the centre z, so with
``z_origin="bottom"`` (default, reproduces the teachers' anchors) the anchor centre is
``z + h / 2``; ``z_origin="center"`` takes the given values as centres. Only the z residual target
depends on this: assignment is by BEV IoU.

Layout: ``[ny, nx, A, 7]`` with ``A = num_classes * num_rotations`` ordered class-major then
rotation (anchor ``a = k * R + r``). Flattened anchor ``(iy * nx + ix) * A + a`` matches the head's
``cls``/``box``/``dir`` maps permuted to ``[B, ny, nx, A * C]``.
"""
from typing import Literal, Optional, Sequence, Tuple

import torch
from torch import Tensor


class AnchorGenerator:
    """Builds the anchors of one BEV feature map.

    Args:
        point_range: ``(x_min, y_min, z_min, x_max, y_max, z_max)`` metres covered by the feature map.
        feature_map_size: ``(ny, nx)`` cells of the head's input map.
        sizes: per class ``(l, w, h)`` metres, in class order.
        z_values: per class anchor height, metres (see ``z_origin``).
        rotations: anchor yaws, radians.
        z_origin: ``"bottom"`` (``z_values`` are box bottoms, mmdetection3d/OpenPCDet) or
            ``"center"``.
    """

    def __init__(self, point_range: Sequence[float], feature_map_size: Tuple[int, int],
                 sizes: Sequence[Sequence[float]], z_values: Sequence[float],
                 rotations: Sequence[float], z_origin: Literal["bottom", "center"] = "bottom"):
        point_range = [float(v) for v in point_range]
        if len(point_range) != 6:
            raise ValueError(f"AnchorGenerator: point_range needs 6 values, got {len(point_range)}")
        if not (point_range[3] > point_range[0] and point_range[4] > point_range[1]):
            raise ValueError(f"AnchorGenerator: point_range {point_range} has an empty x or y extent")
        if len(feature_map_size) != 2 or min(int(s) for s in feature_map_size) < 1:
            raise ValueError(f"AnchorGenerator: feature_map_size must be (ny, nx) >= 1, got "
                             f"{tuple(feature_map_size)}")
        sizes = [[float(v) for v in s] for s in sizes]
        if not sizes or any(len(s) != 3 or min(s) <= 0 for s in sizes):
            raise ValueError(f"AnchorGenerator: sizes must be a non-empty list of positive (l, w, h), "
                             f"got {sizes}")
        if len(z_values) != len(sizes):
            raise ValueError(f"AnchorGenerator: z_values has {len(z_values)} entries for "
                             f"{len(sizes)} classes")
        if len(rotations) < 1:
            raise ValueError("AnchorGenerator: rotations is empty")
        if z_origin not in ("bottom", "center"):
            raise ValueError(f"AnchorGenerator: z_origin must be 'bottom' or 'center', got {z_origin!r}")
        self.point_range = point_range
        self.feature_map_size = (int(feature_map_size[0]), int(feature_map_size[1]))
        self.sizes = sizes
        self.z_values = [float(z) for z in z_values]
        self.rotations = [float(r) for r in rotations]
        self.z_origin = z_origin

    @property
    def num_classes(self) -> int:
        return len(self.sizes)

    @property
    def num_rotations(self) -> int:
        return len(self.rotations)

    @property
    def num_anchors_per_location(self) -> int:
        return self.num_classes * self.num_rotations

    def class_templates(self) -> Tensor:
        """``[K, R, 7]`` float64 anchors at x = y = 0 (z centre, size, yaw) per class and rotation."""
        rows = []
        for (l, w, h), z in zip(self.sizes, self.z_values):
            zc = z + h / 2 if self.z_origin == "bottom" else z
            rows.append([[0.0, 0.0, zc, l, w, h, r] for r in self.rotations])
        return torch.tensor(rows, dtype=torch.float64)

    def generate(self, device: Optional[torch.device] = None,
                 dtype: torch.dtype = torch.float32) -> Tensor:
        """Returns the anchors, ``[ny, nx, A, 7]`` of ``dtype`` on ``device`` (layout: module doc)."""
        ny, nx = self.feature_map_size
        x0, y0, _, x1, y1, _ = self.point_range
        xs = x0 + (torch.arange(nx, dtype=torch.float64) + 0.5) * ((x1 - x0) / nx)
        ys = y0 + (torch.arange(ny, dtype=torch.float64) + 0.5) * ((y1 - y0) / ny)
        a = self.num_anchors_per_location
        anchors = self.class_templates().reshape(1, 1, a, 7).repeat(ny, nx, 1, 1)
        anchors[..., 0] = xs.view(1, nx, 1)
        anchors[..., 1] = ys.view(ny, 1, 1)
        return anchors.to(device=device, dtype=dtype)

    def anchor_classes(self, device: Optional[torch.device] = None) -> Tensor:
        """``[ny * nx * A]`` int64 class index of each flattened anchor."""
        ny, nx = self.feature_map_size
        per_loc = torch.arange(self.num_classes, device=device).repeat_interleave(self.num_rotations)
        return per_loc.repeat(ny * nx)
