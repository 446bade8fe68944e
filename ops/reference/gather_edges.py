"""Pure-PyTorch reference of ``pointdistiller.ops.graph_edges`` (tests only)."""
from torch import Tensor
import torch


def gather_edges_reference(features: Tensor, idx: Tensor, centre: Tensor) -> Tensor:
    """``[Q, 2C, k]``: ``cat(features[idx], features[centre] repeated over k)`` along channels;
    differentiable through PyTorch's own indexing."""
    q, k = idx.shape
    nbr = features[idx]                                   # [Q, k, C]
    ctr = features[centre][:, None, :].expand(q, k, -1)   # [Q, k, C]
    return torch.cat([nbr, ctr], dim=2).permute(0, 2, 1).contiguous()
