"""Teacher/student wrapper: runs the frozen teacher and the student on one batch and adds the
configured distillation terms (:mod:`.terms`) to the student's detection loss."""
from typing import Dict, Tuple

import torch
from torch import Tensor, nn

from pointdistiller.distill.config import DistillConfig
from pointdistiller.distill.terms import TERMS


class Distiller(nn.Module):
    """Frozen teacher + student + distillation terms.

    Args:
        student: the detector being trained.
        teacher: the frozen teacher detector (never saved with the student).
        config: the ``distill`` section.
        teacher_channels, student_channels: the models' declared feature taps (``feature_info``,
            :class:`~pointdistiller.detectors.outputs.FeatureTap` by name).
        num_classes: classes of the heads (response KD).
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, config: DistillConfig,
                 teacher_taps, student_taps, num_classes: int = 3):
        super().__init__()
        if config.teacher_mode not in ("eval", "train"):
            raise ValueError(f"distill.teacher_mode must be 'eval' or 'train', got {config.teacher_mode!r}")
        if not isinstance(config.warmup_iters, int) or isinstance(config.warmup_iters, bool) \
                or config.warmup_iters < 0:
            raise ValueError(f"distill.warmup_iters must be a whole number >= 0, got "
                             f"{config.warmup_iters!r}")
        # the factor of the distillation losses at the current step (see set_step)
        self.kd_scale = 1.0
        self.student = student
        self.teacher = [teacher]  # a list keeps it out of parameters(), state_dict() and DDP
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.config, self.num_classes = config, num_classes
        self.terms = nn.ModuleDict()
        for kind, term_class in TERMS.items():
            blocks = getattr(config, kind)
            if blocks is None:
                continue
            blocks = blocks if isinstance(blocks, list) else [blocks]
            self.terms[kind] = nn.ModuleList(
                term_class(cfg, f"{kind}[{i}]", teacher_taps, student_taps, num_classes)
                for i, cfg in enumerate(blocks))
        # the teacher runs its head only for a term that reads it (else it stops at its taps)
        self.teacher_head = any(t.needs_teacher_head for terms in self.terms.values() for t in terms)
        self.train(self.training)   # puts the teacher in the mode teacher_mode asks for

    @property
    def teacher_model(self) -> nn.Module:
        return self.teacher[0]

    def kd_modules(self) -> nn.ModuleDict:
        """The trainable distillation modules (graph layers, adapters): saved with the student's
        training state, dropped at inference."""
        return self.terms

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher_model.train(mode and self.config.teacher_mode == "train")
        return self

    def _apply(self, fn, recurse=True):
        # .to()/.cuda()/.half() reach the teacher too, although it is not a submodule
        super()._apply(fn, recurse)
        self.teacher_model._apply(fn, recurse)
        return self

    def set_step(self, iteration: int) -> float:
        """Sets the distillation losses' factor for training step ``iteration`` (0-based):
        ``(iteration + 1) / warmup_iters`` during the warm-up, then 1. Returns it."""
        w = self.config.warmup_iters
        self.kd_scale = 1.0 if w <= 0 else min(1.0, (iteration + 1) / w)
        return self.kd_scale

    def forward(self, batch) -> Tuple[Dict[str, Tensor], Dict[str, float]]:
        """Returns (losses with ``"total"`` = detection + distillation, stats for logging)."""
        with torch.no_grad():
            t_out = self.teacher_model(batch, head=self.teacher_head)
        s_out = self.student(batch)
        losses = dict(self.student.loss(batch, s_out))
        stats: Dict[str, float] = {}
        kd_total = losses["total"].new_zeros(())
        for kind, terms in self.terms.items():
            for i, term in enumerate(terms):
                loss, st = term(t_out, s_out, batch)
                name = kind if kind == "response" else f"{kind}{i}"
                losses[f"kd_{name}"] = loss
                kd_total = kd_total + loss
                stats.update({f"{name}_{k}": v for k, v in st.items()})
        losses["det"] = losses["total"]
        # the kd_* terms are logged at their full weight; "kd" (what the step optimises) carries the
        # warm-up factor
        losses["kd"] = kd_total * self.kd_scale
        losses["total"] = losses["total"] + losses["kd"]
        if self.config.warmup_iters > 0:
            stats["warmup_scale"] = self.kd_scale
        return losses, stats
