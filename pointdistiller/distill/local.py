"""PointDistiller's local distillation (Zhang et al., CVPR 2023) over a kNN dynamic graph.

For each sample, the N most important voxels/points (by a given importance score) are selected, their
K nearest neighbours are found in the teacher's feature space (or in coordinates) with
``pointdistiller.ops.knn_search``, edge features ``cat(f[neighbour], f[centre])`` are pushed through one
trainable graph layer per network (1x1 conv + BN + ReLU, 2C -> C' = student width), and the
reweighted squared error between the teacher's and the student's graph features is the loss::

    w = N * softmax(s[idx] / tau)            (sum N, mean 1)
    L = lambda * mean_{i,k,c}( w_i * (G_T - G_S)^2 )

Two exact evaluations of the graph layer are available (``edge_mode``):

- ``"gather"``: builds the ``[N, 2C, K]`` edge tensor with ``pointdistiller.ops.graph_edges`` and
  applies the modules (conv, BN, ReLU) under autograd, as the authors' code does;
- ``"factorized"`` (default): the conv is linear before its BN, so
  ``W cat(f_j, f_i) + b = A f_j + B f_i + b``; every feature is projected once to C' channels
  (``P = f A^T``, ``c = f[idx] B^T + b``). The BN statistics follow from per-row use counts and
  per-centre neighbour sums (``embedding_bag``), and BN + ReLU + the weighted error and their exact
  gradients are evaluated in one pass over the edges (:class:`_GraphLoss`: a numba kernel on CPU,
  chunks of centres with tensor operations elsewhere), so neither the 2C-wide edge tensor nor any
  ``[N, K, C']`` tensor exists at full size.

Note on BatchNorm: both evaluations normalise over the ``[N, C', K]`` layout, as the authors' code
does. PyTorch's CPU kernel for 2-D ``[N*K, C']`` inputs accumulates the statistics in float32
(relative errors near 1e-3 at 10^6 rows), so that layout is avoided.

Both keep the parameters in the same ``nn.Conv1d``/``nn.BatchNorm1d`` modules (and update the BN
running statistics the same way), so checkpoints are interchangeable.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pointdistiller.ops.graph_edges import gather_edges
from pointdistiller.ops.knn_search import knn

# Elements (centres x K x C') per chunk of the fused pass: small enough to stay in cache on CPU,
# large enough to keep kernel launches few on CUDA.
_CHUNK_ELEMENTS = {"cpu": 1 << 17, "cuda": 1 << 24}
# On CPU the fused pass runs as one numba kernel; False selects the chunked PyTorch pass there too
# (the one every other device uses), e.g. to test it.
CPU_KERNEL = True


GRAPH_INITS = ("torch", "authors")


class GraphLayer(nn.Module):
    """One dynamic-graph layer: 1x1 conv (2C -> C_out) + BatchNorm + ReLU over edge features.

    Args:
        in_channels: C, the width of the node features (the edge is 2C wide).
        out_channels: C_out.
        init: ``"torch"``: a conv with bias and PyTorch's default initialisation; ``"authors"``:
            the authors' layer, a bias-free conv (BatchNorm follows) with Kaiming-normal fan-out
            initialisation for ReLU (mmcv's ``ConvModule`` default).
    """

    def __init__(self, in_channels: int, out_channels: int, init: str = "torch"):
        super().__init__()
        if init not in GRAPH_INITS:
            raise ValueError(f"distill: graph_init must be one of {GRAPH_INITS}, got {init!r}")
        self.in_channels = in_channels
        self.conv = nn.Conv1d(2 * in_channels, out_channels, 1, bias=init == "torch")
        if init == "authors":
            nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        self.bn = nn.BatchNorm1d(out_channels)

    def project(self, features: Tensor, centre: Tensor) -> Tuple[Tensor, Tensor]:
        """The factorized conv: ``(P [n, C_out], c [Q, C_out])`` with
        ``conv(cat(f_j, f_i)) = P[j] + c[i]`` (``P = f A^T``, ``c = f[centre] B^T + b``)."""
        self._check(features)
        c = self.in_channels
        weight = self.conv.weight[:, :, 0]                       # [C_out, 2C]
        proj_nbr = features @ weight[:, :c].t()
        if self.conv.bias is None:
            proj_ctr = features[centre] @ weight[:, c:].t()
        else:
            proj_ctr = torch.addmm(self.conv.bias, features[centre], weight[:, c:].t())
        return proj_nbr, proj_ctr

    def forward(self, features: Tensor, nbr: Tensor, centre: Tensor, edge_mode: str = "factorized") -> Tensor:
        """Graph features of the selected nodes (plain autograd; for the loss,
        :class:`LocalDistillation` uses a fused evaluation in factorized mode).

        Args:
            features: ``[n, C]`` node features.
            nbr: ``[Q, K]`` int64 neighbour rows of ``features``.
            centre: ``[Q]`` int64 centre rows of ``features``.
            edge_mode: ``"factorized"`` or ``"gather"`` (identical values, see module doc).

        Returns:
            ``[Q, K, C_out]`` float (a transposed view of a ``[Q, C_out, K]`` tensor).
        """
        self._check(features)
        if edge_mode == "gather":
            edges = gather_edges(features, nbr, centre)          # [Q, 2C, K]
            out = F.conv1d(edges, self.conv.weight, self.conv.bias)  # [Q, C_out, K]
        elif edge_mode == "factorized":
            proj_nbr, proj_ctr = self.project(features, centre)
            out = (proj_nbr[nbr] + proj_ctr[:, None, :]).transpose(1, 2)   # [Q, C_out, K]
        else:
            raise ValueError(f"edge_mode must be 'factorized' or 'gather', got {edge_mode!r}")
        # BN over the [Q, C_out, K] layout (see the module doc), not over [Q*K, C_out]
        return F.relu(self.bn(out)).transpose(1, 2)

    def _check(self, features: Tensor) -> None:
        if features.dim() != 2 or features.shape[1] != self.in_channels:
            raise ValueError(f"graph layer expects [n, {self.in_channels}] features, "
                             f"got shape {tuple(features.shape)}")


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
        graph_init: ``"torch"`` or ``"authors"`` (see :class:`GraphLayer`).
        teacher_graph: ``"trained"`` (the paper: the teacher's graph layer learns with the
            student's) or ``"frozen"`` (it keeps its initial weights, so the student matches a
            fixed local embedding of the teacher's features). A trained pair has a degenerate
            minimum: with both BatchNorm scales at 0 and equal shifts the loss is 0 for any
            features, and AdamW's weight decay pulls the scales that way.
    """

    def __init__(self, teacher_channels: int, student_channels: int, num_nodes: int = 6000,
                 k: int = 128, tau: float = 0.01, loss_weight: float = 2.0, pool: str = "none",
                 reweight: bool = True, knn_space: str = "teacher", selection: str = "per_sample",
                 edge_mode: str = "factorized", graph_init: str = "torch",
                 teacher_graph: str = "trained"):
        super().__init__()
        for name, value, allowed in (("pool", pool, ("none", "max")),
                                     ("teacher_graph", teacher_graph, ("trained", "frozen")),
                                     ("knn_space", knn_space, ("teacher", "coords")),
                                     ("selection", selection, ("per_sample", "pooled")),
                                     ("edge_mode", edge_mode, ("factorized", "gather"))):
            if value not in allowed:
                raise ValueError(f"distill: {name} must be one of {allowed}, got {value!r}")
        if num_nodes < 1 or k < 1 or not tau > 0:
            raise ValueError(f"distill: need num_nodes >= 1, k >= 1, tau > 0 "
                             f"(got {num_nodes}, {k}, {tau})")
        self.num_nodes, self.k, self.tau, self.loss_weight = num_nodes, k, tau, loss_weight
        self.pool, self.reweight, self.knn_space = pool, reweight, knn_space
        self.selection, self.edge_mode = selection, edge_mode
        self.teacher_graph = GraphLayer(teacher_channels, student_channels, graph_init)
        self.student_graph = GraphLayer(student_channels, student_channels, graph_init)
        self.teacher_graph_mode = teacher_graph
        if teacher_graph == "frozen":
            self.teacher_graph.requires_grad_(False)

    # ------------------------------------------------------------------------------------------
    def select(self, importance: Tensor, offsets: Tensor, space: Tensor) -> Selection:
        """Top-N selection, kNN graph and weights (no gradients flow through it).

        Args:
            importance: ``[n]`` scores; offsets: ``[B + 1]`` int64; space: ``[n, D]`` float32 rows
                searched by the kNN (teacher features or coordinates).
        """
        importance = importance.detach().float()
        offsets = offsets.to(device=importance.device, dtype=torch.int64)
        counts = (offsets[1:] - offsets[:-1]).tolist()
        if self.selection == "pooled":
            counts, offsets = [sum(counts)], offsets[[0, -1]]
        if not any(c > 0 for c in counts):
            raise ValueError("distill: every sample of the batch has an empty feature map")
        budget = _split_budget(self.num_nodes, counts)
        idx_parts, weight_parts = [], []
        for start, count, n_b in zip(offsets[:-1].tolist(), counts, budget):
            if n_b == 0:
                continue
            s = importance[start:start + count]
            # stable descending sort: equal importance -> lower row first (deterministic)
            order = torch.sort(s, descending=True, stable=True).indices[:n_b]
            idx_parts.append(order + start)
            if self.reweight:
                weight_parts.append(n_b * torch.softmax(s[order] / self.tau, dim=0))
            else:
                weight_parts.append(torch.ones(n_b, device=s.device))
        idx = torch.cat(idx_parts)
        weights = torch.cat(weight_parts)
        query_offsets = _offsets(budget, idx.device)
        k = min([self.k] + [c for c, n_b in zip(counts, budget) if n_b > 0])
        nbr, _ = knn(space[idx].contiguous(), space.contiguous(), k,
                     query_offsets=query_offsets, ref_offsets=offsets)
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
            (scalar float32 loss, stats: ``selected``, ``k``, ``effective_weighted``).
        """
        if teacher.dim() != 2 or student.dim() != 2 or importance.dim() != 1:
            raise ValueError(f"distill: expected teacher [n, C_T], student [n, C_S], importance [n]; "
                             f"got {tuple(teacher.shape)}, {tuple(student.shape)}, "
                             f"{tuple(importance.shape)}")
        if teacher.shape[0] != student.shape[0] or importance.shape[0] != teacher.shape[0]:
            raise ValueError(
                f"distill: teacher ({teacher.shape[0]}), student ({student.shape[0]}) and importance "
                f"({importance.shape[0]}) must have one row per node; do teacher and student "
                f"voxelize the same way?")
        if offsets.dim() != 1 or offsets.numel() < 2 or int(offsets[-1]) != teacher.shape[0]:
            raise ValueError(f"distill: offsets must be [B + 1] ending at the node count "
                             f"{teacher.shape[0]}, got {offsets.tolist()}")
        teacher = teacher.detach().float()
        student = student.float()
        if self.knn_space == "coords":
            if coords is None:
                raise ValueError("distill: knn_space='coords' needs node coordinates")
            space = coords.detach().float()
        else:
            space = teacher
        sel = self.select(importance, offsets, space)
        if self.edge_mode == "gather":
            loss = self._loss_autograd(teacher, student, sel)
        else:
            loss = self._loss_fused(teacher, student, sel)
        stats = {"selected": float(sel.idx.numel()), "k": float(sel.nbr.shape[1]),
                 "effective_weighted": effective_count(sel.weights)}
        return loss, stats

    def _loss_autograd(self, teacher: Tensor, student: Tensor, sel: Selection) -> Tensor:
        """The loss from the explicit edge tensors and the modules (the reference evaluation)."""
        g_t = self.teacher_graph(teacher, sel.nbr, sel.idx, "gather")
        g_s = self.student_graph(student, sel.nbr, sel.idx, "gather")
        if self.pool == "max":
            g_t, g_s = g_t.max(dim=1).values, g_s.max(dim=1).values
            sq = (g_t - g_s).pow(2) * sel.weights[:, None]
        else:
            sq = (g_t - g_s).pow(2) * sel.weights[:, None, None]
        return self.loss_weight * sq.mean()

    def _loss_fused(self, teacher: Tensor, student: Tensor, sel: Selection) -> Tensor:
        """The same loss through the factorized projections and :class:`_GraphLoss`."""
        with torch.autocast(teacher.device.type, enabled=False):
            q, k = sel.nbr.shape
            layers = (self.teacher_graph, self.student_graph)
            p_t, c_t = self.teacher_graph.project(teacher, sel.idx)
            p_s, c_s = self.student_graph.project(student, sel.idx)
            # teacher and student side by side: [n, 2C'] and [Q, 2C']
            p, c = torch.cat([p_t, p_s], dim=1), torch.cat([c_t, c_s], dim=1)
            width = p_t.shape[1]
            count = torch.bincount(sel.nbr.reshape(-1), minlength=p.shape[0]).to(p.dtype)[:, None]
            nbr_sum = F.embedding_bag(sel.nbr, p.detach(), mode="sum")      # [Q, 2C']
            halves = (slice(0, width), slice(width, 2 * width))
            stats = [_bn_statistics(layer.bn, p.detach()[:, h], c.detach()[:, h], count,
                                    nbr_sum[:, h], k) for layer, h in zip(layers, halves)]
            norm = _Norm(torch.cat([s[0] for s in stats]), torch.cat([s[1] for s in stats]),
                         tuple(s[2] for s in stats))
            scale = self.loss_weight / (q * k * width if self.pool == "none" else q * width)
            graph = _Graph(nbr=sel.nbr, weights=sel.weights * scale, count=count,
                           nbr_sum=nbr_sum, pool=self.pool,
                           chunk=_chunk_rows(q, k * width, p.device.type),
                           need_grad=torch.is_grad_enabled(),
                           backend="numba" if p.device.type == "cpu" and CPU_KERNEL else "torch")
            gamma = torch.cat([layer.bn.weight for layer in layers])
            beta = torch.cat([layer.bn.bias for layer in layers])
            return _GraphLoss.apply(p, c, gamma, beta, norm, graph)


# ---------------------------------------------------------------------------------------------
# Fused evaluation of BN + ReLU + weighted squared error over the factorized edges
# ---------------------------------------------------------------------------------------------
@dataclass
class _Norm:
    """BN normalisation ``xhat = (x - mean) * invstd``; ``batch`` says whether (mean, invstd) are
    this batch's statistics (then they depend on x in the backward): one flag per graph layer when
    the teacher's and the student's ``[2C']`` vectors are concatenated."""

    mean: Tensor
    invstd: Tensor
    batch: Tuple[bool, ...]


@dataclass
class _Graph:
    """Everything of the kNN graph the fused pass needs (no gradients flow through it)."""

    nbr: Tensor         # [Q, K] int64
    weights: Tensor     # [Q] the reweighting factors times lambda / (number of averaged elements)
    count: Tensor       # [n, 1] float, uses of each row as a neighbour
    nbr_sum: Tensor     # [Q, 2C'] sum over the K neighbours of the (P_T | P_S) rows
    pool: str
    chunk: int          # centres per chunk of the PyTorch pass
    need_grad: bool
    backend: str        # "numba" (CPU kernel) or "torch" (chunked tensor operations)


def _chunk_rows(q: int, row_elements: int, device_type: str) -> int:
    return max(1, min(q, _CHUNK_ELEMENTS.get(device_type, 1 << 24) // max(row_elements, 1)))


def _bn_statistics(bn: nn.BatchNorm1d, p: Tensor, c: Tensor, count: Tensor, nbr_sum: Tensor,
                   k: int) -> Tuple[Tensor, Tensor, bool]:
    """``(mean, invstd, from this batch)``: the BN statistics of the edges ``x[q, j] = p[nbr[q, j]] + c[q]`` without building them, and the
    running-statistics update ``nn.BatchNorm1d`` would make (or its running statistics in eval).

    With centred tables (``c' = c - mean(c)``, ``p' = p - (mu - mean(c))``, so that ``x - mu =
    p'[nbr] + c'``): ``var = (sum_m count_m p'_m^2 + 2 sum_q c'_q . sum_j p'[nbr[q, j]]
    + K sum_q c'_q^2) / (Q K)``, each term reduced in float32 and combined in float64.
    """
    if not bn.training and bn.running_mean is not None:
        return bn.running_mean.float(), torch.rsqrt(bn.running_var.float() + bn.eps), False
    q = c.shape[0]
    total = q * k
    mean_c = c.double().mean(dim=0)
    mu = ((count * p).sum(dim=0).double() + k * c.sum(dim=0).double()) / total
    shift = (mu - mean_c).float()
    c_centred = c - mean_c.float()
    p_centred = p - shift
    sum_nbr = nbr_sum - k * shift                                         # [Q, C']
    var = ((count * p_centred.square()).sum(dim=0).double()
           + 2 * (c_centred * sum_nbr).sum(dim=0).double()
           + k * c_centred.square().sum(dim=0).double()) / total
    var = var.clamp_min(0)
    if bn.training and bn.running_mean is not None:
        with torch.no_grad():
            if bn.num_batches_tracked is not None:
                bn.num_batches_tracked.add_(1)
            factor = (1.0 / float(bn.num_batches_tracked) if bn.momentum is None
                      else bn.momentum)
            unbiased = var * total / max(total - 1, 1)
            bn.running_mean.mul_(1 - factor).add_(mu.to(bn.running_mean.dtype), alpha=factor)
            bn.running_var.mul_(1 - factor).add_(unbiased.to(bn.running_var.dtype), alpha=factor)
    return mu.float(), torch.rsqrt(var.float() + bn.eps), True


class _GraphLoss(torch.autograd.Function):
    """``sum_q w_q sum_{j,c} (relu(bn_T(x_T)) - relu(bn_S(x_S)))^2`` (or over the max-pooled K) for
    the factorized edges ``x[q, j] = P[nbr[q, j]] + c[q]``, with its gradients. Teacher and
    student sit side by side: ``P = (P_T | P_S)`` is ``[n, 2C']``, ``c`` ``[Q, 2C']``, BN's
    ``gamma``/``beta`` ``[2C']``, so both share every gather, scatter and elementwise call.

    One pass over chunks of centres computes the loss and, when gradients are needed, the per-edge
    BN-output gradients ``dz`` reduced three ways: scatter-added onto the neighbour rows, summed
    over each centre's K edges, and summed per channel (with and without ``xhat``). The BN backward
    ``dx = gamma invstd (dz - mean(dz) - xhat mean(dz xhat))`` is linear in those sums (the sum of
    ``xhat`` over a row's uses needs the scatter of the centres' ``c_hat``, done in the same
    ``index_add_``), so the gradients of P and c follow on ``[n, 2C']``/``[Q, 2C']`` tables after
    the pass; backward only scales them by the incoming gradient.
    """

    @staticmethod
    def forward(ctx, p, c, gamma, beta, norm: _Norm, graph: _Graph):
        q, k = graph.nbr.shape
        both = p.shape[1]
        width = both // 2
        need_grad = graph.need_grad
        # xhat = p_hat[nbr] + c_hat: BN's normalisation folded into the tables
        p_hat = p * norm.invstd
        c_hat = (c - norm.mean) * norm.invstd
        batch_stats = any(norm.batch)
        scatter = k_dz = ch_dzx = None
        if need_grad:
            # [dz | c_hat] summed over each row's uses (c_hat only with batch statistics)
            scatter = p.new_zeros(p.shape[0], 2 * both if batch_stats else both)
            k_dz = p.new_zeros(q, both)                                  # sum_j dz per centre
            ch_dzx = p.new_zeros(both, dtype=torch.float64)              # sum dz xhat per channel
        if graph.backend == "numba":
            loss = _pass_numba(p_hat, c_hat, gamma, beta, graph, scatter, k_dz, ch_dzx, batch_stats)
        else:
            loss = _pass_torch(p_hat, c_hat, gamma, beta, graph, scatter, k_dz, ch_dzx, batch_stats)
        ctx.need_grad = need_grad
        if need_grad:
            d_beta = k_dz.sum(dim=0, dtype=torch.float64).float()
            d_gamma = ch_dzx.float()
            d_p, d_c = scatter[:, :both], k_dz
            if batch_stats:
                # dx = gamma invstd (dz - mean(dz) - xhat mean(dz xhat)), summed per row/centre;
                # xhat summed over a row's uses = count p_hat + the using centres' c_hat
                flags = torch.tensor([b for b in norm.batch for _ in range(width)], device=p.device)
                m_dz = torch.where(flags, d_beta / (q * k), 0)
                m_dzx = torch.where(flags, d_gamma / (q * k), 0)
                xh_rows = scatter[:, both:].addcmul_(graph.count, p_hat)
                d_p.addcmul_(graph.count, m_dz, value=-1).addcmul_(xh_rows, m_dzx, value=-1)
                xh_k = graph.nbr_sum * norm.invstd + k * c_hat
                d_c = d_c - k * m_dz - xh_k * m_dzx
            sign = torch.cat([gamma.new_ones(width), -gamma.new_ones(width)])  # the student's
            gain = sign * gamma * norm.invstd                                  # dz is -g, not g
            ctx.save_for_backward(d_p.mul_(gain), d_c.mul_(gain), sign * d_gamma, sign * d_beta)
        return loss

    @staticmethod
    def backward(ctx, grad_out):
        if not ctx.need_grad:
            raise RuntimeError("distill: the loss was computed with gradients disabled")
        d_p, d_c, d_gamma, d_beta = (grad_out * t for t in ctx.saved_tensors)
        return d_p, d_c, d_gamma, d_beta, None, None


def _pass_numba(p_hat, c_hat, gamma, beta, graph: _Graph, scatter, k_dz, ch_dzx,
                with_c: bool) -> Tensor:
    """The pass of :class:`_GraphLoss` by the CPU kernels of :mod:`._fused_cpu`."""
    from pointdistiller.distill import _fused_cpu

    if graph.need_grad:
        outs = (scatter.numpy(), k_dz.numpy(), ch_dzx.numpy())
    else:
        outs = (np.zeros((1, 1), np.float32), np.zeros((1, 1), np.float32), np.zeros(1))
    tables = (p_hat.numpy(), c_hat.numpy(), gamma.detach().numpy(), beta.detach().numpy())
    weights = graph.weights.detach().float().contiguous().numpy()
    nbr = graph.nbr.contiguous().numpy()
    if graph.pool == "max":
        value = _fused_cpu.graph_pass_max(*tables, nbr, weights, graph.need_grad, with_c, *outs)
    else:
        starts, centres = _fused_cpu.edges_by_row(nbr, p_hat.shape[0])
        value = _fused_cpu.graph_pass_rows(*tables, starts, centres, weights, graph.need_grad,
                                           with_c, *outs)
    return p_hat.new_tensor(value)


def _pass_torch(p_hat, c_hat, gamma, beta, graph: _Graph, scatter, k_dz, ch_dzx,
                with_c: bool) -> Tensor:
    """The pass of :class:`_GraphLoss` in chunks of centres with tensor operations (any device)."""
    nbr, w, pool, need_grad = graph.nbr, graph.weights, graph.pool, graph.need_grad
    q, k = nbr.shape
    both = p_hat.shape[1]
    width = both // 2
    loss = p_hat.new_zeros(())
    if need_grad:
        cols = scatter.shape[1]
        buf = p_hat.new_empty(min(graph.chunk, q) * k, cols)   # reused chunk rows [dz | c_hat]
    for start in range(0, q, graph.chunk):
        end = min(start + graph.chunk, q)
        rows = nbr[start:end].reshape(-1)
        xh = p_hat.index_select(0, rows).view(end - start, k, both)
        xh += c_hat[start:end, None, :]
        y = torch.addcmul(beta, xh, gamma).relu_()
        wq = w[start:end]
        if pool == "max":
            y_max, arg = y.max(dim=1)                                    # [q, 2C']
            diff = y_max[:, :width] - y_max[:, width:]
            loss += (diff * diff).sum(dim=1) @ wq
        else:
            diff = y[..., :width] - y[..., width:]                       # [q, K, C']
            loss += (diff * diff).sum(dim=(1, 2)) @ wq
        if not need_grad:
            continue
        g = diff * (2 * wq).view(-1, *([1] * (diff.dim() - 1)))            # dL/dy_T = -dL/dy_S
        view = buf[:rows.numel()].view(end - start, k, cols)
        dz = view[..., :both]
        if pool == "max":
            g_max = torch.ops.aten.threshold_backward(torch.cat([g, g], dim=1), y_max, 0)
            dz.zero_().scatter_(1, arg[:, None, :], g_max[:, None, :])
        else:
            torch.ops.aten.threshold_backward(g, y[..., :width], 0, grad_input=dz[..., :width])
            torch.ops.aten.threshold_backward(g, y[..., width:], 0, grad_input=dz[..., width:])
        if with_c:
            view[..., both:] = c_hat[start:end, None, :]
        scatter.index_add_(0, rows, buf[:rows.numel()])
        torch.sum(dz, dim=1, out=k_dz[start:end])
        ch_dzx += (dz * xh).sum(dim=(0, 1))
    return loss


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
