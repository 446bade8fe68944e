"""pointdistiller.ops.knn_search against the exact reference (bit for bit, ties included), errors, fake kernel,
and CUDA == CPU."""
import os

import numpy as np
import pytest
import torch

from pointdistiller.ops.knn_search import knn
from pointdistiller.ops.reference.knn import knn_reference, knn_reference_float64


def _data(case, q, m, c, seed=0):
    g = torch.Generator().manual_seed(seed)
    if case == "random":
        ref = torch.randn(m, c, generator=g)
        query = torch.randn(q, c, generator=g)
    elif case == "ties":  # small integer grid: many exactly equal distances and duplicated rows
        ref = torch.randint(0, 3, (m, c), generator=g).float()
        query = torch.randint(0, 3, (q, c), generator=g).float()
    elif case == "lowrank":  # pillar-feature-like: ReLU of a rank-3 map, in clusters (the CPU
        # kernel's pruning boxes skip most refs here); quantised, so distances tie too
        z = torch.randn(m + q, 3, generator=g) + 4.0 * torch.randint(0, 4, (m + q, 1), generator=g)
        x = torch.relu(z @ torch.randn(3, c, generator=g))
        x = torch.round(x * 8.0) / 8.0
        ref, query = x[:m].contiguous(), x[m:].contiguous()
        query[: q // 4] = ref[torch.randint(0, m, (q // 4,), generator=g)]  # queries among the refs
    elif case == "offset":  # large common offset, small spread (stresses the brute-force bounds)
        ref = 1000.0 + 0.01 * torch.randn(m, c, generator=g)
        query = 1000.0 + 0.01 * torch.randn(q, c, generator=g)
    else:
        raise ValueError(case)
    return query, ref


def _assert_matches_reference(query, ref, k, query_offsets=None, ref_offsets=None):
    idx, dist = knn(query, ref, k, query_offsets, ref_offsets)
    ref_idx, ref_dist = knn_reference(query, ref, k, query_offsets, ref_offsets)
    assert idx.dtype == torch.int64 and dist.dtype == torch.float32
    assert idx.shape == (query.shape[0], k) and dist.shape == (query.shape[0], k)
    assert torch.equal(dist, ref_dist)
    assert torch.equal(idx, ref_idx)
    if query.shape[0]:
        d64 = knn_reference_float64(query, ref, idx)
        torch.testing.assert_close(dist.double(), d64, rtol=1e-5, atol=1e-6)
    return idx, dist


@pytest.mark.parametrize("c", [1, 3, 6, 16, 64, 130])
@pytest.mark.parametrize("case", ["random", "ties"])
@pytest.mark.parametrize("q,m,k", [(37, 211, 5), (29, 29, 29), (200, 1100, 128)])
def test_matches_reference(c, case, q, m, k):
    query, ref = _data(case, q, m, c)
    _assert_matches_reference(query, ref, k)


@pytest.mark.parametrize("c", [4, 16, 64])
@pytest.mark.parametrize("q,m,k", [(300, 3000, 128), (500, 2000, 16), (7, 5000, 1)])
def test_low_rank_features_match_reference(c, q, m, k):
    query, ref = _data("lowrank", q, m, c, seed=4)
    _assert_matches_reference(query, ref, k)


@pytest.mark.parametrize("c", [257, 512])
def test_wide_channels(c):
    query, ref = _data("random", 25, 300, c, seed=6)
    _assert_matches_reference(query, ref, 10)


@pytest.mark.parametrize("c", [2, 3, 8, 64])
def test_large_common_offset(c):
    query, ref = _data("offset", 60, 700, c, seed=3)
    _assert_matches_reference(query, ref, 20)


@pytest.mark.parametrize("c", [3, 16])
def test_duplicated_points_lower_index_first(c):
    base = torch.randn(5, c)
    ref = base[torch.tensor([2, 0, 2, 1, 2, 2, 3, 4, 2])]     # row 2 of base at ref rows 0, 2, 4, 5, 8
    query = base[2:3].clone()
    idx, dist = knn(query, ref, 5)
    assert idx[0].tolist() == [0, 2, 4, 5, 8]
    assert dist[0].tolist() == [0.0] * 5
    idx, dist = knn(query, ref, 9)
    assert idx[0, :5].tolist() == [0, 2, 4, 5, 8]
    assert torch.all(dist[0, 1:] >= dist[0, :-1])


@pytest.mark.parametrize("c", [3, 16])
def test_all_refs_identical(c):
    ref = torch.ones(300, c)
    query = torch.zeros(4, c)
    idx, dist = knn(query, ref, 17)
    assert torch.equal(idx, torch.arange(17).expand(4, 17))
    assert torch.all(dist == float(c))


@pytest.mark.parametrize("c", [3, 16])
def test_empty_query_set(c):
    idx, dist = knn(torch.empty(0, c), torch.randn(10, c), 4)
    assert idx.shape == (0, 4) and dist.shape == (0, 4)
    # no query: k may exceed the reference count
    idx, dist = knn(torch.empty(0, c), torch.randn(2, c), 4)
    assert idx.shape == (0, 4)


@pytest.mark.parametrize("c", [3, 16, 64])
def test_offsets_several_samples(c):
    k = 8
    ref_counts = [50, 8, 0, 3, 40, 120]   # sample 1 has exactly k refs; 2 and 3 have no queries
    query_counts = [10, 5, 0, 0, 7, 30]
    ref_offsets = torch.tensor([0] + np.cumsum(ref_counts).tolist(), dtype=torch.int64)
    query_offsets = torch.tensor([0] + np.cumsum(query_counts).tolist(), dtype=torch.int64)
    query, ref = _data("random", sum(query_counts), sum(ref_counts), c, seed=1)
    idx, _ = _assert_matches_reference(query, ref, k, query_offsets, ref_offsets)
    for b in range(len(ref_counts)):
        rows = idx[query_offsets[b]:query_offsets[b + 1]]
        assert torch.all((rows >= ref_offsets[b]) & (rows < ref_offsets[b + 1]))
    # the sample with exactly k refs returns all of them
    assert sorted(idx[10].tolist()) == list(range(50, 58))


def test_single_sample_offsets_equal_no_offsets():
    query, ref = _data("ties", 40, 300, 16, seed=2)
    a = knn(query, ref, 12)
    b = knn(query, ref, 12, torch.tensor([0, 40]), torch.tensor([0, 300]))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_non_contiguous_inputs():
    query, ref = _data("random", 30, 200, 16, seed=4)
    q_nc = torch.cat([query, query], 1)[:, ::2]
    r_nc = ref.t().contiguous().t()
    assert not q_nc.is_contiguous() and not r_nc.is_contiguous()
    a = knn(q_nc, r_nc, 9)
    b = knn(q_nc.contiguous(), r_nc.contiguous(), 9)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("c", [3, 64])
def test_same_result_for_any_thread_count(c):
    query, ref = _data("ties", 150, 900, c, seed=5)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = knn(query, ref, 33)
        torch.set_num_threads(2)
        b = knn(query, ref, 33)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_real_kitti_points(kitti_sample):
    velo = os.path.join(kitti_sample, "training", "velodyne")
    frames = sorted(os.listdir(velo))[:2]
    gen = np.random.default_rng(0)
    parts, queries = [], []
    for name in frames:
        pts = np.fromfile(os.path.join(velo, name), dtype=np.float32).reshape(-1, 4)[:, :3]
        pts = pts[gen.choice(len(pts), 6000, replace=False)]
        parts.append(torch.from_numpy(pts))
        queries.append(torch.from_numpy(pts[gen.choice(len(pts), 300, replace=False)]))
    ref, query = torch.cat(parts), torch.cat(queries)
    ref_offsets = torch.tensor([0, 6000, 12000])
    query_offsets = torch.tensor([0, 300, 600])
    idx, dist = _assert_matches_reference(query, ref, 16, query_offsets, ref_offsets)
    assert torch.all(dist[:, 0] == 0)                    # every query is one of the points
    assert torch.equal(ref[idx[:, 0]], query)


# ----------------------------------------------------------------------------------------------
# errors

def test_k_exceeds_sample_count_names_the_sample():
    ref, query = torch.randn(20, 3), torch.randn(6, 3)
    with pytest.raises(ValueError, match="sample 1 has 4 reference rows but k = 5"):
        knn(query, ref, 5, torch.tensor([0, 3, 6]), torch.tensor([0, 16, 20]))
    with pytest.raises(ValueError, match="ref has 20 rows but k = 21"):
        knn(query, ref, 21)


@pytest.mark.parametrize("k", [0, -3])
def test_k_below_one(k):
    with pytest.raises(ValueError, match="k must be >= 1"):
        knn(torch.randn(4, 3), torch.randn(9, 3), k)


def test_k_not_int():
    with pytest.raises(TypeError, match="k must be an int"):
        knn(torch.randn(4, 3), torch.randn(9, 3), 2.0)
    with pytest.raises(TypeError, match="k must be an int"):
        knn(torch.randn(4, 3), torch.randn(9, 3), True)
    idx, _ = knn(torch.randn(4, 3), torch.randn(9, 3), np.int64(2))   # integer-like is fine
    assert idx.shape == (4, 2)


@pytest.mark.parametrize("qo,ro,match", [
    ([0, 4], None, "both query_offsets and ref_offsets, or neither"),
    ([0, 2, 4], [0, 9], "query_offsets has 3 entries but ref_offsets has 2"),
    ([0, 3], [0, 9], r"query_offsets\[-1\] must equal the number of query rows \(4\)"),
    ([0, 4], [0, 10], r"ref_offsets\[-1\] must equal the number of ref rows \(9\)"),
    ([1, 4], [0, 9], r"query_offsets\[0\] must be 0"),
    ([0, 3, 2, 4], [0, 3, 6, 9], "query_offsets must be non-decreasing"),
])
def test_bad_offsets(qo, ro, match):
    to = (lambda v: None if v is None else torch.tensor(v, dtype=torch.int64))
    with pytest.raises(ValueError, match=match):
        knn(torch.randn(4, 3), torch.randn(9, 3), 2, to(qo), to(ro))


def test_bad_offsets_reach_the_native_checks_too():
    op = torch.ops.pointdistiller.knn
    with pytest.raises(ValueError, match="non-decreasing"):
        op(torch.randn(4, 3), torch.randn(9, 3), 2, torch.tensor([0, 3, 2, 4]),
           torch.tensor([0, 3, 6, 9]))
    with pytest.raises(ValueError, match="sample 0 has 3 reference rows"):
        op(torch.randn(4, 16), torch.randn(9, 16), 4, torch.tensor([0, 2, 4]),
           torch.tensor([0, 3, 9]))


def test_offsets_dtype():
    with pytest.raises(TypeError, match="query_offsets must be int64"):
        knn(torch.randn(4, 3), torch.randn(9, 3), 2, torch.tensor([0, 4], dtype=torch.int32),
            torch.tensor([0, 9]))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16, torch.int64])
