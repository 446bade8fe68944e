"""Residual box coding of SECOND/PointPillars (mmdetection3d's ``DeltaXYZWLHRBBoxCoder``) and the
yaw helpers shared by target assignment and post-processing.

Boxes are LiDAR boxes ``(x, y, z_centre, l, w, h, yaw)`` with z at the box centre, so no
bottom/centre conversion happens here (mmdetection3d converts its bottom-origin boxes to centres
inside the coder; the residuals are the same).
"""
import math

import torch
from torch import Tensor


def limit_period(val: Tensor, offset: float = 0.5, period: float = math.pi) -> Tensor:
    """Maps ``val`` into ``[-offset * period, (1 - offset) * period)``: ``val - floor(val / period +
    offset) * period`` (mmdetection3d's ``limit_period``). Any shape, floating dtype."""
    return val - torch.floor(val / period + offset) * period


def direction_bins(yaw: Tensor, dir_offset: float, num_bins: int = 2) -> Tensor:
    """Direction-classifier target of each yaw: the bin of ``yaw - dir_offset`` wrapped to
    ``[0, 2 pi)``, bins of width ``2 pi / num_bins`` (for 2 bins: 0 when the wrapped angle is in
    ``[0, pi)``, else 1).

    Args:
        yaw: ``[...]`` float yaw angles, radians.
        dir_offset: radians subtracted before binning (mmdetection3d KITTI configs: ``-pi / 4``).
        num_bins: number of bins (2 for the KITTI heads).

    Returns:
        ``[...]`` int64 in ``0 .. num_bins - 1``.
    """
    wrapped = limit_period(yaw - dir_offset, 0.0, 2 * math.pi)
    bins = torch.floor(wrapped / (2 * math.pi / num_bins)).long()
    return bins.clamp_(0, num_bins - 1)


class ResidualCoder:
    """Encodes ground-truth boxes as residuals to anchors and decodes them back.

    With ``d = sqrt(l_a^2 + w_a^2)`` the anchor's BEV diagonal::

        dx = (x_g - x_a) / d    dy = (y_g - y_a) / d    dz = (z_g - z_a) / h_a
        dl = log(l_g / l_a)     dw = log(w_g / w_a)     dh = log(h_g / h_a)
        dr = r_g - r_a

    ``decode(anchors, encode(anchors, boxes)) == boxes`` up to float rounding. Sizes must be > 0.
    """

    code_size = 7

    @staticmethod
    def _check(name: str, t: Tensor) -> None:
        if not isinstance(t, Tensor):
            raise TypeError(f"ResidualCoder: {name} must be a Tensor, got {type(t).__name__}")
        if t.shape[-1:] != (7,):
            raise ValueError(f"ResidualCoder: {name} must have shape [..., 7], got {tuple(t.shape)}")

    def encode(self, anchors: Tensor, boxes: Tensor) -> Tensor:
        """``anchors [..., 7]``, ``boxes [..., 7]`` (broadcastable, float) -> residuals ``[..., 7]``."""
        self._check("anchors", anchors)
        self._check("boxes", boxes)
        xa, ya, za, la, wa, ha, ra = anchors.unbind(-1)
        xg, yg, zg, lg, wg, hg, rg = boxes.unbind(-1)
        diag = torch.sqrt(la * la + wa * wa)
        return torch.stack([
            (xg - xa) / diag, (yg - ya) / diag, (zg - za) / ha,
            torch.log(lg / la), torch.log(wg / wa), torch.log(hg / ha),
            rg - ra,
        ], dim=-1)

    def decode(self, anchors: Tensor, deltas: Tensor) -> Tensor:
        """``anchors [..., 7]``, ``deltas [..., 7]`` (broadcastable, float) -> boxes ``[..., 7]``."""
        self._check("anchors", anchors)
        self._check("deltas", deltas)
        xa, ya, za, la, wa, ha, ra = anchors.unbind(-1)
        dx, dy, dz, dl, dw, dh, dr = deltas.unbind(-1)
        diag = torch.sqrt(la * la + wa * wa)
        return torch.stack([
            dx * diag + xa, dy * diag + ya, dz * ha + za,
            torch.exp(dl) * la, torch.exp(dw) * wa, torch.exp(dh) * ha,
            dr + ra,
        ], dim=-1)
