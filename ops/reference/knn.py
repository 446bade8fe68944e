"""Pure-PyTorch references of ``pointdistiller.ops.knn_search`` (tests only).

``knn_reference`` evaluates every query-reference distance exactly as the op's contract defines it
(float32, channels summed in order 0..C-1, each subtraction, square and sum rounded separately) and
sorts stably, so its indices and distances must equal the op's bit for bit, ties included.
``knn_reference_float64`` gives the same neighbours' distances in float64 for a tolerance check of
the contract itself.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor


def contract_dist2(query: Tensor, ref: Tensor) -> Tensor:
    """``[Q, M]`` float32 distances of the contract: ``acc = acc + (q_c - r_c) * (q_c - r_c)``
    for c = 0..C-1, every operation a separate (rounded) float32 tensor op."""
    acc = torch.zeros(query.shape[0], ref.shape[0], dtype=torch.float32)
    for c in range(query.shape[1]):
        t = query[:, c, None] - ref[None, :, c]
        acc = acc + t * t
    return acc


def _ranges(n_query: int, n_ref: int, query_offsets: Optional[Tensor], ref_offsets: Optional[Tensor]):
    if query_offsets is None:
        return [(0, n_query, 0, n_ref)]
    qo, ro = query_offsets.tolist(), ref_offsets.tolist()
    return [(qo[b], qo[b + 1], ro[b], ro[b + 1]) for b in range(len(qo) - 1)]


def knn_reference(query: Tensor, ref: Tensor, k: int, query_offsets: Optional[Tensor] = None,
                  ref_offsets: Optional[Tensor] = None, chunk: int = 256) -> Tuple[Tensor, Tensor]:
    """``(idx [Q, k] int64, dist2 [Q, k] float32)`` by brute force over the contract distance,
    ascending by (distance, index). Same arguments as ``pointdistiller.ops.knn_search.knn`` (CPU)."""
    query, ref = query.detach().cpu().float(), ref.detach().cpu().float()
    idx = torch.empty(query.shape[0], k, dtype=torch.int64)
    dist = torch.empty(query.shape[0], k, dtype=torch.float32)
    for q0, q1, r0, r1 in _ranges(query.shape[0], ref.shape[0], query_offsets, ref_offsets):
        for s in range(q0, q1, chunk):
            e = min(s + chunk, q1)
            d = contract_dist2(query[s:e], ref[r0:r1])
            # stable sort: equal distances keep ascending index order
            order = torch.sort(d, dim=1, stable=True)
            idx[s:e] = order.indices[:, :k] + r0
            dist[s:e] = order.values[:, :k]
    return idx, dist


def knn_reference_float64(query: Tensor, ref: Tensor, idx: Tensor) -> Tensor:
    """``[Q, k]`` float64 squared distances between every query and its listed neighbours."""
    q = query.detach().cpu().double()
    r = ref.detach().cpu().double()[idx.cpu()]
    return ((q[:, None, :] - r) ** 2).sum(-1)