def test_wrong_dtype(dtype):
    with pytest.raises(TypeError, match="query must be float32"):
        knn(torch.zeros(4, 3, dtype=dtype), torch.randn(9, 3), 2)
    with pytest.raises(TypeError, match="ref must be float32"):
        knn(torch.randn(4, 3), torch.zeros(9, 3, dtype=dtype), 2)
    # the raw op raises ValueError for every argument error (ops/csrc/common/check.h)
    with pytest.raises(ValueError, match="query must be float32"):
        torch.ops.pointdistiller.knn(torch.zeros(4, 3, dtype=dtype), torch.randn(9, 3), 2)


def test_wrong_shapes():
    with pytest.raises(ValueError, match=r"query must be \[Q, C\]"):
        knn(torch.randn(12), torch.randn(9, 3), 2)
    with pytest.raises(ValueError, match=r"ref must be \[M, C\]"):
        knn(torch.randn(4, 3), torch.randn(2, 9, 3), 2)
    with pytest.raises(ValueError, match="query has 3 channels but ref has 4"):
        knn(torch.randn(4, 3), torch.randn(9, 4), 2)
    with pytest.raises(ValueError, match="at least one channel"):
        torch.ops.pointdistiller.knn(torch.randn(4, 0), torch.randn(9, 0), 2)
    with pytest.raises(TypeError, match="query must be a torch.Tensor"):
        knn(np.zeros((4, 3), np.float32), torch.randn(9, 3), 2)


