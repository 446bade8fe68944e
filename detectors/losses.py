"""Losses of the anchor head (mmdetection3d's PointPillars/SECOND choices): sigmoid focal loss for
classes, smooth L1 on box residuals with the sin-difference trick for yaw, cross-entropy for the
direction bins.

Every function returns an unnormalised sum; the head divides by the number of positive anchors.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def sigmoid_focal_loss(logits: Tensor, labels: Tensor, gamma: float = 2.0,
                       alpha: float = 0.25) -> Tensor:
    """Sum of the sigmoid focal loss (Lin et al. 2017) over non-ignored anchors and classes.

    Per anchor and class with ``t`` the one-hot target and ``p = sigmoid(logit)``::

        loss = -(alpha t + (1 - alpha)(1 - t)) * (1 - p_t)^gamma * log(p_t),   p_t = t p + (1-t)(1-p)

    Args:
        logits: ``[N, K]`` float class logits.
        labels: ``[N]`` int64, ``0 .. K-1`` positive class, ``K`` background (all-zero target),
            ``-1`` ignored (no loss).
        gamma: focusing exponent.
        alpha: weight of positive targets.

    Returns:
        0-dim float tensor.
    """
    if logits.dim() != 2:
        raise ValueError(f"sigmoid_focal_loss: logits must be [N, K], got {tuple(logits.shape)}")
    if labels.shape != logits.shape[:1]:
        raise ValueError(f"sigmoid_focal_loss: labels must be [{logits.shape[0]}], got "
                         f"{tuple(labels.shape)}")
    k = logits.shape[1]
    valid = labels >= 0
    logits, labels = logits[valid], labels[valid]
    # one extra column holds the background label and is dropped
    target = F.one_hot(labels.clamp_max(k), k + 1)[:, :k].to(logits.dtype)
    p = torch.sigmoid(logits)
    pt = target * p + (1 - target) * (1 - p)
    weight = (alpha * target + (1 - alpha) * (1 - target)) * (1 - pt).pow(gamma)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (weight * bce).sum()


def add_sin_difference(pred: Tensor, target: Tensor) -> Tuple[Tensor, Tensor]:
    """Replaces the yaw column (index 6) of ``pred`` and ``target`` (``[..., 7]``) by
    ``sin(p) cos(t)`` and ``cos(p) sin(t)``, whose difference is ``sin(p - t)``: the yaw loss becomes
    periodic in pi (the direction classifier resolves the remaining ambiguity)."""
    p, t = pred[..., 6:7], target[..., 6:7]
    pred = torch.cat([pred[..., :6], torch.sin(p) * torch.cos(t)], dim=-1)
    target = torch.cat([target[..., :6], torch.cos(p) * torch.sin(t)], dim=-1)
    return pred, target


def box_regression_loss(pred: Tensor, target: Tensor, beta: float = 1.0 / 9.0,
                        code_weights: Optional[Tensor] = None, sin_difference: bool = True) -> Tensor:
    """Sum of the smooth L1 loss over positive anchors' residuals.

    Args:
        pred: ``[P, 7]`` float predicted residuals.
        target: ``[P, 7]`` float encoded targets.
        beta: smooth L1 transition point (``0.5 d^2 / beta`` below, ``|d| - beta / 2`` above).
        code_weights: ``[7]`` float per-residual weights, or None for ones.
        sin_difference: compare yaw through :func:`add_sin_difference`.

    Returns:
        0-dim float tensor.
    """
    if pred.shape != target.shape or pred.shape[-1:] != (7,):
        raise ValueError(f"box_regression_loss: pred {tuple(pred.shape)} and target "
                         f"{tuple(target.shape)} must both be [P, 7]")
    if sin_difference:
        pred, target = add_sin_difference(pred, target)
    loss = F.smooth_l1_loss(pred, target, beta=beta, reduction="none")
    if code_weights is not None:
        loss = loss * code_weights.to(loss)
    return loss.sum()


def direction_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Sum of the cross-entropy of ``logits [P, bins]`` against ``targets [P]`` int64 bins."""
    if logits.dim() != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(f"direction_loss: logits must be [P, bins] and targets [P], got "
                         f"{tuple(logits.shape)} and {tuple(targets.shape)}")
    return F.cross_entropy(logits, targets, reduction="sum")
