"""Tests of pointdistiller.ops.voxelization: against the pure-Python reference on synthetic clouds and
edge cases, against spconv's PointToVoxel on real KITTI frames (bit for bit), argument errors,
fake kernels, and CUDA == CPU (marked cuda)."""
import os
import warnings

import numpy as np
import pytest
import torch

from pointdistiller.ops import voxelization as V
from pointdistiller.ops._loader import op
from pointdistiller.ops.reference import voxelize as ref

PP = dict(point_range=[0, -39.68, -3, 69.12, 39.68, 1], voxel_size=[0.16, 0.16, 4], max_points=32)
SECOND = dict(point_range=[0, -40, -3, 70.4, 40, 1], voxel_size=[0.05, 0.05, 0.1], max_points=5)
FRAMES = ("velodyne/000000.bin", "velodyne/000001.bin", "velodyne/000002.bin",
          "velodyne_reduced/000008.bin")
# A small grid with exact binary arithmetic: 8 x 8 x 4 cells of 0.5 x 0.5 x 1 m.
SMALL = dict(voxel_size=[0.5, 0.5, 1.0], point_range=[0.0, -2.0, -1.0, 4.0, 2.0, 3.0])


def cloud(n, c, seed, lo=(-1.0, -3.0, -2.0), hi=(5.0, 3.0, 4.0), duplicates=0):
    """[n, c] float32 points uniform in [lo, hi) (partly outside SMALL), with extra features."""
    gen = torch.Generator().manual_seed(seed)
    pts = torch.rand((n, c), generator=gen)
    pts[:, :3] = pts[:, :3] * (torch.tensor(hi) - torch.tensor(lo)) + torch.tensor(lo)
    if duplicates and n:
        rows = torch.randint(n, (duplicates,), generator=gen)
        pts = torch.cat([pts, pts[rows]])[torch.randperm(n + duplicates, generator=gen)]
    return pts.contiguous()


def assert_same(out, expected):
    for name, a, b in zip(("voxels", "coords", "num_points", "point_to_voxel"), out, expected):
        assert a.dtype == b.dtype, name
        assert a.shape == b.shape, (name, a.shape, b.shape)
        assert torch.equal(a.cpu(), b.cpu()), name


def load_frame(kitti_sample, name):
    path = os.path.join(kitti_sample, "training", name)
    return torch.from_numpy(np.fromfile(path, dtype=np.float32).reshape(-1, 4))


# ---------------------------------------------------------------- against the reference

