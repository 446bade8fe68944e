"""The one-cycle learning-rate and momentum schedule of mmdetection3d's KITTI configs.

Over the first ``up_ratio`` of all iterations the learning rate rises from ``lr`` to
``lr * peak_ratio`` while Adam's beta1 falls from ``momentum_max`` to ``momentum_min``; over the rest the
learning rate falls to ``lr * final_ratio`` and beta1 rises back, both along cosine curves.
"""
import math
from typing import Tuple

import torch


def _cos(start: float, end: float, frac: float) -> float:
    return end + (start - end) * (1 + math.cos(math.pi * frac)) / 2


class OneCycle:
    """Sets ``lr`` and ``betas[0]`` of every param group of ``optimizer`` per iteration.

    Args:
        optimizer: an Adam/AdamW optimizer.
        total_iters: iterations of the whole run.
        lr: base learning rate.
        peak_ratio: peak / base (10 in the paper's configs).
        final_ratio: final / base (1e-4).
        up_ratio: fraction of iterations spent rising (0.4).
        momentum_range: (min, max) of beta1 (0.85, 0.95).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, total_iters: int, lr: float,
                 peak_ratio: float = 10.0, final_ratio: float = 1e-4, up_ratio: float = 0.4,
                 momentum_range: Tuple[float, float] = (0.85, 0.95)):
        if total_iters < 1:
            raise ValueError(f"one-cycle schedule needs total_iters >= 1, got {total_iters}")
        self.optimizer, self.total = optimizer, total_iters
        self.lr, self.peak, self.final = lr, lr * peak_ratio, lr * final_ratio
        self.up = max(1, int(round(total_iters * up_ratio)))
        self.m_min, self.m_max = momentum_range

    def values(self, it: int) -> Tuple[float, float]:
        """``(lr, beta1)`` at iteration ``it`` (0-based)."""
        if it < self.up:
            frac = it / self.up
            return _cos(self.lr, self.peak, frac), _cos(self.m_max, self.m_min, frac)
        frac = min(1.0, (it - self.up) / max(1, self.total - self.up))
        return _cos(self.peak, self.final, frac), _cos(self.m_min, self.m_max, frac)

    def apply(self, it: int) -> float:
        """Sets the optimizer's values for iteration ``it``; returns the learning rate."""
        lr, beta1 = self.values(it)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
            if "betas" in group:
                group["betas"] = (beta1, group["betas"][1])
        return lr
