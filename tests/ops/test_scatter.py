"""Tests of pointdistiller.ops.scatter.scatter_reduce: against the reference (bit for bit),
gradients (gradcheck in float64), ties and NaN, argument errors, fake kernel, CUDA == CPU."""
import pytest
import torch

from pointdistiller.ops._loader import op
from pointdistiller.ops.reference import scatter as ref
from pointdistiller.ops.scatter import scatter_reduce


def inputs(n, c, segments, seed, dtype=torch.float32, skip=True):
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn((n, c), generator=gen, dtype=dtype)
    low = -1 if skip else 0
    index = torch.randint(low, max(segments, 1), (n,), generator=gen) if segments else \
        torch.full((n,), -1, dtype=torch.int64)
    return features, index


@pytest.mark.parametrize("reduce", ["mean", "max"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n,c,segments", [(0, 3, 0), (0, 4, 5), (1, 1, 1), (50, 3, 10),
                                          (2000, 16, 300), (1500, 37, 40), (300, 4, 1000)])
def test_matches_reference(reduce, dtype, n, c, segments):
    features, index = inputs(n, c, segments, seed=n + c, dtype=dtype)
    out, aux = op("scatter_reduce")(features, index, segments, reduce)
    expected, expected_aux = ref.scatter_reduce(features, index, segments, reduce)
    assert out.dtype == dtype and out.shape == (segments, c)
    assert torch.equal(out, expected)
    assert torch.equal(aux, expected_aux)
    assert torch.equal(scatter_reduce(features, index, segments, reduce), expected)


def test_empty_segments_are_zero_and_skipped_rows_ignored():
    features = torch.tensor([[1.0, -2.0], [3.0, -4.0], [100.0, 100.0]])
    index = torch.tensor([2, 2, -1])
    assert scatter_reduce(features, index, 4, "mean").tolist() == [[0, 0], [0, 0], [2, -3], [0, 0]]
    assert scatter_reduce(features, index, 4, "max").tolist() == [[0, 0], [0, 0], [3, -2], [0, 0]]


def test_max_ties_go_to_the_lowest_index_and_nan_propagates():
    features = torch.tensor([[1.0, 5.0], [1.0, float("nan")], [0.5, 5.0], [1.0, float("nan")]],
                            dtype=torch.float64, requires_grad=True)
    index = torch.tensor([0, 0, 0, 0])
    out, arg = op("scatter_reduce")(features, index, 1, "max")
    assert arg.tolist() == [[0, 1]]
    assert out[0, 0].item() == 1.0 and out[0, 1].item() != out[0, 1].item()
    scatter_reduce(features, index, 1, "max").sum().backward()
    assert features.grad.tolist() == [[1, 0], [0, 1], [0, 0], [0, 0]]


def test_thread_count_does_not_change_bits():
    features, index = inputs(20000, 64, 500, seed=1)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = [scatter_reduce(features, index, 500, r) for r in ("mean", "max")]
        torch.set_num_threads(2)
        two = [scatter_reduce(features, index, 500, r) for r in ("mean", "max")]
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, two):
        assert torch.equal(a, b)


@pytest.mark.parametrize("reduce", ["mean", "max"])
def test_gradcheck(reduce):
    features, index = inputs(40, 3, 12, seed=3, dtype=torch.float64)
    features.requires_grad_(True)
    fn = lambda x: scatter_reduce(x, index, 12, reduce)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (features,))
    assert torch.autograd.gradgradcheck(fn, (features,))


def test_mean_gradient_values():
    features = torch.ones(4, 2, requires_grad=True)
    index = torch.tensor([1, 1, -1, 0])
    scatter_reduce(features, index, 3, "mean").sum().backward()
    assert features.grad.tolist() == [[0.5, 0.5], [0.5, 0.5], [0, 0], [1, 1]]


def test_errors_name_the_argument():
    features, index = inputs(10, 3, 4, seed=0)
    with pytest.raises(TypeError, match="features must be float32 or float64"):
        scatter_reduce(features.half(), index, 4)
    with pytest.raises(ValueError, match="features must have shape"):
        scatter_reduce(features[:, 0], index, 4)
    with pytest.raises(TypeError, match="index must be int64"):
        scatter_reduce(features, index.int(), 4)
    with pytest.raises(ValueError, match="index must have shape"):
        scatter_reduce(features, index[:5], 4)
    with pytest.raises(ValueError, match="num_segments must be >= 0"):
        scatter_reduce(features, index, -1)
    with pytest.raises(ValueError, match="reduce must be one of"):
        scatter_reduce(features, index, 4, "sum")
    with pytest.raises(ValueError, match="index must be on the device of features"):
        scatter_reduce(features, index.to("meta"), 4)
    with pytest.raises(TypeError, match="index must be a torch.Tensor"):
        scatter_reduce(features, index.tolist(), 4)
    bad = index.clone()
    bad[7] = 4
    with pytest.raises(ValueError, match=r"index\[7\] = 4 is outside \[-1, num_segments\)"):
        scatter_reduce(features, bad, 4)
    bad[7] = -2
    with pytest.raises(ValueError, match=r"index\[7\] = -2"):
        scatter_reduce(features, bad, 4)
    # The raw op checks as well (ValueError for every argument error: ops/csrc/common/check.h).
    with pytest.raises(ValueError, match="index must be int64"):
        op("scatter_reduce")(features, index.int(), 4, "mean")
    with pytest.raises(ValueError, match="reduce must be 'mean' or 'max'"):
        op("scatter_reduce")(features, index, 4, "min")


@pytest.mark.parametrize("reduce", ["mean", "max"])
def test_opcheck(reduce):
    features, index = inputs(60, 5, 9, seed=4)
    features.requires_grad_(True)
    result = torch.library.opcheck(op("scatter_reduce"), (features, index, 9, reduce))
    assert all(v == "SUCCESS" for v in result.values()), result


@pytest.mark.cuda
@pytest.mark.parametrize("reduce", ["mean", "max"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n,c,segments", [(0, 3, 4), (1, 1, 1), (5000, 67, 40),
                                          (100000, 32, 20000), (300, 4, 1000)])
def test_cuda_equals_cpu(reduce, dtype, n, c, segments):
    features, index = inputs(n, c, segments, seed=n + c, dtype=dtype)
    if n:
        features[::7, 0] = features[0, 0]  # ties
    out, aux = op("scatter_reduce")(features, index, segments, reduce)
    for _ in range(2):
        out_cuda, aux_cuda = op("scatter_reduce")(features.cuda(), index.cuda(), segments, reduce)
        assert torch.equal(out_cuda.cpu(), out)
        assert torch.equal(aux_cuda.cpu(), aux)


@pytest.mark.cuda
def test_cuda_gradients_and_errors():
    features, index = inputs(40, 3, 12, seed=3, dtype=torch.float64)
    features = features.cuda().requires_grad_(True)
    for reduce in ("mean", "max"):
        assert torch.autograd.gradcheck(lambda x: scatter_reduce(x, index.cuda(), 12, reduce),
                                        (features,))
    bad = index.clone()
    bad[5] = 12
    with pytest.raises(ValueError, match=r"index\[5\] = 12"):
        scatter_reduce(features, bad.cuda(), 12)
    with pytest.raises(ValueError, match="index must be on the device of features"):
        scatter_reduce(features, index, 12)
