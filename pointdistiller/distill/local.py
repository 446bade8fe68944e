"""PointDistiller's local distillation (Zhang et al., CVPR 2023) over a kNN dynamic graph.

For each sample, the N most important voxels/points (by a given importance score) are selected, their
K nearest neighbours are found in the teacher's feature space (or in coordinates) with
``pointdistiller.ops.knn``, edge features ``cat(f[neighbour], f[centre])`` are pushed through one
trainable graph layer per network (1x1 conv + BN + ReLU, 2C -> C' = student width), and the
reweighted squared error between the teacher's and the student's graph features is the loss::

    w = N * softmax(s[idx] / tau)            (sum N, mean 1)
    L = lambda * mean_{i,k,c}( w_i * (G_T - G_S)^2 )

Two exact evaluations of the graph layer are available (``edge_mode``):

- ``"gather"``: builds the ``[N, 2C, K]`` edge tensor with ``pointdistiller.ops.gather_edges`` and
  applies the 1x1 convolution, as the authors' code does;
- ``"factorized"`` (default): the conv is linear before its BN, so
  ``W cat(f_j, f_i) + b = A f_j + B f_i + b``; every feature is projected once to C' channels and the
  C'-wide rows are gathered. Same numbers, and the 2C-wide edge tensor is never built.

Both keep the parameters in the same ``nn.Conv1d``/``nn.BatchNorm1d`` modules, so checkpoints are
interchangeable.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pointdistiller.ops.gather_edges import gather_edges
from pointdistiller.ops.knn import knn


class GraphLayer(nn.Module):
    """One dynamic-graph layer: 1x1 conv (2C -> C_out) + BatchNorm + ReLU over edge features.

    Args:
        in_channels: C, the width of the node features (the edge is 2C wide).
        out_channels: C_out.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.in_channels = in_channels
        self.conv = nn.Conv1d(2 * in_channels, out_channels, 1)
        self.bn = nn.BatchNorm1d(out_channels)

    def forward(self, features: Tensor, nbr: Tensor, centre: Tensor, edge_mode: str = "factorized") -> Tensor:
        """Graph features of the selected nodes.

        Args:
            features: ``[n, C]`` node features.
            nbr: ``[Q, K]`` int64 neighbour rows of ``features``.
            centre: ``[Q]`` int64 centre rows of ``features``.
            edge_mode: ``"factorized"`` or ``"gather"`` (identical values, see module doc).

        Returns:
            ``[Q, K, C_out]`` float.
        """
        if features.shape[1] != self.in_channels:
            raise ValueError(
                f"graph layer expects {self.in_channels}-channel features, got {features.shape[1]}")
        q, k = nbr.shape
        weight = self.conv.weight[:, :, 0]                       # [C_out, 2C]
        if edge_mode == "gather":
            edges = gather_edges(features, nbr, centre)          # [Q, 2C, K]
            out = F.conv1d(edges, self.conv.weight, self.conv.bias)  # [Q, C_out, K]
            out = out.transpose(1, 2).reshape(q * k, -1)
        elif edge_mode == "factorized":
            c = self.in_channels
            proj_nbr = features @ weight[:, :c].t()              # [n, C_out]
            proj_ctr = features[centre] @ weight[:, c:].t() + self.conv.bias  # [Q, C_out]
            out = (proj_nbr[nbr] + proj_ctr[:, None, :]).reshape(q * k, -1)
        else:
            raise ValueError(f"edge_mode must be 'factorized' or 'gather', got {edge_mode!r}")
        # BatchNorm1d over [Q*K, C_out] has the same per-channel statistics as over [Q, C_out, K].
        return F.relu(self.bn(out)).reshape(q, k, -1)


@dataclass
class Selection:
    """The distilled nodes of one batch.

    Attributes:
        idx: ``[Q]`` int64 rows of the feature map (sample-major, importance-descending per sample).
        nbr: ``[Q, K]`` int64 neighbour rows (each row includes the centre itself).
        weights: ``[Q]`` reweighting factors (mean 1 over the batch; all ones without reweighting).
        query_offsets: ``[B + 1]`` int64 offsets of ``idx`` per sample.
    """

    idx: Tensor
    nbr: Tensor
    weights: Tensor
    query_offsets: Tensor


