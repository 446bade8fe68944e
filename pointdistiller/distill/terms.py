"""The distillation terms behind one interface and one name -> class table.

Every term is an ``nn.Module`` built from its config block and the two models' declared feature taps,
and called as ``term(teacher_out, student_out, batch) -> (scalar loss, stats)`` with the models'
``DetectorOutput``s. :data:`TERMS` maps each ``distill`` config field to its class; adding a method
is one module with its term class (and its config dataclass in :mod:`.config`) and one entry here.

Each term reads its tap's declared kind: voxel taps (``[V, C]``) use the batch's voxel offsets,
point counts and grid coordinates; point taps (``[N, C]``, one row per ``batch.points`` row) its
point offsets and xyz; BEV taps (``[B, C, H, W]``) become one node per cell (:func:`bev_to_nodes`).
"""
from typing import Dict, Mapping, Optional, Tuple

import torch
from torch import Tensor

from pointdistiller.detectors.outputs import FeatureTap

from pointdistiller.distill.baselines import AttentionTransfer, FitNet, ResponseKD
from pointdistiller.distill.config import FeatureTermConfig, LocalTermConfig, ResponseTermConfig
from pointdistiller.distill.local import LocalDistillation, bev_to_nodes

Taps = Mapping[str, FeatureTap]


def _nodes(feature: Tensor, batch, name: str, kind: str
           ) -> Tuple[Tensor, Tensor, Tensor, Optional[Tensor]]:
    """(nodes [n, C], offsets [B+1], coords [n, D] float, points-per-node [n] or None) of the tap
    ``name`` of declared ``kind``: BEV cells (grid coordinates), voxels (their grid coordinates and
    point counts) or points (one row per ``batch.points`` row, metric xyz, ``batch.point_offsets``)."""
    expected = 4 if kind == "bev" else 2
    if feature.dim() != expected:
        layout = "[B, C, H, W]" if kind == "bev" else "[n, C]"
        raise ValueError(f"distill: {kind} tap {name!r} has shape {tuple(feature.shape)}; expected "
                         f"{layout}")
    if kind == "bev":
        nodes, offsets, coords = bev_to_nodes(feature)
        return nodes, offsets, coords, None
    rows, what = ((batch.voxel_coords, "voxels") if kind == "voxel" else (batch.points, "points"))
    if feature.shape[0] != rows.shape[0]:
        raise ValueError(f"distill: {kind} tap {name!r} has {feature.shape[0]} rows but the batch has "
                         f"{rows.shape[0]} {what}")
    dev = feature.device
    if kind == "voxel":
        return (feature, batch.voxel_offsets.to(dev), batch.voxel_coords[:, 1:].to(dev).float(),
                batch.voxel_num_points.to(dev))
    return feature, batch.point_offsets.to(dev), batch.points[:, :3].to(dev).float(), None


def _pair(t_out, s_out, batch, name: str, kind: str, where: str):
    """(teacher nodes, offsets, coords, points-per-node or None, student nodes) of one tap."""
    for model, out in (("teacher", t_out), ("student", s_out)):
        if name not in out.features:
            raise ValueError(f"distill.{where}: the {model}'s output has no feature tap {name!r} "
                             f"(taps: {', '.join(sorted(out.features))})")
    t_nodes, offsets, coords, npts = _nodes(t_out.features[name], batch, name, kind)
    s_nodes, s_offsets, _, _ = _nodes(s_out.features[name], batch, name, kind)
    if t_nodes.shape[0] != s_nodes.shape[0] or not torch.equal(offsets, s_offsets):
        raise ValueError(f"distill.{where}: teacher and student tap {name!r} have different nodes "
                         f"(teacher {tuple(t_out.features[name].shape)}, student "
                         f"{tuple(s_out.features[name].shape)}); distillation needs the same "
                         f"voxels / BEV grid / points in both")
    return t_nodes, offsets, coords, npts, s_nodes


def _tap(name: str, where: str, teacher: Taps, student: Taps) -> Tuple[int, int, str]:
    """(teacher width, student width, kind) of the tap both models declare as ``name``."""
    for model, taps in (("teacher", teacher), ("student", student)):
        if name not in taps:
            raise ValueError(f"distill.{where}: the {model} has no feature tap {name!r} "
                             f"(taps: {', '.join(sorted(taps))})")
    if teacher[name].kind != student[name].kind:
        raise ValueError(f"distill.{where}: tap {name!r} is a {teacher[name].kind} tap of the teacher "
                         f"but a {student[name].kind} tap of the student")
    return teacher[name].channels, student[name].channels, teacher[name].kind


