"""Exact k nearest neighbours (squared Euclidean) per sample of a ragged batch.

PointDistiller's local distillation finds, for each selected voxel/point, its K nearest neighbours in
the teacher's feature space (C = 64..256) or in coordinates (C = 3). This op does it exactly without
ever building the query x reference distance matrix (see ``ops/csrc/knn/knn.h`` for the kernels).
"""
import operator
from typing import Optional, Tuple

import torch
from torch import Tensor

from pointdistiller.ops._loader import after_load, op


def knn(query: Tensor, ref: Tensor, k: int, query_offsets: Optional[Tensor] = None,
        ref_offsets: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """The ``k`` nearest reference rows of every query row.

    Distance: ``dist2 = sum_c (q[c] - r[c])^2`` evaluated in float32, channels in order 0..C-1,
    every subtraction, square and sum rounded on its own (no fused multiply-add). Equal rows give
    bit-identical distances, so ties are well defined; CPU and CUDA results are identical.

    Args:
        query: ``[Q, C]`` float32, finite; ``C >= 1`` (3 for coordinates, up to 512 and more for
            features).
        ref: ``[M, C]`` float32, finite, same device as ``query``.
        k: neighbours per query, ``1 <= k <=`` the reference count of every sample that has
            queries.
        query_offsets: ``[B + 1]`` int64 cumulative query counts per sample (``offsets[0] == 0``,
            non-decreasing, ``offsets[B] == Q``), same device; give both offsets or neither
            (neither = one sample).
        ref_offsets: ``[B + 1]`` int64 cumulative reference counts per sample (``[B] == M``). A
            query of sample ``b`` only searches ``ref[ref_offsets[b]:ref_offsets[b + 1]]``.

    Returns:
        ``(idx, dist2)``: ``idx`` ``[Q, k]`` int64 global row indices into ``ref``, ``dist2``
        ``[Q, k]`` float32 squared distances, ascending; equal distances are ordered by lower
        index first. Not differentiable.

    Raises:
        TypeError: a non-tensor argument, ``query``/``ref`` not float32 (float16/bfloat16 are
            rejected: cast with ``.float()``), offsets not int64, ``k`` not an int.
        ValueError: wrong shapes, mismatched channels/devices/offsets, ``k < 1``, ``k`` above a
            sample's reference count (the message names the sample), NaN or inf in the inputs.
    """
    k = _check_args(query, ref, k, query_offsets, ref_offsets)
    return op("knn")(query, ref, k, query_offsets, ref_offsets)


def _check_args(query, ref, k, query_offsets, ref_offsets) -> int:
    """Raises on bad arguments (checks that need the data run in the native op); returns k."""
    for name, t in (("query", query), ("ref", ref)):
        if not isinstance(t, Tensor):
            raise TypeError(f"knn: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype != torch.float32:
            raise TypeError(f"knn: {name} must be float32, got {t.dtype} (cast with .float())")
        if t.dim() != 2:
            shape = "[Q, C]" if name == "query" else "[M, C]"
            raise ValueError(f"knn: {name} must be {shape}, got shape {tuple(t.shape)}")
    if query.shape[1] != ref.shape[1]:
        raise ValueError(f"knn: query has {query.shape[1]} channels but ref has {ref.shape[1]}")
    if query.device != ref.device:
        raise ValueError(f"knn: query is on {query.device} but ref is on {ref.device}")
    if isinstance(k, bool) or isinstance(k, Tensor):
        raise TypeError(f"knn: k must be an int, got {type(k).__name__}")
    try:
        k = operator.index(k)
    except TypeError:
        raise TypeError(f"knn: k must be an int, got {type(k).__name__}") from None
    if k < 1:
        raise ValueError(f"knn: k must be >= 1, got {k}")
    if (query_offsets is None) != (ref_offsets is None):
        raise ValueError("knn: give both query_offsets and ref_offsets, or neither")
    for name, t in (("query_offsets", query_offsets), ("ref_offsets", ref_offsets)):
        if t is None:
            continue
        if not isinstance(t, Tensor):
            raise TypeError(f"knn: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype != torch.int64:
            raise TypeError(f"knn: {name} must be int64, got {t.dtype}")
        if t.dim() != 1 or t.shape[0] < 1:
            raise ValueError(f"knn: {name} must be a 1-D [B + 1] tensor, got shape {tuple(t.shape)}")
        if t.device != query.device:
            raise ValueError(f"knn: {name} is on {t.device} but query is on {query.device}")
    if query_offsets is not None and query_offsets.shape[0] != ref_offsets.shape[0]:
        raise ValueError(
            f"knn: query_offsets has {query_offsets.shape[0]} entries but ref_offsets has "
            f"{ref_offsets.shape[0]}; both must be [B + 1] for the same B")
    return k


@after_load("knn")
def _register_python_kernels() -> None:
    @torch.library.register_fake("pointdistiller::knn")
    def _knn_fake(query, ref, k, query_offsets=None, ref_offsets=None):
        q = query.shape[0]
        return (query.new_empty((q, k), dtype=torch.int64),
                query.new_empty((q, k), dtype=torch.float32))