def effective_count(weights: Tensor) -> float:
    """Kish's effective number of weighted elements, ``(sum w)^2 / sum w^2``."""
    w = weights.detach().double()
    if w.numel() == 0:
        return 0.0
    return float(w.sum() ** 2 / (w * w).sum().clamp_min(1e-300))


class LocalDistillation(nn.Module):
    """PointDistiller's reweighted local distillation loss on one pair of feature maps.

    Args:
        teacher_channels: C_T of the teacher's distilled map.
        student_channels: C_S of the student's (also the graph layers' output width C').
        num_nodes: N, the total number of selected nodes per batch (split evenly over the samples
            with ``selection="per_sample"``).
        k: K neighbours (the centre is among them). Clipped to the smallest sample's node count.
        tau: softmax temperature of the reweighting.
        loss_weight: lambda.
        pool: ``"none"`` or ``"max"`` (max over the K neighbours before the loss, as for PointRCNN).
        reweight: use ``w = N softmax(s / tau)``; otherwise all weights are 1.
        knn_space: ``"teacher"`` (teacher features) or ``"coords"`` (node coordinates).
        selection: ``"per_sample"`` (default) or ``"pooled"`` (the authors' code: top-N and kNN over
            the whole batch together, so a neighbour may come from another scene).
        edge_mode: ``"factorized"`` (default) or ``"gather"``; identical values.
    """

    def __init__(self, teacher_channels: int, student_channels: int, num_nodes: int = 6000,
                 k: int = 128, tau: float = 0.01, loss_weight: float = 2.0, pool: str = "none",
                 reweight: bool = True, knn_space: str = "teacher", selection: str = "per_sample",
                 edge_mode: str = "factorized"):
        super().__init__()
        for name, value, allowed in (("pool", pool, ("none", "max")),
                                     ("knn_space", knn_space, ("teacher", "coords")),
                                     ("selection", selection, ("per_sample", "pooled")),
                                     ("edge_mode", edge_mode, ("factorized", "gather"))):
            if value not in allowed:
                raise ValueError(f"distill: {name} must be one of {allowed}, got {value!r}")
        if num_nodes < 1 or k < 1 or tau <= 0:
            raise ValueError(f"distill: need num_nodes >= 1, k >= 1, tau > 0 "
                             f"(got {num_nodes}, {k}, {tau})")
        self.num_nodes, self.k, self.tau, self.loss_weight = num_nodes, k, tau, loss_weight
        self.pool, self.reweight, self.knn_space = pool, reweight, knn_space
        self.selection, self.edge_mode = selection, edge_mode
        self.teacher_graph = GraphLayer(teacher_channels, student_channels)
        self.student_graph = GraphLayer(student_channels, student_channels)

    # ------------------------------------------------------------------------------------------
    def select(self, importance: Tensor, offsets: Tensor, space: Tensor) -> Selection:
        """Top-N selection, kNN graph and weights (no gradients flow through it)."""
        importance = importance.detach().float()
        counts = (offsets[1:] - offsets[:-1]).tolist()
        if self.selection == "pooled":
            counts, offsets = [sum(counts)], offsets[[0, -1]]
        nonempty = [b for b, c in enumerate(counts) if c > 0]
        if not nonempty:
            raise ValueError("distill: every sample of the batch has an empty feature map")
        budget = _split_budget(self.num_nodes, counts)
        idx_parts, weight_parts, q_counts = [], [], []
        for b, (start, count) in enumerate(zip(offsets[:-1].tolist(), counts)):
            n_b = budget[b]
            if n_b == 0:
                q_counts.append(0)
                continue
            s = importance[start:start + count]
            # stable descending sort: equal importance -> lower row first (deterministic)
            order = torch.sort(s, descending=True, stable=True).indices[:n_b]
            idx_parts.append(order + start)
            if self.reweight:
                weight_parts.append(n_b * torch.softmax(s[order] / self.tau, dim=0))
            else:
                weight_parts.append(torch.ones(n_b, device=s.device))
            q_counts.append(n_b)
        idx = torch.cat(idx_parts)
        weights = torch.cat(weight_parts)
        query_offsets = _offsets(q_counts, idx.device)
        k = min([self.k] + [counts[b] for b in range(len(counts)) if budget[b] > 0])
        nbr, _ = knn(space[idx].contiguous(), space.contiguous(), k,
                     query_offsets=query_offsets, ref_offsets=offsets.to(idx.device))
        return Selection(idx=idx, nbr=nbr, weights=weights, query_offsets=query_offsets)

    def forward(self, teacher: Tensor, student: Tensor, importance: Tensor, offsets: Tensor,
                coords: Optional[Tensor] = None) -> Tuple[Tensor, Dict[str, float]]:
        """Loss between a teacher and a student feature map of the same nodes.

        Args:
            teacher: ``[n, C_T]`` teacher features (detached inside).
            student: ``[n, C_S]`` student features, row-aligned with ``teacher``.
            importance: ``[n]`` importance scores (points per pillar, or teacher channel max).
            offsets: ``[B + 1]`` int64 node offsets per sample.
            coords: ``[n, D]`` node coordinates, needed when ``knn_space == "coords"``.

        Returns:
            (scalar loss, stats: ``selected``, ``k``, ``effective_weighted``).
        """
        if teacher.shape[0] != student.shape[0] or importance.shape[0] != teacher.shape[0]:
            raise ValueError(
                f"distill: teacher ({teacher.shape[0]}), student ({student.shape[0]}) and importance "
                f"({importance.shape[0]}) must have one row per node; do teacher and student "
                f"voxelize the same way?")
        teacher = teacher.detach()
        if self.knn_space == "coords":
            if coords is None:
                raise ValueError("distill: knn_space='coords' needs node coordinates")
            space = coords.detach().float()
        else:
            space = teacher.float()
        sel = self.select(importance, offsets, space)
        g_t = self.teacher_graph(teacher, sel.nbr, sel.idx, self.edge_mode)
        g_s = self.student_graph(student, sel.nbr, sel.idx, self.edge_mode)
        if self.pool == "max":
            g_t, g_s = g_t.max(dim=1).values, g_s.max(dim=1).values
            sq = (g_t - g_s).pow(2) * sel.weights[:, None]
        else:
            sq = (g_t - g_s).pow(2) * sel.weights[:, None, None]
        loss = self.loss_weight * sq.mean()
        stats = {"selected": float(sel.idx.numel()), "k": float(sel.nbr.shape[1]),
                 "effective_weighted": effective_count(sel.weights)}
        return loss, stats


