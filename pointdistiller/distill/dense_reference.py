"""The authors' dense formulation of local distillation, kept as the yardstick for tests and
``benchmarks/bm_distill.py`` (never used in training).

It pools the batch, takes top-N by importance, computes all-pairs squared distances
``-2ab + a^2 + b^2`` between the N selected and all n nodes (an ``N x n`` matrix), takes top-K,
builds the explicit ``[N, 2C, K]`` edge tensors and applies the graph layers. With
``selection="pooled"`` and ``edge_mode="gather"``, :class:`LocalDistillation` computes the same loss.
"""
import torch
import torch.nn.functional as F
from torch import Tensor

from pointdistiller.distill.local import LocalDistillation


def dense_local_distillation(module: LocalDistillation, teacher: Tensor, student: Tensor,
                             importance: Tensor) -> Tensor:
    """Loss of ``module``'s graph layers computed the authors' way over the pooled batch.

    Args:
        module: supplies N, K, tau, lambda, pooling, reweighting and the two graph layers.
        teacher: ``[n, C_T]``; student: ``[n, C_S]``; importance: ``[n]``.
    """
    teacher = teacher.detach()
    n_sel = min(module.num_nodes, teacher.shape[0])
    scores, idx = torch.topk(importance.float(), n_sel)
    centre = teacher[idx]
    dist = (-2 * centre @ teacher.t() + (centre * centre).sum(1, keepdim=True)
            + (teacher * teacher).sum(1)[None, :])                     # [N, n]
    k = min(module.k, teacher.shape[0])
    nbr = torch.topk(dist, k, dim=1, largest=False).indices            # [N, K]

    def graph(layer, feats):
        edges = torch.cat([feats[nbr], feats[idx][:, None, :].expand(-1, k, -1)], dim=2)
        edges = edges.permute(0, 2, 1)                                   # [N, 2C, K]
        return F.relu(layer.bn(layer.conv(edges)))                       # [N, C', K]

    g_t, g_s = graph(module.teacher_graph, teacher), graph(module.student_graph, student)
    if module.reweight:
        w = n_sel * torch.softmax(scores / module.tau, dim=0)
    else:
        w = torch.ones_like(scores)
    if module.pool == "max":
        g_t, g_s = g_t.max(dim=2).values, g_s.max(dim=2).values
        return module.loss_weight * ((g_t - g_s).pow(2) * w[:, None]).mean()
    return module.loss_weight * ((g_t - g_s).pow(2) * w[:, None, None]).mean()
