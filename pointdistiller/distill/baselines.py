"""Distillation baselines on the same node interface as local distillation, so a config block can
switch or combine them: FitNet (Romero et al. 2015), attention transfer (Zagoruyko & Komodakis 2017)
and response KD on the detection head's class and box outputs.

Feature terms take row-aligned ``[n, C]`` node features with ``[B + 1]`` offsets (pillar features,
or BEV cells through :func:`pointdistiller.distill.local.bev_to_nodes`).
"""
from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class FitNet(nn.Module):
    """A learned linear adapter maps student features to the teacher's width; loss = MSE.

    Args:
        teacher_channels: C_T.
        student_channels: C_S.
        loss_weight: multiplier of the mean squared error.
    """

    def __init__(self, teacher_channels: int, student_channels: int, loss_weight: float = 1.0):
        super().__init__()
        self.adapter = nn.Linear(student_channels, teacher_channels)
        self.loss_weight = loss_weight

    def forward(self, teacher: Tensor, student: Tensor, offsets: Tensor) -> Tuple[Tensor, Dict[str, float]]:
        """``teacher [n, C_T]``, ``student [n, C_S]`` -> (scalar loss, stats)."""
        loss = F.mse_loss(self.adapter(student), teacher.detach())
        return self.loss_weight * loss, {}


class AttentionTransfer(nn.Module):
    """Matches per-sample spatial attention maps ``a_i = mean_c |f_ic|^p``, each L2-normalised over
    the sample's nodes; loss = mean over samples of ``||a_S - a_T||^2`` (no parameters).

    Args:
        p: the exponent (2 in the paper).
        loss_weight: multiplier (the paper's beta is 1e3 for summed maps; ours is per-node-mean).
    """

    def __init__(self, teacher_channels: int = 0, student_channels: int = 0, p: float = 2.0,
                 loss_weight: float = 1.0):
        super().__init__()
        self.p, self.loss_weight = p, loss_weight

    def _attention(self, feats: Tensor, offsets: Tensor) -> Tensor:
        a = feats.abs().pow(self.p).mean(dim=1)
        seg = torch.repeat_interleave(torch.arange(offsets.numel() - 1, device=feats.device),
                                      offsets[1:] - offsets[:-1])
        norm = torch.zeros(offsets.numel() - 1, device=feats.device, dtype=a.dtype)
        norm = norm.index_add(0, seg, a * a).sqrt().clamp_min(1e-12)
        return a / norm[seg]

    def forward(self, teacher: Tensor, student: Tensor, offsets: Tensor) -> Tuple[Tensor, Dict[str, float]]:
        a_t = self._attention(teacher.detach(), offsets)
        a_s = self._attention(student, offsets)
        num_samples = max(int((offsets[1:] > offsets[:-1]).sum()), 1)
        loss = (a_s - a_t).pow(2).sum() / num_samples
        return self.loss_weight * loss, {}


class ResponseKD(nn.Module):
    """Response distillation on a detector's dense outputs (one row per anchor or point).

    Class term: binary KL divergence from the teacher's sigmoid probabilities to the student's at
    temperature T (times T^2), i.e. the binary cross-entropy against the teacher's soft targets
    minus their entropy, so identical heads give 0 (the gradient is the cross-entropy's). Box term:
    smooth L1 between the student's and the teacher's box values, weighted per row by the
    teacher's highest class probability, so background rows count little.

    Args:
        cls_weight, box_weight: multipliers of the two terms.
        temperature: T.
        beta: smooth-L1 transition point of the box term.
    """

    def __init__(self, cls_weight: float = 1.0, box_weight: float = 1.0, temperature: float = 1.0,
                 beta: float = 1.0 / 9.0):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"response KD: temperature must be > 0, got {temperature}")
        self.cls_weight, self.box_weight = cls_weight, box_weight
        self.temperature, self.beta = temperature, beta

    def forward(self, t_cls: Tensor, t_box: Tensor, s_cls: Tensor,
                s_box: Tensor) -> Tuple[Tensor, Dict[str, float]]:
        """Teacher and student class logits ``[n, K]`` and box values ``[n, D]`` of the same rows
        (the heads' ``dense_response()``)."""
        t = self.temperature
        t_cls, t_box = t_cls.detach(), t_box.detach()
        if t_cls.shape != s_cls.shape:
            raise ValueError(f"response KD: teacher class map {tuple(t_cls.shape)} and student "
                             f"{tuple(s_cls.shape)} differ (same anchors / points needed)")
        if t_box.shape != s_box.shape or t_box.shape[0] != t_cls.shape[0]:
            raise ValueError(f"response KD: teacher box map {tuple(t_box.shape)} and student "
                             f"{tuple(s_box.shape)} differ or do not match the {t_cls.shape[0]} "
                             "class rows")
        soft = torch.sigmoid(t_cls / t)
        entropy = F.binary_cross_entropy_with_logits(t_cls / t, soft)
        cls_loss = (F.binary_cross_entropy_with_logits(s_cls / t, soft) - entropy) * t * t
        conf = torch.sigmoid(t_cls).max(dim=1).values                            # [n]
        per = F.smooth_l1_loss(s_box, t_box, beta=self.beta, reduction="none").sum(dim=1)
        box_loss = (per * conf).sum() / conf.sum().clamp_min(1.0)
        return self.cls_weight * cls_loss + self.box_weight * box_loss, {}