def test_wrong_device():
    with pytest.raises(ValueError, match="query is on cpu but ref is on meta"):
        knn(torch.randn(4, 3), torch.empty(9, 3, device="meta"), 2)
    with pytest.raises(ValueError, match="ref_offsets is on meta"):
        knn(torch.randn(4, 3), torch.randn(9, 3), 2, torch.tensor([0, 4]),
            torch.empty(2, dtype=torch.int64, device="meta"))


@pytest.mark.parametrize("c", [3, 64])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_inputs(c, bad):
    query, ref = torch.randn(4, c), torch.randn(9, c)
    query[2, c - 1] = bad
    with pytest.raises(ValueError, match="query contains NaN or infinite values"):
        knn(query, ref, 2)
    query[2, c - 1] = 0
    ref[8, 0] = bad
    with pytest.raises(ValueError, match="ref contains NaN or infinite values"):
        knn(query, ref, 2)


# ----------------------------------------------------------------------------------------------
# tracing

def test_fake_kernel_and_schema():
    query, ref = _data("random", 20, 50, 16)
    torch.library.opcheck(torch.ops.pointdistiller.knn.default, (query, ref, 5, None, None))
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        idx, dist = knn(torch.empty(7, 64), torch.empty(100, 64), 12)
    assert idx.shape == (7, 12) and idx.dtype == torch.int64
    assert dist.shape == (7, 12) and dist.dtype == torch.float32


