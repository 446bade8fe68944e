"""Segment reductions of point features into voxels, for dynamic voxel feature encoders: the
points of voxel ``v`` are the rows ``i`` with ``index[i] == v`` (e.g. ``point_to_voxel`` of
:func:`pointdistiller.ops.voxelization.voxelize_dynamic`).

Deterministic on CPU and CUDA (same bits, every run): sums run in input order, ties of ``max``
go to the lowest point index.
"""
import torch

from pointdistiller.ops._loader import after_load, op

__all__ = ["scatter_reduce"]

REDUCTIONS = ("mean", "max")


def scatter_reduce(features: torch.Tensor, index: torch.Tensor, num_segments: int,
                   reduce: str = "mean") -> torch.Tensor:
    """Mean or max of the rows of ``features`` per segment, differentiable w.r.t. ``features``.

    Args:
        features: [N, C] float32 or float64, CPU or CUDA.
        index: [N] int64 on the same device, segment of each row in [0, num_segments), or -1 to
            skip the row.
        num_segments: number of output rows S >= 0.
        reduce: "mean" (sum in input order divided by the count) or "max" (per channel; the
            gradient goes to the first row holding the maximum; NaN propagates).

    Returns:
        [S, C] tensor of the dtype of ``features``; rows of empty segments are 0 (gradient 0).

    Raises:
        TypeError / ValueError naming the argument (dtype, shape, device, index out of range).
    """
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"features must be a torch.Tensor, got {type(features).__name__}")
    if not isinstance(index, torch.Tensor):
        raise TypeError(f"index must be a torch.Tensor, got {type(index).__name__}")
    if features.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"features must be float32 or float64, got {features.dtype}")
    if features.dim() != 2:
        raise ValueError(f"features must have shape [N, C], got {list(features.shape)}")
    if index.dtype != torch.int64:
        raise TypeError(f"index must be int64, got {index.dtype}")
    if index.dim() != 1 or index.shape[0] != features.shape[0]:
        raise ValueError(f"index must have shape [N] = [{features.shape[0]}], got "
                         f"{list(index.shape)}")
    if index.device != features.device:
        raise ValueError(f"index must be on the device of features ({features.device}), got "
                         f"{index.device}")
    if isinstance(num_segments, bool) or not isinstance(num_segments, int):
        raise TypeError(f"num_segments must be an int, got {type(num_segments).__name__}")
    if num_segments < 0:
        raise ValueError(f"num_segments must be >= 0, got {num_segments}")
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    out, _ = op("scatter_reduce")(features, index, num_segments, reduce)
    return out


def _backward(ctx, grad_out, grad_aux):
    index, aux = ctx.saved_tensors
    valid = (index >= 0).unsqueeze(1)
    safe_index = index.clamp(min=0)
    if ctx.reduce == "mean":
        scale = aux.clamp(min=1).to(grad_out.dtype).unsqueeze(1)
        grad = (grad_out / scale).index_select(0, safe_index) * valid
    else:
        # Each row is the arg-max of at most one segment per channel; empty segments (arg -1)
        # add zeros to row 0.
        src = torch.where(aux >= 0, grad_out, torch.zeros_like(grad_out))
        grad = grad_out.new_zeros((index.shape[0], grad_out.shape[1]))
        grad = grad.scatter_add(0, aux.clamp(min=0), src)
    return grad, None, None, None


def _setup_context(ctx, inputs, output):
    _, index, _, reduce = inputs
    ctx.reduce = reduce
    ctx.save_for_backward(index, output[1])
    ctx.set_materialize_grads(True)


@after_load("scatter_reduce")
def _register_kernels() -> None:
    @torch.library.register_fake("pointdistiller::scatter_reduce")
    def _scatter_reduce_fake(features, index, num_segments, reduce):
        out = features.new_empty((num_segments, features.shape[1]))
        if reduce == "mean":
            return out, index.new_empty((num_segments,))
        return out, index.new_empty((num_segments, features.shape[1]))

    torch.library.register_autograd("pointdistiller::scatter_reduce", _backward,
                                    setup_context=_setup_context)