class LocalTerm(LocalDistillation):
    """PointDistiller's local distillation on one tap (:class:`LocalDistillation`); the importance
    is the points per voxel (``num_points``, voxel taps) or the teacher's channel max."""

    # whether the term reads the teacher's head outputs (else the teacher runs up to its taps only)
    needs_teacher_head = False

    def __init__(self, cfg: LocalTermConfig, where: str, teacher: Taps, student: Taps,
                 num_classes: int):
        c_t, c_s, kind = _tap(cfg.feature, f"{where}.feature", teacher, student)
        if cfg.importance == "num_points" and kind != "voxel":
            raise ValueError(f"distill.{where}: importance 'num_points' needs a voxel tap, "
                             f"{cfg.feature!r} is a {kind} tap (use 'channel_max')")
        super().__init__(c_t, c_s, num_nodes=cfg.num_nodes, k=cfg.k, tau=cfg.tau,
                         loss_weight=cfg.loss_weight, pool=cfg.pool, reweight=cfg.reweight,
                         knn_space=cfg.knn_space, selection=cfg.selection, edge_mode=cfg.edge_mode,
                         graph_init=cfg.graph_init, teacher_graph=cfg.teacher_graph)
        self.feature, self.kind, self.importance, self.where = cfg.feature, kind, cfg.importance, where

    def forward(self, teacher_out, student_out, batch) -> Tuple[Tensor, Dict[str, float]]:
        t_nodes, offsets, coords, npts, s_nodes = _pair(teacher_out, student_out, batch,
                                                        self.feature, self.kind, self.where)
        if self.importance == "num_points":
            importance = npts.float()
        else:
            importance = t_nodes.max(dim=1).values
        return super().forward(t_nodes, s_nodes, importance, offsets, coords)


class _OneTapTerm:
    """A feature baseline on one tap: the teacher's and the student's nodes of ``cfg.feature``
    (placed before the baseline module in the bases, so that ``super()`` is that module)."""

    needs_teacher_head = False

    def __init__(self, cfg: FeatureTermConfig, where: str, teacher: Taps, student: Taps,
                 num_classes: int):
        c_t, c_s, kind = _tap(cfg.feature, f"{where}.feature", teacher, student)
        super().__init__(c_t, c_s, loss_weight=cfg.loss_weight)
        self.feature, self.kind, self.where = cfg.feature, kind, where

    def forward(self, teacher_out, student_out, batch) -> Tuple[Tensor, Dict[str, float]]:
        t_nodes, offsets, _, _, s_nodes = _pair(teacher_out, student_out, batch, self.feature,
                                                self.kind, self.where)
        return super().forward(t_nodes, s_nodes, offsets)


class FitNetTerm(_OneTapTerm, FitNet):
    """FitNet on one tap (:class:`~.baselines.FitNet`)."""


class AttentionTerm(_OneTapTerm, AttentionTransfer):
    """Attention transfer on one tap (:class:`~.baselines.AttentionTransfer`)."""


class ResponseTerm(ResponseKD):
    """Response KD on the head outputs (:class:`~.baselines.ResponseKD`): the dense stage that the
    head output exposes as ``dense_response()`` (the anchor head's maps, PointRCNN's per-point
    stage 1)."""

    needs_teacher_head = True

    def __init__(self, cfg: ResponseTermConfig, where: str, teacher: Taps, student: Taps,
                 num_classes: int):
        super().__init__(cfg.cls_weight, cfg.box_weight, cfg.temperature)

    def forward(self, teacher_out, student_out, batch) -> Tuple[Tensor, Dict[str, float]]:
        t_cls, t_box = teacher_out.head.dense_response()
        s_cls, s_box = student_out.head.dense_response()
        return super().forward(t_cls, t_box, s_cls, s_box)


# The ``distill`` config field of each term -> its class (list fields hold several terms).
TERMS = {"local": LocalTerm, "fitnet": FitNetTerm, "attention": AttentionTerm,
         "response": ResponseTerm}
