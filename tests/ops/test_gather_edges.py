"""pointdistiller.ops.graph_edges: values and gradients against the reference, gradcheck, determinism,
errors, fake kernels, CUDA == CPU."""
import pytest
import torch

from pointdistiller.ops.graph_edges import gather_edges
from pointdistiller.ops.reference.gather_edges import gather_edges_reference

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def _graph(m=40, c=6, q=13, k=5, dtype=torch.float32, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(m, c, generator=g).to(dtype)
    idx = torch.randint(0, m, (q, k), generator=g)
    centre = torch.randint(0, m, (q,), generator=g)
    return features.to(device), idx.to(device), centre.to(device)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,c,q,k", [(40, 6, 13, 5), (200, 64, 37, 33), (5, 1, 3, 1)])
def test_values(dtype, m, c, q, k):
    features, idx, centre = _graph(m, c, q, k, dtype)
    out = gather_edges(features, idx, centre)
    assert out.shape == (q, 2 * c, k) and out.dtype == dtype and out.is_contiguous()
    assert torch.equal(out, gather_edges_reference(features, idx, centre))
    # neighbour channels first, then the centre's
    assert torch.equal(out[q - 1, :c, k - 1], features[idx[q - 1, k - 1]])
    assert torch.equal(out[q - 1, c:, k - 1], features[centre[q - 1]])


def test_non_contiguous_inputs():
    features, idx, centre = _graph(50, 8, 9, 4)
    f_nc = features.t().contiguous().t()
    i_nc = idx.t().contiguous().t()
    assert torch.equal(gather_edges(f_nc, i_nc, centre), gather_edges(features, idx, centre))


@pytest.mark.parametrize("q,k", [(0, 5), (7, 0)])
def test_empty(q, k):
    features = torch.randn(10, 4, requires_grad=True)
    idx = torch.zeros(q, k, dtype=torch.int64)
    centre = torch.zeros(q, dtype=torch.int64)
    out = gather_edges(features, idx, centre)
    assert out.shape == (q, 8, k)
    out.sum().backward()
    assert torch.equal(features.grad, torch.zeros(10, 4))


@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_matches_reference(dtype):
    features, idx, centre = _graph(30, 7, 40, 9, dtype, seed=1)
    grad = torch.randn(40, 14, 9).to(dtype)
    a = features.clone().requires_grad_(True)
    gather_edges(a, idx, centre).backward(grad)
    b = features.double().requires_grad_(True)
    gather_edges_reference(b, idx, centre).backward(grad.double())
    assert a.grad.dtype == dtype
    tol = {torch.float32: 1e-5, torch.float64: 1e-12, torch.float16: 2e-3, torch.bfloat16: 1e-2}
    torch.testing.assert_close(a.grad.double(), b.grad, rtol=tol[dtype], atol=tol[dtype] * 10)


def test_gradcheck_float64():
    features, idx, centre = _graph(12, 3, 8, 4, torch.float64, seed=2)
    idx[0] = idx[1]             # repeated rows: the scatter-add must sum them
    centre[3] = idx[3, 0]
    features.requires_grad_(True)
    assert torch.autograd.gradcheck(gather_edges, (features, idx, centre))
    assert torch.autograd.gradgradcheck(gather_edges, (features, idx, centre))


def test_backward_deterministic_across_threads():
    features, idx, centre = _graph(50, 64, 300, 32, seed=3)
    idx[:, :8] = 7                       # heavy collisions
    grad = torch.randn(300, 128, 32)
    before = torch.get_num_threads()
    grads = []
    try:
        for threads in (1, 2, 1):
            torch.set_num_threads(threads)
            f = features.clone().requires_grad_(True)
            gather_edges(f, idx, centre).backward(grad)
            grads.append(f.grad)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(grads[0], grads[1]) and torch.equal(grads[0], grads[2])


# ----------------------------------------------------------------------------------------------
# errors

@pytest.mark.parametrize("bad", [40, 1000, -1])
def test_out_of_range_idx(bad):
    features, idx, centre = _graph()
    idx[3, 2] = bad
    with pytest.raises(ValueError, match=rf"idx holds row {bad} outside \[0, 40\)"):
        gather_edges(features, idx, centre)


def test_out_of_range_centre():
    features, idx, centre = _graph()
    centre[0] = 40
    with pytest.raises(ValueError, match=r"centre holds row 40 outside \[0, 40\)"):
        gather_edges(features, idx, centre)
    with pytest.raises(ValueError, match="outside"):
        gather_edges(torch.randn(0, 4), torch.zeros(1, 1, dtype=torch.int64),
                     torch.zeros(1, dtype=torch.int64))


def test_backward_op_checks_rows():
    _, idx, centre = _graph()
    with pytest.raises(ValueError, match=r"outside \[0, 10\)"):
        torch.ops.pointdistiller.gather_edges_backward(torch.randn(13, 12, 5), idx, centre, 10)
    with pytest.raises(ValueError, match=r"grad must be \[Q, 2C, k\]"):
        torch.ops.pointdistiller.gather_edges_backward(torch.randn(13, 11, 5), idx, centre, 40)


def test_wrong_dtypes():
    features, idx, centre = _graph()
    with pytest.raises(TypeError, match="idx must be int64"):
        gather_edges(features, idx.int(), centre)
    with pytest.raises(TypeError, match="centre must be int64"):
        gather_edges(features, idx, centre.int())
    with pytest.raises(TypeError, match="features must be float32, float64, float16 or bfloat16"):
        gather_edges(features.long(), idx, centre)
    # the raw op raises ValueError for every argument error (ops/csrc/common/check.h)
    with pytest.raises(ValueError, match="features must be float32"):
        torch.ops.pointdistiller.gather_edges(features.long(), idx, centre)


def test_wrong_shapes_and_devices():
    features, idx, centre = _graph()
    with pytest.raises(ValueError, match=r"features must be \[M, C\]"):
        gather_edges(features[0], idx, centre)
    with pytest.raises(ValueError, match=r"idx must be \[Q, k\]"):
        gather_edges(features, idx[0], centre)
    with pytest.raises(ValueError, match=r"centre must be \[Q\] with Q = idx.shape\[0\] = 13"):
        gather_edges(features, idx, centre[:5])
    with pytest.raises(ValueError, match="idx is on meta"):
        gather_edges(features, torch.empty(13, 5, dtype=torch.int64, device="meta"), centre)


# ----------------------------------------------------------------------------------------------
# tracing

def test_fake_kernels_and_autograd_registration():
    features, idx, centre = _graph(20, 4, 6, 3, torch.float64)
    features.requires_grad_(True)
    torch.library.opcheck(torch.ops.pointdistiller.gather_edges.default, (features, idx, centre))
    grad = torch.randn(6, 8, 3, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(torch.ops.pointdistiller.gather_edges_backward.default,
                          (grad, idx, centre, 20))


# ----------------------------------------------------------------------------------------------
# CUDA

@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_equals_cpu(dtype):
    features, idx, centre = _graph(300, 64, 500, 32, dtype, seed=4)
    grad = torch.randn(500, 128, 32).to(dtype)
    a = features.clone().requires_grad_(True)
    out_cpu = gather_edges(a, idx, centre)
    out_cpu.backward(grad)
    b = features.cuda().requires_grad_(True)
    out_gpu = gather_edges(b, idx.cuda(), centre.cuda())
    out_gpu.backward(grad.cuda())
    assert torch.equal(out_gpu.cpu(), out_cpu)
    tol = {torch.float32: 1e-5, torch.float64: 1e-12, torch.float16: 2e-3, torch.bfloat16: 1e-2}
    torch.testing.assert_close(b.grad.cpu().double(), a.grad.double(), rtol=tol[dtype],
                               atol=tol[dtype] * 10)


@pytest.mark.cuda
def test_cuda_out_of_range():
    features, idx, centre = _graph(device="cuda")
    idx[0, 0] = 40
    with pytest.raises(ValueError, match="idx holds row 40"):
        gather_edges(features, idx, centre)
