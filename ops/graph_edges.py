"""Edge features of a kNN graph: ``cat(features[neighbour], features[centre])``, with autograd.

This is the ``[Q, 2C, K]`` edge tensor that PointDistiller's graph layer (a 1x1 convolution over the
channel axis) consumes. Both directions are native ops (``ops/csrc/gather_edges``); the backward
scatter-adds into the feature rows (deterministic on CPU, atomic on CUDA).
"""
import torch
from torch import Tensor

from pointdistiller.ops._loader import after_load, op

_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def gather_edges(features: Tensor, idx: Tensor, centre: Tensor) -> Tensor:
    """Gathers neighbour and centre features into one edge tensor.

    ``out[q, c, j] = features[idx[q, j], c]`` and ``out[q, C + c, j] = features[centre[q], c]``
    for ``c < C``: the neighbour's channels first, then the centre's, repeated over ``j``.

    Args:
        features: ``[M, C]`` float32, float64, float16 or bfloat16 node features.
        idx: ``[Q, k]`` int64 neighbour rows of ``features`` (e.g. from :func:`knn`), in
            ``[0, M)``.
        centre: ``[Q]`` int64 centre row of every query, in ``[0, M)``.

    Returns:
        ``[Q, 2C, k]`` tensor of ``features``' dtype, contiguous. Differentiable with respect to
        ``features``: the gradient ``[M, C]`` sums every use of a row (accumulated in float32 for
        float16/bfloat16); on CPU the sum order is fixed, so it is deterministic.

    Raises:
        TypeError: non-tensor arguments, unsupported feature dtype, indices not int64.
        ValueError: wrong shapes, mismatched devices, or a row index outside ``[0, M)``.
    """
    for name, t in (("features", features), ("idx", idx), ("centre", centre)):
        if not isinstance(t, Tensor):
            raise TypeError(f"gather_edges: {name} must be a torch.Tensor, got {type(t).__name__}")
    if features.dtype not in _DTYPES:
        raise TypeError(
            f"gather_edges: features must be float32, float64, float16 or bfloat16, got "
            f"{features.dtype}")
    for name, t in (("idx", idx), ("centre", centre)):
        if t.dtype != torch.int64:
            raise TypeError(f"gather_edges: {name} must be int64, got {t.dtype}")
        if t.device != features.device:
            raise ValueError(
                f"gather_edges: {name} is on {t.device} but features are on {features.device}")
    if features.dim() != 2:
        raise ValueError(f"gather_edges: features must be [M, C], got shape {tuple(features.shape)}")
    if idx.dim() != 2:
        raise ValueError(f"gather_edges: idx must be [Q, k], got shape {tuple(idx.shape)}")
    if centre.dim() != 1 or centre.shape[0] != idx.shape[0]:
        raise ValueError(
            f"gather_edges: centre must be [Q] with Q = idx.shape[0] = {idx.shape[0]}, got shape "
            f"{tuple(centre.shape)}")
    return op("gather_edges")(features, idx, centre)


@after_load("gather_edges")
def _register_forward() -> None:
    @torch.library.register_fake("pointdistiller::gather_edges")
    def _fake(features, idx, centre):
        return features.new_empty((idx.shape[0], 2 * features.shape[1], idx.shape[1]))

    def setup_context(ctx, inputs, output):
        features, idx, centre = inputs
        ctx.save_for_backward(idx, centre)
        ctx.num_rows = features.shape[0]

    def backward(ctx, grad):
        idx, centre = ctx.saved_tensors
        grad_features = None
        if ctx.needs_input_grad[0]:
            grad_features = torch.ops.pointdistiller.gather_edges_backward(
                grad.contiguous(), idx, centre, ctx.num_rows)
        return grad_features, None, None

    torch.library.register_autograd(
        "pointdistiller::gather_edges", backward, setup_context=setup_context)


@after_load("gather_edges_backward")
def _register_backward() -> None:
    @torch.library.register_fake("pointdistiller::gather_edges_backward")
    def _fake(grad, idx, centre, num_rows):
        return grad.new_empty((num_rows, grad.shape[1] // 2))

    def setup_context(ctx, inputs, output):
        _, idx, centre, _ = inputs
        ctx.save_for_backward(idx, centre)

    def backward(ctx, grad_grad_features):
        # The backward is linear in grad; its adjoint is the forward gather.
        idx, centre = ctx.saved_tensors
        grad_grad = None
        if ctx.needs_input_grad[0]:
            grad_grad = torch.ops.pointdistiller.gather_edges(
                grad_grad_features.contiguous(), idx, centre)
        return grad_grad, None, None, None

    torch.library.register_autograd(
        "pointdistiller::gather_edges_backward", backward, setup_context=setup_context)