# ----------------------------------------------------------------------------------------------
# CUDA

@pytest.mark.cuda
@pytest.mark.parametrize("c", [1, 3, 16, 64, 130, 512])
@pytest.mark.parametrize("case", ["random", "ties"])
@pytest.mark.parametrize("k", [1, 16, 128, 300])
def test_cuda_equals_cpu(c, case, k):
    query, ref = _data(case, 211, 1500, c, seed=7)
    idx_cpu, dist_cpu = knn(query, ref, k)
    idx_gpu, dist_gpu = knn(query.cuda(), ref.cuda(), k)
    assert idx_gpu.is_cuda and dist_gpu.is_cuda
    assert torch.equal(dist_gpu.cpu(), dist_cpu)
    assert torch.equal(idx_gpu.cpu(), idx_cpu)


@pytest.mark.cuda
@pytest.mark.parametrize("c", [3, 64])
def test_cuda_offsets_equal_cpu(c):
    ref_counts = [50, 8, 0, 3, 400, 7]
    query_counts = [10, 5, 0, 0, 77, 1]
    ref_offsets = torch.tensor([0] + np.cumsum(ref_counts).tolist(), dtype=torch.int64)
    query_offsets = torch.tensor([0] + np.cumsum(query_counts).tolist(), dtype=torch.int64)
    query, ref = _data("ties", sum(query_counts), sum(ref_counts), c, seed=8)
    cpu = knn(query, ref, 7, query_offsets, ref_offsets)
    gpu = knn(query.cuda(), ref.cuda(), 7, query_offsets.cuda(), ref_offsets.cuda())
    assert torch.equal(gpu[0].cpu(), cpu[0]) and torch.equal(gpu[1].cpu(), cpu[1])


@pytest.mark.cuda
def test_cuda_errors_and_empty():
    with pytest.raises(ValueError, match="query contains NaN"):
        knn(torch.full((3, 3), float("nan"), device="cuda"), torch.randn(9, 3, device="cuda"), 2)
    with pytest.raises(ValueError, match="sample 1 has 4 reference rows"):
        knn(torch.randn(6, 3, device="cuda"), torch.randn(20, 3, device="cuda"), 5,
            torch.tensor([0, 3, 6], device="cuda"), torch.tensor([0, 16, 20], device="cuda"))
    idx, dist = knn(torch.empty(0, 8, device="cuda"), torch.randn(9, 8, device="cuda"), 4)
    assert idx.shape == (0, 4) and idx.is_cuda
