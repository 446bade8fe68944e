"""Per-point box coding of the PointRCNN RPN (mmdetection3d's ``PointXYZWHLRBBoxCoder`` with
``use_mean_size=True``): a box is coded relative to the point that predicts it and the mean size of
its class, 8 values per point.

Boxes are LiDAR boxes ``(x, y, z_centre, l, w, h, yaw)`` with z at the box centre; mmdetection3d
moves its bottom-origin boxes to the centre before encoding, so the codes are the same.
"""
import torch
from torch import Tensor


class PointResidualCoder:
    """Encodes a box relative to a point and its class mean size, and decodes it back.

    With ``(l_a, w_a, h_a)`` the mean size of the label's class and ``d = sqrt(l_a^2 + w_a^2)``::

        dx = (x_g - x_p) / d    dy = (y_g - y_p) / d    dz = (z_g - z_p) / h_a
        dl = log(l_g / l_a)     dw = log(w_g / w_a)     dh = log(h_g / h_a)
        c = cos(yaw_g)          s = sin(yaw_g)

    and decoding inverts it with ``yaw = atan2(s, c)`` (in ``(-pi, pi]``). Ground-truth sizes are
    clamped to at least 1e-5 before the log, as upstream.

    Args:
        mean_sizes: ``[K, 3]`` float ``(l, w, h)`` metres per class, in the class-index order of
            ``kitti_tools.classes.CLASS_NAMES`` (the labels index its rows); all > 0.
    """

    code_size = 8

    def __init__(self, mean_sizes: Tensor):
        if not isinstance(mean_sizes, Tensor):
            raise TypeError(f"PointResidualCoder: mean_sizes must be a Tensor, got "
                            f"{type(mean_sizes).__name__}")
        if mean_sizes.dim() != 2 or mean_sizes.shape[1] != 3 or mean_sizes.shape[0] < 1:
            raise ValueError(f"PointResidualCoder: mean_sizes must be [K, 3] with K >= 1, got "
                             f"{tuple(mean_sizes.shape)}")
        if not bool(torch.isfinite(mean_sizes).all()) or bool((mean_sizes <= 0).any()):
            raise ValueError(f"PointResidualCoder: mean sizes must be finite and > 0, got "
                             f"{mean_sizes.tolist()}")
        self.mean_sizes = mean_sizes.detach().float().clone()

    @property
    def num_classes(self) -> int:
        return int(self.mean_sizes.shape[0])

    def _anchor_sizes(self, points: Tensor, labels: Tensor, rows: int, name: str, width: int,
                      values: Tensor) -> Tensor:
        """Checks the shapes and returns the ``[P, 3]`` mean sizes of ``labels``."""
        if values.dim() != 2 or values.shape[1] != width:
            raise ValueError(f"PointResidualCoder: {name} must be [P, {width}], got "
                             f"{tuple(values.shape)}")
        if points.shape != (rows, 3):
            raise ValueError(f"PointResidualCoder: points must be [{rows}, 3], got "
                             f"{tuple(points.shape)}")
        if labels.shape != (rows,) or labels.dtype != torch.int64:
            raise ValueError(f"PointResidualCoder: labels must be [{rows}] int64, got "
                             f"{tuple(labels.shape)} {labels.dtype}")
        if rows > 0 and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(f"PointResidualCoder: labels must be in 0 .. {self.num_classes - 1}, "
                             f"got {int(labels.min())} .. {int(labels.max())}")
        return self.mean_sizes.to(device=values.device, dtype=values.dtype)[labels]

    def encode(self, boxes: Tensor, points: Tensor, labels: Tensor) -> Tensor:
        """``boxes [P, 7]``, ``points [P, 3]`` float, ``labels [P]`` int64 -> codes ``[P, 8]``."""
        anchor = self._anchor_sizes(points, labels, boxes.shape[0], "boxes", 7, boxes)
        la, wa, ha = anchor.unbind(-1)
        xp, yp, zp = points.to(boxes.dtype).unbind(-1)
        xg, yg, zg = boxes[:, 0], boxes[:, 1], boxes[:, 2]
        lg, wg, hg = boxes[:, 3:6].clamp_min(1e-5).unbind(-1)
        yaw = boxes[:, 6]
        diag = torch.sqrt(la * la + wa * wa)
        return torch.stack([
            (xg - xp) / diag, (yg - yp) / diag, (zg - zp) / ha,
            torch.log(lg / la), torch.log(wg / wa), torch.log(hg / ha),
            torch.cos(yaw), torch.sin(yaw),
        ], dim=-1)

    def decode(self, deltas: Tensor, points: Tensor, labels: Tensor) -> Tensor:
        """``deltas [P, 8]``, ``points [P, 3]`` float, ``labels [P]`` int64 -> boxes ``[P, 7]``."""
        anchor = self._anchor_sizes(points, labels, deltas.shape[0], "deltas", 8, deltas)
        la, wa, ha = anchor.unbind(-1)
        xp, yp, zp = points.to(deltas.dtype).unbind(-1)
        dx, dy, dz, dl, dw, dh, cos, sin = deltas.unbind(-1)
        diag = torch.sqrt(la * la + wa * wa)
        return torch.stack([
            dx * diag + xp, dy * diag + yp, dz * ha + zp,
            torch.exp(dl) * la, torch.exp(dw) * wa, torch.exp(dh) * ha,
            torch.atan2(sin, cos),
        ], dim=-1)
