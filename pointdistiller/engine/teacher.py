"""The models of a run besides the student: the plain detection objective, and the teacher of a
distillation run (its checkpoint found and verified, its inputs checked against the student's)."""
import os
from typing import Dict, Optional, Tuple

from torch import nn

from pointdistiller.config import Config, ConfigError, load_config
from pointdistiller.detectors.build import (build_detector, input_kind, point_sampling_settings,
                                            voxelization_settings)

from pointdistiller.engine.checkpoint import CheckpointError, load_checkpoint, load_model_weights, sha256_file
from pointdistiller.engine.errors import RunError


class DetectionObjective(nn.Module):
    """A detector trained on its own detection loss (same interface as ``Distiller``)."""

    def __init__(self, student: nn.Module):
        super().__init__()
        self.student = student

    def forward(self, batch):
        return self.student.loss(batch, self.student(batch)), {}


def teacher_checkpoint(cfg: Config, config_path: str, checkpoint: Optional[str] = None) -> str:
    """The teacher's weights file: ``checkpoint`` (``--teacher``) or ``teacher.checkpoint`` (relative
    to the config's folder), checked to exist and, when ``teacher.sha256`` is set, to hash to it."""
    ckpt = checkpoint or (cfg.teacher.checkpoint if cfg.teacher else None)
    if not ckpt:
        raise RunError("no teacher checkpoint: set teacher.checkpoint or pass --teacher CKPT")
    if not os.path.isabs(ckpt) and checkpoint is None:
        ckpt = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(config_path)), ckpt))
    if not os.path.isfile(ckpt):
        raise RunError(f"teacher checkpoint {ckpt} not found")
    if cfg.teacher and cfg.teacher.sha256:
        digest = sha256_file(ckpt)
        if digest != cfg.teacher.sha256.lower():
            raise RunError(f"teacher checkpoint {ckpt}: sha256 {digest} does not match "
                           f"teacher.sha256 {cfg.teacher.sha256}")
    return ckpt


def load_teacher(cfg: Config, config_path: str, checkpoint: Optional[str], device) -> Tuple[nn.Module, Dict]:
    """Builds the teacher from ``teacher.config``, checks that it sees the student's nodes
    (:func:`check_alignment`) and loads its verified checkpoint."""
    if cfg.teacher is None or not cfg.teacher.config:
        raise RunError(f"{config_path}: distillation needs a 'teacher' section with 'config'")
    t_path = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(config_path)), cfg.teacher.config))
    try:
        t_cfg = load_config(t_path)
    except ConfigError as exc:
        raise RunError(f"teacher.config: {exc}") from None
    if t_cfg.model is None:
        raise RunError(f"teacher.config: {t_path} has no model section")
    check_alignment(cfg.model, t_cfg.model)   # before the checkpoint: a mismatch needs no file
    ckpt = teacher_checkpoint(cfg, config_path, checkpoint)
    teacher = build_detector(t_cfg.model)
    try:
        state = load_checkpoint(ckpt)
        load_model_weights(teacher, state, ckpt, what="teacher")
    except CheckpointError as exc:
        raise RunError(str(exc)) from None
    return teacher.to(device), t_cfg.model


def check_alignment(student_cfg: Dict, teacher_cfg: Dict) -> None:
    """Teacher and student must see the same nodes, or their features would not align: the same
    input kind, and the same voxelization (voxel detectors) or point cropping and resampling
    (point-based detectors)."""
    s_kind, t_kind = input_kind(student_cfg), input_kind(teacher_cfg)
    if s_kind != t_kind:
        raise RunError(f"the teacher takes {t_kind} and the student {s_kind}: their features cannot "
                       "be matched")
    if s_kind == "points":
        s, t = point_sampling_settings(student_cfg), point_sampling_settings(teacher_cfg)
        what, keys = "sample points", ("point_range", "num_points")
    else:
        s, t = voxelization_settings(student_cfg), voxelization_settings(teacher_cfg)
        what, keys = "voxelize", ("voxel_size", "point_range", "max_points", "max_voxels")
    if s != t:
        diff = [f"{k}: teacher {getattr(t, k)} vs student {getattr(s, k)}"
                for k in keys if getattr(t, k) != getattr(s, k)]
        raise RunError(f"teacher and student {what} differently, so their features cannot be "
                       "matched: " + "; ".join(diff))