def _split_budget(total: int, counts: List[int]) -> List[int]:
    """Splits ``total`` evenly over the non-empty samples (remainder to the first ones), each capped
    by its own count; what a small sample cannot take is not moved elsewhere."""
    nonempty = [b for b, c in enumerate(counts) if c > 0]
    budget = [0] * len(counts)
    if not nonempty:
        return budget
    share, rest = divmod(total, len(nonempty))
    for j, b in enumerate(nonempty):
        budget[b] = min(counts[b], share + (1 if j < rest else 0))
    return budget


def _offsets(counts: List[int], device) -> Tensor:
    out = torch.zeros(len(counts) + 1, dtype=torch.int64, device=device)
    if counts:
        out[1:] = torch.cumsum(torch.tensor(counts, dtype=torch.int64, device=device), 0)
    return out


def bev_to_nodes(bev: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """``[B, C, H, W]`` BEV map -> (``[B*H*W, C]`` node features, ``[B + 1]`` offsets,
    ``[B*H*W, 2]`` float (y, x) cell coordinates), each cell a node as in the authors' SECOND setup."""
    b, c, h, w = bev.shape
    nodes = bev.permute(0, 2, 3, 1).reshape(b * h * w, c)
    offsets = torch.arange(b + 1, device=bev.device, dtype=torch.int64) * (h * w)
    ys, xs = torch.meshgrid(torch.arange(h, device=bev.device), torch.arange(w, device=bev.device),
                            indexing="ij")
    coords = torch.stack([ys, xs], dim=-1).reshape(1, h * w, 2).expand(b, -1, -1).reshape(-1, 2)
    return nodes, offsets, coords.float()
