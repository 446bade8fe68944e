"""Slow, obviously-correct references of ``pointdistiller.ops.pointnet2`` (tests only), written
from the contract in ``ops/csrc/pointnet2/pointnet2.h`` with plain loops over samples."""
from typing import Tuple

import numpy as np
import torch
from torch import Tensor


def _d2(a: Tensor, b: Tensor) -> Tensor:
    """The contract's float32 squared distance of rows ``a [..., 3]`` and ``b [..., 3]``."""
    d = a - b
    return (d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1]) + d[..., 2] * d[..., 2]


def furthest_point_sample(points: Tensor, offsets: Tensor, counts: Tensor) -> Tensor:
    out = []
    for b in range(len(counts)):
        s, e, k = int(offsets[b]), int(offsets[b + 1]), int(counts[b])
        pts = points[s:e]
        mind = torch.full((e - s,), float("inf"))
        pick = 0
        for _ in range(k):
            out.append(s + pick)
            mind = torch.minimum(mind, _d2(pts, pts[pick]))
            best = mind.max()
            pick = int(torch.nonzero(mind == best)[0])     # lowest row among the ties
    return torch.tensor(out, dtype=torch.int64)


def ball_query(points: Tensor, offsets: Tensor, centers: Tensor, center_offsets: Tensor,
               radius: float, nsample: int) -> Tuple[Tensor, Tensor]:
    r2 = torch.tensor(radius, dtype=torch.float32) ** 2
    idx = torch.empty((len(centers), nsample), dtype=torch.int64)
    count = torch.zeros(len(centers), dtype=torch.int64)
    for b in range(len(offsets) - 1):
        s, e = int(offsets[b]), int(offsets[b + 1])
        for c in range(int(center_offsets[b]), int(center_offsets[b + 1])):
            found = (s + torch.nonzero(_d2(points[s:e], centers[c]) < r2).flatten())[:nsample]
            count[c] = len(found)
            fill = found[0] if len(found) else s
            idx[c] = fill
            idx[c, :len(found)] = found
    return idx, count


def group_points(features: Tensor, idx: Tensor) -> Tensor:
    return features[idx].permute(0, 2, 1).contiguous()


def three_interpolate(features: Tensor, idx: Tensor, weight: Tensor) -> Tensor:
    f = features[idx]                                       # [N, 3, C]
    w = weight[..., None]
    return (w[:, 0] * f[:, 0] + w[:, 1] * f[:, 1]) + w[:, 2] * f[:, 2]


def _inside(points: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The contract's float64 point-in-box test (borders included)."""
    p = points.astype(np.float64)
    bx = box.astype(np.float64)
    c, s = np.cos(bx[6]), np.sin(bx[6])
    dx, dy, dz = p[:, 0] - bx[0], p[:, 1] - bx[1], p[:, 2] - bx[2]
    lx = dx * c + dy * s
    ly = -dx * s + dy * c
    return (np.abs(lx) <= 0.5 * bx[3]) & (np.abs(ly) <= 0.5 * bx[4]) & (np.abs(dz) <= 0.5 * bx[5])


def points_in_boxes(points: Tensor, offsets: Tensor, boxes: Tensor, box_offsets: Tensor) -> Tensor:
    out = torch.full((len(points),), -1, dtype=torch.int64)
    pts, bxs = points.numpy(), boxes.numpy()
    for b in range(len(offsets) - 1):
        s, e = int(offsets[b]), int(offsets[b + 1])
        for k in range(int(box_offsets[b + 1]) - 1, int(box_offsets[b]) - 1, -1):   # lowest wins
            out[s:e][torch.from_numpy(_inside(pts[s:e], bxs[k]))] = k
    return out


def roipoint_pool3d(points: Tensor, features: Tensor, offsets: Tensor, boxes: Tensor,
                    box_offsets: Tensor, num_sampled: int) -> Tuple[Tensor, Tensor]:
    width = 3 + features.shape[1]
    pooled = torch.zeros((len(boxes), num_sampled, width))
    empty = torch.ones(len(boxes), dtype=torch.bool)
    rows = torch.cat([points, features], dim=1)
    for b in range(len(offsets) - 1):
        s, e = int(offsets[b]), int(offsets[b + 1])
        for k in range(int(box_offsets[b]), int(box_offsets[b + 1])):
            inside = s + np.nonzero(_inside(points[s:e].numpy(), boxes[k].numpy()))[0]
            if len(inside):
                empty[k] = False
                pooled[k] = rows[torch.from_numpy(inside[np.arange(num_sampled) % len(inside)])]
    return pooled, empty
