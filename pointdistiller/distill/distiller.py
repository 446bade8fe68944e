"""Teacher/student wrapper: runs the frozen teacher and the student on one batch and adds the
configured distillation terms to the student's detection loss.

Terms read named feature taps of ``DetectorOutput.features`` (e.g. ``"pfn"`` pillar features,
``"backbone.0"`` BEV maps). Node-level taps (``[V, C]``, row-aligned with the batch's voxels) use the
voxels' offsets, point counts and grid coordinates; BEV taps (``[B, C, H, W]``) become one node per
cell with :func:`bev_to_nodes`.
"""
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from .config import DistillConfig
from .baselines import AttentionTransfer, FitNet, ResponseKD
from .local import LocalDistillation, bev_to_nodes


def _nodes(feature: Tensor, batch, name: str) -> Tuple[Tensor, Tensor, Tensor, Optional[Tensor]]:
    """(nodes [n, C], offsets [B+1], coords [n, D] float, points-per-node [n] or None)."""
    if feature.dim() == 4:
        nodes, offsets, coords = bev_to_nodes(feature)
        return nodes, offsets, coords, None
    if feature.dim() == 2:
        if feature.shape[0] != batch.voxel_coords.shape[0]:
            raise ValueError(f"distill: node tap {name!r} has {feature.shape[0]} rows but the batch has "
                             f"{batch.voxel_coords.shape[0]} voxels")
        return (feature, batch.voxel_offsets.to(feature.device),
                batch.voxel_coords[:, 1:].to(feature.device).float(),
                batch.voxel_num_points.to(feature.device))
    raise ValueError(f"distill: feature tap {name!r} has shape {tuple(feature.shape)}; expected [n, C] "
                     f"or [B, C, H, W]")


def _pair(t_out, s_out, batch, name: str, where: str):
    """(teacher nodes, offsets, coords, points-per-node or None, student nodes) of one tap."""
    for model, out in (("teacher", t_out), ("student", s_out)):
        if name not in out.features:
            raise ValueError(f"distill.{where}: the {model}'s output has no feature tap {name!r} "
                             f"(taps: {', '.join(sorted(out.features))})")
    t_nodes, offsets, coords, npts = _nodes(t_out.features[name], batch, name)
    s_nodes, s_offsets, _, _ = _nodes(s_out.features[name], batch, name)
    if t_nodes.shape[0] != s_nodes.shape[0] or not torch.equal(offsets, s_offsets):
        raise ValueError(f"distill.{where}: teacher and student tap {name!r} have different nodes "
                         f"(teacher {tuple(t_out.features[name].shape)}, student "
                         f"{tuple(s_out.features[name].shape)}); distillation needs the same "
                         f"voxels / BEV grid in both")
    return t_nodes, offsets, coords, npts, s_nodes


