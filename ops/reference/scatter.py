"""Slow, obviously-correct reference of ``pointdistiller.ops.scatter.scatter_reduce`` (tests
only): a Python loop over the rows in input order."""
import torch


def scatter_reduce(features: torch.Tensor, index: torch.Tensor, num_segments: int,
                   reduce: str = "mean"):
    """Returns (out [S, C], aux): aux is counts [S] int64 for "mean", argmax [S, C] int64 (-1 for
    empty segments) for "max"; sums in the feature dtype in input order, as the op does."""
    n, c = features.shape
    f = features.detach().cpu()
    idx = index.cpu().tolist()
    out = torch.zeros((num_segments, c), dtype=features.dtype)
    if reduce == "mean":
        counts = torch.zeros(num_segments, dtype=torch.int64)
        for i, s in enumerate(idx):
            if s >= 0:
                out[s] += f[i]
                counts[s] += 1
        nonempty = counts > 0
        out[nonempty] /= counts[nonempty].to(features.dtype).unsqueeze(1)
        return out, counts
    arg = torch.full((num_segments, c), -1, dtype=torch.int64)
    for i, s in enumerate(idx):
        if s < 0:
            continue
        for k in range(c):
            v, best = f[i, k].item(), out[s, k].item()
            if arg[s, k] < 0 or v > best or (v != v and best == best):
                out[s, k] = f[i, k]
                arg[s, k] = i
    return out, arg