@pytest.mark.parametrize("n", [0, 1, 7, 300, 2500])
@pytest.mark.parametrize("c", [3, 4, 5])
@pytest.mark.parametrize("max_points,max_voxels", [(1, 1), (3, 20), (5, 1000), (64, 1000)])
def test_voxelize_matches_reference(n, c, max_points, max_voxels):
    pts = cloud(n, c, seed=n * 31 + c, duplicates=n // 5)
    out = V.voxelize(pts, SMALL["voxel_size"], SMALL["point_range"], max_points, max_voxels)
    assert_same(out, ref.voxelize(pts, SMALL["voxel_size"], SMALL["point_range"], max_points,
                                  max_voxels))
    assert out.voxels.shape[1:] == (max_points, c)
    assert out.voxels.shape[0] <= max_voxels


@pytest.mark.parametrize("n", [0, 1, 300, 2500])
@pytest.mark.parametrize("c", [3, 4, 5])
def test_voxelize_dynamic_matches_reference(n, c):
    pts = cloud(n, c, seed=n + c, duplicates=n // 3)
    out = V.voxelize_dynamic(pts, SMALL["voxel_size"], SMALL["point_range"])
    expected = ref.voxelize_dynamic(pts, SMALL["voxel_size"], SMALL["point_range"])
    for a, b in zip(out, expected):
        assert a.dtype == b.dtype and torch.equal(a, b)


def test_dynamic_agrees_with_hard_voxels():
    pts = cloud(3000, 4, seed=5)
    dyn = V.voxelize_dynamic(pts, **SMALL)
    hard = V.voxelize(pts, SMALL["voxel_size"], SMALL["point_range"], 3000, 3000)
    assert torch.equal(dyn.voxel_coords, hard.coords)
    assert torch.equal(dyn.point_to_voxel, hard.point_to_voxel)
    inside = dyn.point_to_voxel >= 0
    assert torch.equal(dyn.point_coords[inside], dyn.voxel_coords[dyn.point_to_voxel[inside]])
    assert (dyn.point_coords[~inside] == -1).all()


def test_wide_features_and_non_contiguous_input():
    pts = cloud(500, 9, seed=3)
    out = V.voxelize(pts, SMALL["voxel_size"], SMALL["point_range"], 4, 100)
    assert_same(out, ref.voxelize(pts, SMALL["voxel_size"], SMALL["point_range"], 4, 100))
    view = pts.t().contiguous().t()[:, :5]
    assert not view.is_contiguous()
    out = V.voxelize(view, SMALL["voxel_size"], SMALL["point_range"], 4, 100)
    assert_same(out, ref.voxelize(view.contiguous(), SMALL["voxel_size"], SMALL["point_range"],
                                  4, 100))


# ---------------------------------------------------------------- edge cases

@pytest.mark.parametrize("c", [3, 4, 5])
def test_empty_cloud(c):
    out = V.voxelize(torch.empty(0, c), SMALL["voxel_size"], SMALL["point_range"], 5, 10)
    assert out.voxels.shape == (0, 5, c) and out.voxels.dtype == torch.float32
    assert out.coords.shape == (0, 3) and out.coords.dtype == torch.int32
    assert out.num_points.shape == (0,) and out.num_points.dtype == torch.int32
    assert out.point_to_voxel.shape == (0,) and out.point_to_voxel.dtype == torch.int64
    dyn = V.voxelize_dynamic(torch.empty(0, c), **SMALL)
    assert dyn.point_coords.shape == (0, 3) and dyn.voxel_coords.shape == (0, 3)
    assert dyn.point_to_voxel.shape == (0,)


def test_all_points_out_of_range():
    pts = cloud(400, 4, seed=1, lo=(10, 10, 10), hi=(20, 20, 20))
    out = V.voxelize(pts, SMALL["voxel_size"], SMALL["point_range"], 5, 10)
    assert out.voxels.shape == (0, 5, 4)
    assert (out.point_to_voxel == -1).all()
    dyn = V.voxelize_dynamic(pts, **SMALL)
    assert dyn.voxel_coords.shape == (0, 3) and (dyn.point_coords == -1).all()


def below(value):
    """The largest float32 below ``value``."""
    return float(np.nextafter(np.float32(value), np.float32(-np.inf)))


def test_range_borders_min_included_max_excluded():
    lo, hi = SMALL["point_range"][:3], SMALL["point_range"][3:]
    pts = torch.tensor([
        [lo[0], lo[1], lo[2], 1.0],          # the min corner: cell (0, 0, 0)
        [hi[0], 0.0, 0.0, 2.0],              # x == xmax: out
        [0.0, hi[1], 0.0, 3.0],              # y == ymax: out
        [0.0, 0.0, hi[2], 4.0],              # z == zmax: out
        [below(hi[0]), 1.9, below(hi[2]), 5.0],  # just below max: last cell
        [below(lo[0]), 0.0, 0.0, 6.0],       # just below xmin: out
        [-0.0, 0.0, 0.0, 7.0],               # -0.0 == xmin: in
    ], dtype=torch.float32)
    out = V.voxelize(pts, SMALL["voxel_size"], SMALL["point_range"], 2, 10)
    assert out.point_to_voxel.tolist() == [0, -1, -1, -1, 1, -1, 2]
    assert out.coords.tolist() == [[0, 0, 0], [3, 7, 7], [1, 4, 0]]
    assert_same(out, ref.voxelize(pts, SMALL["voxel_size"], SMALL["point_range"], 2, 10))


def test_grid_rounds_like_spconv():
    # 1.0 / 0.4 = 2.5 cells rounds to 3: points in [1.0, 1.2) are kept although >= max.
    assert V.grid_size([0.4, 0.4, 0.4], [0, 0, 0, 1, 1, 1]) == (3, 3, 3)
    assert V.grid_size(SECOND["voxel_size"], SECOND["point_range"]) == (1408, 1600, 40)
    assert V.grid_size(PP["voxel_size"], PP["point_range"]) == (432, 496, 1)
    pts = torch.tensor([[1.1, 0.1, 0.1], [1.25, 0.1, 0.1]])
    out = V.voxelize(pts, [0.4, 0.4, 0.4], [0, 0, 0, 1, 1, 1], 1, 10)
    assert out.point_to_voxel.tolist() == [0, -1]
    assert out.coords.tolist() == [[0, 0, 2]]


def test_full_voxel_keeps_first_points_and_ids():
    pts = torch.tensor([[0.1 * i, 0.1, 0.1, float(i)] for i in range(5)])  # all in cell (0, 0, 0)
    pts = torch.cat([pts, torch.tensor([[1.1, 0.1, 0.1, 9.0]])])
    out = V.voxelize(pts, SMALL["voxel_size"], SMALL["point_range"], 3, 10)
    assert out.num_points.tolist() == [3, 1]
    assert out.voxels[0, :, 3].tolist() == [0.0, 1.0, 2.0]
    # Points 3 and 4 are not stored but keep their voxel's id, as spconv's pc_voxel_id.
    assert out.point_to_voxel.tolist() == [0, 0, 0, 0, 0, 1]
    assert (out.voxels[1, 1:] == 0).all()


def test_max_voxels_drops_later_voxels_whole():
    pts = torch.tensor([[0.1, 0.1, 0.1], [1.1, 0.1, 0.1], [0.2, 0.1, 0.1], [2.1, 0.1, 0.1],
                        [1.2, 0.1, 0.1], [2.2, 0.1, 0.1]])
    out = V.voxelize(pts, SMALL["voxel_size"], SMALL["point_range"], 4, 2)
    assert out.point_to_voxel.tolist() == [0, 1, 0, -1, 1, -1]
    assert out.num_points.tolist() == [2, 2]
    assert out.coords.tolist() == [[1, 4, 0], [1, 4, 2]]


def test_duplicated_points():
    pts = cloud(50, 4, seed=9).repeat(4, 1)
    out = V.voxelize(pts, SMALL["voxel_size"], SMALL["point_range"], 100, 100)
    assert_same(out, ref.voxelize(pts, SMALL["voxel_size"], SMALL["point_range"], 100, 100))
    inside = out.point_to_voxel[:50] >= 0
    assert torch.equal(out.point_to_voxel[:50], out.point_to_voxel[150:])
    assert int(out.num_points.sum()) == 4 * int(inside.sum())


def test_huge_grid_uses_64_bit_keys():
    # 2^20 cells per axis: 2^60 cells, beyond 32-bit keys.
    size = [2.0 ** -10] * 3
    rng = [0.0, 0.0, 0.0, 1024.0, 1024.0, 1024.0]
    pts = cloud(3000, 4, seed=4, lo=(-10, -10, -10), hi=(1100, 1100, 1100), duplicates=500)
    pts[:100, :3] = torch.tensor([1023.999, 0.0, 1023.5])
    assert_same(V.voxelize(pts, size, rng, 3, 2000), ref.voxelize(pts, size, rng, 3, 2000))
    for a, b in zip(V.voxelize_dynamic(pts, size, rng), ref.voxelize_dynamic(pts, size, rng)):
        assert torch.equal(a, b)


def test_workspace_reuse_across_calls_and_threads():
    big = cloud(20000, 4, seed=11, duplicates=3000)
    small = cloud(300, 4, seed=12)
    expected_big = ref.voxelize(big, SMALL["voxel_size"], SMALL["point_range"], 5, 40)
    expected_small = ref.voxelize(small, SMALL["voxel_size"], SMALL["point_range"], 5, 40)
    threads = torch.get_num_threads()
    try:
        for n_threads in (1, 2):
            torch.set_num_threads(n_threads)
            for pts, expected in ((big, expected_big), (small, expected_small),
                                  (big, expected_big)):
                assert_same(V.voxelize(pts, SMALL["voxel_size"], SMALL["point_range"], 5, 40),
                            expected)
    finally:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------- spconv on real frames

@pytest.fixture(scope="module")
def spconv_point_to_voxel():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from spconv.pytorch.utils import PointToVoxel
    return PointToVoxel


@pytest.mark.parametrize("setting", ["pointpillars", "second"])
@pytest.mark.parametrize("max_voxels", [16000, 40000])
def test_matches_spconv_on_kitti_frames(kitti_sample, spconv_point_to_voxel, setting, max_voxels):
    s = PP if setting == "pointpillars" else SECOND
    gen = spconv_point_to_voxel(s["voxel_size"], s["point_range"], 4, max_voxels,
                                s["max_points"], device=torch.device("cpu"))
    for frame in FRAMES:
        pts = load_frame(kitti_sample, frame)
        expected = gen.generate_voxel_with_id(pts)
        out = V.voxelize(pts, s["voxel_size"], s["point_range"], s["max_points"], max_voxels)
        assert_same(out, expected)
        dyn = V.voxelize_dynamic(pts, s["voxel_size"], s["point_range"])
        n = min(max_voxels, dyn.voxel_coords.shape[0])
        assert torch.equal(dyn.voxel_coords[:n], out.coords)


# ---------------------------------------------------------------- argument errors

def test_errors_name_the_argument():
    pts = cloud(10, 4, seed=0)
    size, rng = SMALL["voxel_size"], SMALL["point_range"]
    with pytest.raises(TypeError, match="points must be float32"):
        V.voxelize(pts.double(), size, rng, 5, 10)
    with pytest.raises(TypeError, match="points must be a torch.Tensor"):
        V.voxelize(pts.numpy(), size, rng, 5, 10)
    with pytest.raises(ValueError, match="points must have shape"):
        V.voxelize(pts[:, :2], size, rng, 5, 10)
    with pytest.raises(ValueError, match="points must have shape"):
        V.voxelize(pts[:, 0], size, rng, 5, 10)
    with pytest.raises(ValueError, match="voxel_size must hold 3"):
        V.voxelize(pts, [0.5, 0.5], rng, 5, 10)
    with pytest.raises(ValueError, match=r"voxel_size\[1\] \(y\) must be > 0"):
        V.voxelize(pts, [0.5, 0.0, 1.0], rng, 5, 10)
    with pytest.raises(ValueError, match="point_range must hold 6"):
        V.voxelize(pts, size, rng[:5], 5, 10)
    with pytest.raises(ValueError, match="point_range zmax"):
        V.voxelize(pts, size, [0, 0, 3, 1, 1, 3], 5, 10)
    with pytest.raises(ValueError, match="point_range must be finite"):
        V.voxelize(pts, size, [0, 0, 0, 1, 1, float("inf")], 5, 10)
    with pytest.raises(ValueError, match="max_points must be >= 1"):
        V.voxelize(pts, size, rng, 0, 10)
    with pytest.raises(ValueError, match="max_voxels must be >= 1"):
        V.voxelize(pts, size, rng, 5, 0)
    with pytest.raises(TypeError, match="max_voxels must be an int"):
        V.voxelize(pts, size, rng, 5, 10.0)
    with pytest.raises(TypeError, match="points must be float32"):
        V.voxelize_dynamic(pts.half(), size, rng)
    with pytest.raises(ValueError, match="points must be on a CPU or CUDA device"):
        V.voxelize(pts.to("meta"), size, rng, 5, 10)


def test_raw_op_checks_arguments_too():
    pts = cloud(10, 4, seed=0)
    size, rng = SMALL["voxel_size"], SMALL["point_range"]
    # ValueError for every argument error of a raw op (ops/csrc/common/check.h)
    with pytest.raises(ValueError, match="points must be float32"):
        op("voxelize")(pts.double(), size, rng, 5, 10)
    with pytest.raises(ValueError, match="voxel_size"):
        op("voxelize")(pts, [0.5, -1.0, 1.0], rng, 5, 10)
    with pytest.raises(ValueError, match="xmax"):
        op("voxelize_dynamic")(pts, size, [1, 0, 0, 1, 1, 1])
    with pytest.raises(ValueError, match="max_points"):
        op("voxelize")(pts, size, rng, -3, 10)
    with pytest.raises(ValueError, match="cells along x"):
        op("voxelize")(pts, [1e-12, 1, 1], [0, 0, 0, 1e6, 1, 1], 5, 10)
    with pytest.raises(ValueError, match="needs 63 bits of cell index"):  # 2^21 cells per axis
        op("voxelize_dynamic")(pts, [2.0 ** -11] * 3, [0, 0, 0, 1024, 1024, 1024])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("column", [0, 2, 3])
def test_non_finite_points_raise(bad, column):
    pts = cloud(100, 4, seed=2)
    pts[37, column] = bad
    with pytest.raises(ValueError, match="points must be finite, but row 37"):
        V.voxelize(pts, SMALL["voxel_size"], SMALL["point_range"], 5, 10)
    with pytest.raises(ValueError, match="points must be finite, but row 37"):
        V.voxelize_dynamic(pts, **SMALL)
    # The workspace stays usable after the error.
    good = cloud(100, 4, seed=2)
    assert_same(V.voxelize(good, SMALL["voxel_size"], SMALL["point_range"], 5, 10),
                ref.voxelize(good, SMALL["voxel_size"], SMALL["point_range"], 5, 10))


# ---------------------------------------------------------------- fake kernels

def test_opcheck_fake_kernels():
    pts = cloud(200, 4, seed=6)
    size, rng = SMALL["voxel_size"], SMALL["point_range"]
    for name, args in (("voxelize", (pts, size, rng, 4, 50)),
                       ("voxelize_dynamic", (pts, size, rng))):
        result = torch.library.opcheck(op(name), args)
        assert all(v == "SUCCESS" for v in result.values()), (name, result)


def test_fake_tensor_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    with FakeTensorMode(shape_env=ShapeEnv()):
        pts = torch.empty(1000, 5)
        out = V.voxelize(pts, SMALL["voxel_size"], SMALL["point_range"], 7, 30)
        assert out.voxels.shape[1:] == (7, 5) and out.point_to_voxel.shape == (1000,)
        assert str(out.coords.shape[0]) == str(out.voxels.shape[0])  # one unbacked size
        dyn = V.voxelize_dynamic(pts, **SMALL)
        assert dyn.point_coords.shape == (1000, 3) and dyn.voxel_coords.shape[1] == 3


# ---------------------------------------------------------------- CUDA

@pytest.mark.cuda
@pytest.mark.parametrize("n,c", [(0, 4), (1, 3), (2500, 4), (20000, 5)])
@pytest.mark.parametrize("max_points,max_voxels", [(1, 1), (3, 20), (64, 100000)])
def test_cuda_equals_cpu_synthetic(n, c, max_points, max_voxels):
    pts = cloud(n, c, seed=n + c, duplicates=n // 4)
    size, rng = SMALL["voxel_size"], SMALL["point_range"]
    expected = V.voxelize(pts, size, rng, max_points, max_voxels)
    assert_same(V.voxelize(pts.cuda(), size, rng, max_points, max_voxels), expected)
    for a, b in zip(V.voxelize_dynamic(pts.cuda(), size, rng), V.voxelize_dynamic(pts, size, rng)):
        assert torch.equal(a.cpu(), b)


@pytest.mark.cuda
@pytest.mark.parametrize("setting", ["pointpillars", "second"])
@pytest.mark.parametrize("max_voxels", [16000, 40000])
def test_cuda_equals_cpu_on_kitti_frames(kitti_sample, setting, max_voxels):
    s = PP if setting == "pointpillars" else SECOND
    for frame in FRAMES:
        pts = load_frame(kitti_sample, frame)
        expected = V.voxelize(pts, s["voxel_size"], s["point_range"], s["max_points"], max_voxels)
        first = V.voxelize(pts.cuda(), s["voxel_size"], s["point_range"], s["max_points"],
                           max_voxels)
        assert first.voxels.device.type == "cuda"
        assert_same(first, expected)
        for _ in range(3):  # repeated runs give the same bits
            assert_same(V.voxelize(pts.cuda(), s["voxel_size"], s["point_range"],
                                   s["max_points"], max_voxels), first)
        dyn_cpu = V.voxelize_dynamic(pts, s["voxel_size"], s["point_range"])
        dyn_cuda = V.voxelize_dynamic(pts.cuda(), s["voxel_size"], s["point_range"])
        for a, b in zip(dyn_cuda, dyn_cpu):
            assert torch.equal(a.cpu(), b)


@pytest.mark.cuda
def test_cuda_errors():
    pts = cloud(100, 4, seed=2).cuda()
    pts[37, 1] = float("nan")
    with pytest.raises(ValueError, match="points must be finite, but row 37"):
        V.voxelize(pts, SMALL["voxel_size"], SMALL["point_range"], 5, 10)
    with pytest.raises(ValueError, match="points must be finite, but row 37"):
        V.voxelize_dynamic(pts, **SMALL)