class Distiller(nn.Module):
    """Frozen teacher + student + distillation terms.

    Args:
        student: the detector being trained.
        teacher: the frozen teacher detector (never saved with the student).
        config: the ``distill`` section.
        teacher_channels, student_channels: width of every feature tap of each model.
        num_classes: classes of the heads (response KD).
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, config: DistillConfig,
                 teacher_channels: Dict[str, int], student_channels: Dict[str, int],
                 num_classes: int = 3):
        super().__init__()
        if config.teacher_mode not in ("eval", "train"):
            raise ValueError(f"distill.teacher_mode must be 'eval' or 'train', got {config.teacher_mode!r}")
        self.student = student
        self.teacher = [teacher]  # a list keeps it out of parameters(), state_dict() and DDP
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.config, self.num_classes = config, num_classes

        def widths(name: str, where: str) -> Tuple[int, int]:
            for model, chans in (("teacher", teacher_channels), ("student", student_channels)):
                if name not in chans:
                    raise ValueError(f"distill.{where}: the {model} has no feature tap {name!r} "
                                     f"(taps: {', '.join(sorted(chans))})")
            return teacher_channels[name], student_channels[name]

        self.local_terms = nn.ModuleList()
        for i, term in enumerate(config.local):
            c_t, c_s = widths(term.feature, f"local[{i}].feature")
            if term.importance not in ("num_points", "channel_max"):
                raise ValueError(f"distill.local[{i}].importance must be 'num_points' or 'channel_max', "
                                 f"got {term.importance!r}")
            self.local_terms.append(LocalDistillation(
                c_t, c_s, num_nodes=term.num_nodes, k=term.k, tau=term.tau,
                loss_weight=term.loss_weight, pool=term.pool, reweight=term.reweight,
                knn_space=term.knn_space, selection=term.selection, edge_mode=term.edge_mode,
                graph_init=term.graph_init))
        self.fitnet_terms = nn.ModuleList(
            FitNet(*widths(t.feature, f"fitnet[{i}].feature"), loss_weight=t.loss_weight)
            for i, t in enumerate(config.fitnet))
        self.attention_terms = nn.ModuleList(
            AttentionTransfer(*widths(t.feature, f"attention[{i}].feature"), loss_weight=t.loss_weight)
            for i, t in enumerate(config.attention))
        self.response = (ResponseKD(config.response.cls_weight, config.response.box_weight,
                                    config.response.temperature) if config.response else None)
        self.train(self.training)   # puts the teacher in the mode teacher_mode asks for

    @property
    def teacher_model(self) -> nn.Module:
        return self.teacher[0]

    def kd_modules(self) -> nn.ModuleDict:
        """The trainable distillation modules (graph layers, adapters): saved with the student's
        training state, dropped at inference."""
        return nn.ModuleDict({"local": self.local_terms, "fitnet": self.fitnet_terms,
                              "attention": self.attention_terms})

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher_model.train(mode and self.config.teacher_mode == "train")
        return self

    def _apply(self, fn, recurse=True):
        # .to()/.cuda()/.half() reach the teacher too, although it is not a submodule
        super()._apply(fn, recurse)
        self.teacher_model._apply(fn, recurse)
        return self

    def forward(self, batch) -> Tuple[Dict[str, Tensor], Dict[str, float]]:
        """Returns (losses with ``"total"`` = detection + distillation, stats for logging)."""
        with torch.no_grad():
            t_out = self.teacher_model(batch)
        s_out = self.student(batch)
        losses = dict(self.student.loss(batch, s_out))
        stats: Dict[str, float] = {}
        kd_total = losses["total"].new_zeros(())
        for i, (cfg, term) in enumerate(zip(self.config.local, self.local_terms)):
            t_nodes, offsets, coords, npts, s_nodes = _pair(t_out, s_out, batch, cfg.feature,
                                                            f"local[{i}]")
            if cfg.importance == "num_points":
                if npts is None:
                    raise ValueError(f"distill.local[{i}]: importance 'num_points' needs a voxel tap, "
                                     f"{cfg.feature!r} is a BEV map (use 'channel_max')")
                importance = npts.float()
            else:
                importance = t_nodes.max(dim=1).values
            loss, st = term(t_nodes, s_nodes, importance, offsets, coords)
            losses[f"kd_local{i}"] = loss
            kd_total = kd_total + loss
            stats.update({f"local{i}_{k}": v for k, v in st.items()})
        for kind, cfgs, terms in (("fitnet", self.config.fitnet, self.fitnet_terms),
                                  ("attention", self.config.attention, self.attention_terms)):
            for i, (cfg, term) in enumerate(zip(cfgs, terms)):
                t_nodes, offsets, _, _, s_nodes = _pair(t_out, s_out, batch, cfg.feature,
                                                        f"{kind}[{i}]")
                loss, _ = term(t_nodes, s_nodes, offsets)
                losses[f"kd_{kind}{i}"] = loss
                kd_total = kd_total + loss
        if self.response is not None:
            loss, _ = self.response(t_out.head, s_out.head, self.num_classes)
            losses["kd_response"] = loss
            kd_total = kd_total + loss
        losses["det"] = losses["total"]
        losses["kd"] = kd_total
        losses["total"] = losses["total"] + kd_total
        return losses, stats
