"""PointNet++ backbone and FP neck (detectors/backbones_3d/pointnet2.py) against references written
here: brute-force D-FPS, ball query and three-NN in numpy, and the set abstraction / feature
propagation computed the plain way (gather, concatenate, Linear + BN + ReLU, max) in float64."""
import time

import numpy as np
import pytest
import torch
from torch import nn

from pointdistiller.detectors.backbones_3d import (PointNet2SAMSG, PointNetFPNeck, SALevel,
                                                   SAModuleMSG, plan_geometry)

pytestmark = pytest.mark.usefixtures("one_thread")

# PointRCNN as distilled by PointDistiller (shared/docs/prior_art.md 1.1).
LEVELS = (SALevel(4096, (0.1, 0.5), (16, 32)), SALevel(1024, (0.5, 1.0), (16, 32)),
          SALevel(256, (1.0, 2.0), (16, 32)), SALevel(64, (2.0, 4.0), (16, 32)))
WIDTHS = {
    "teacher": ((((16, 16, 32), (32, 32, 64)), ((64, 64, 128), (64, 96, 128)),
                 ((128, 196, 256), (128, 196, 256)), ((256, 256, 512), (256, 384, 512))),
                ((1536, 512, 512), (768, 512, 512), (608, 256, 256), (257, 128, 128))),
    "8x": ((((5, 5, 11), (11, 11, 22)), ((22, 22, 45), (22, 34, 45)),
            ((45, 70, 91), (45, 70, 91)), ((91, 91, 182), (91, 137, 182))),
           ((546, 182, 182), (272, 182, 182), (215, 91, 91), (92, 45, 45))),
    "16x": ((((4, 4, 8), (8, 8, 16)), ((16, 16, 32), (16, 24, 32)),
             ((32, 49, 64), (32, 49, 64)), ((64, 64, 128), (64, 96, 128))),
            ((384, 128, 128), (192, 128, 128), (152, 64, 64), (65, 32, 32))),
}


def build(name, levels=LEVELS):
    mlps, fp = WIDTHS[name]
    return PointNet2SAMSG(1, levels, mlps), PointNetFPNeck(fp)


def offsets_of(counts):
    return torch.tensor([0] + list(np.cumsum(counts)), dtype=torch.int64)


def random_cloud(counts, seed, box=(3.0, 3.0, 3.0)):
    gen = torch.Generator().manual_seed(seed)
    xyz = torch.rand(sum(counts), 3, generator=gen) * torch.tensor(box)
    return xyz, offsets_of(counts)


def lattice_cloud(counts, seed, side=6):
    """Integer points with duplicates: squared distances are exact integers, so FPS, ball query
    (``d2 < r^2`` with integer ``r``) and three-NN meet ties everywhere."""
    gen = torch.Generator().manual_seed(seed)
    xyz = torch.randint(0, side, (sum(counts), 3), generator=gen).float()
    return xyz, offsets_of(counts)


def reset_bn(model, seed):
    """Random BN affine and running statistics, so that eval mode is not the identity."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            c = m.num_features
            m.weight.data = torch.rand(c, generator=gen) + 0.5
            m.bias.data = torch.randn(c, generator=gen) * 0.2
            m.running_mean = torch.randn(c, generator=gen) * 0.2
            m.running_var = torch.rand(c, generator=gen) + 0.5


# ------------------------------------------------------------------------------------------------
# references
# ------------------------------------------------------------------------------------------------
def d2(a, b):
    """The ops' float32 squared distance, each step rounded."""
    d = (np.asarray(a, np.float32) - np.asarray(b, np.float32)).astype(np.float32)
    return (d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1]) + d[..., 2] * d[..., 2]


def ref_fps(pts, count):
    """Local rows: row 0, then the largest min squared distance, ties to the lowest row."""
    picks, mind = [0], np.full(len(pts), np.inf, np.float32)
    for _ in range(count - 1):
        mind = np.minimum(mind, d2(pts, pts[picks[-1]]))
        picks.append(int(np.argmax(mind)))                     # first maximum = lowest row
    return picks[:count]


def ref_ball(pts, centre, radius, nsample):
    """Local rows: the first nsample with d2 < r^2 in index order, padded with the first found;
    none found -> row 0."""
    r2 = np.float32(radius) * np.float32(radius)
    found = list(np.nonzero(d2(pts, centre) < r2)[0][:nsample])
    fill = found[0] if found else 0
    return found + [fill] * (nsample - len(found))


def ref_plan(xyz, offsets, levels):
    """Per level: (centres, centre offsets, picked global rows or None, [groups per scale])."""
    out = []
    pts, offs = xyz.numpy(), offsets.tolist()
    for level in levels:
        if level.num_points is None:
            n = offs[1] - offs[0]
            groups = [np.array([[s + j for j in range(n)] for s in offs[:-1]])]
            out.append((np.zeros((len(offs) - 1, 3), np.float32), list(range(len(offs))), None,
                        groups))
            pts, offs = out[-1][0], out[-1][1]
            continue
        picked, groups, new_offs = [], [[] for _ in level.radii], [0]
        for b in range(len(offs) - 1):
            s, e = offs[b], offs[b + 1]
            local = ref_fps(pts[s:e], min(level.num_points, e - s))
            picked += [s + p for p in local]
            new_offs.append(new_offs[-1] + len(local))
            for k, (r, ns) in enumerate(zip(level.radii, level.samples)):
                groups[k] += [[s + i for i in ref_ball(pts[s:e], pts[s + p], r, ns)]
                              for p in local]
        out.append((pts[picked], new_offs, np.array(picked), [np.array(g) for g in groups]))
        pts, offs = out[-1][0], new_offs
    return out


def ref_three_nn(unknown, unknown_offsets, known, known_offsets):
    """Per unknown row: up to 3 (global row, distance) of the same sample, nearest first, ties
    to the lower row (brute force)."""
    result = []
    for b in range(len(unknown_offsets) - 1):
        ks, ke = int(known_offsets[b]), int(known_offsets[b + 1])
        for u in range(int(unknown_offsets[b]), int(unknown_offsets[b + 1])):
            dist = d2(known[ks:ke].numpy(), unknown[u].numpy())
            order = np.argsort(dist, kind="stable")[:3]
            result.append([(ks + int(i), float(np.sqrt(dist[i]))) for i in order])
    return result


def ref_mlp(x, linears, norms, training):
    """Linear (no bias) + BN + ReLU in float64; BN over all rows in training (biased variance)."""
    for linear, norm in zip(linears, norms):
        x = x @ linear.weight.double().t()
        if training:
            mean, var = x.mean(0), x.var(0, unbiased=False)
        else:
            mean, var = norm.running_mean.double(), norm.running_var.double()
        x = (x - mean) / torch.sqrt(var + norm.eps) * norm.weight.double() + norm.bias.double()
        x = torch.relu(x)
    return x


def ref_sa(sa, xyz, features, level, training):
    """Set abstraction the plain way: gather, relative xyz before the features, MLP, max."""
    outs = []
    for scale, idx in zip(sa.scales, level.groups):
        m, k = idx.shape
        rel = xyz.double()[idx] - level.xyz.double()[:, None]
        grouped = torch.cat([rel, features[idx]], dim=2).reshape(m * k, -1)
        outs.append(ref_mlp(grouped, scale.linears, scale.norms, training).view(m, k, -1)
                    .max(dim=1).values)
    return torch.cat(outs, dim=1)


def ref_params(in_channels, mlps, fp):
    def layers(chans):
        return sum(i * o + 2 * o for i, o in zip(chans, chans[1:]))
    backbone, c = 0, in_channels
    for level in mlps:
        backbone += sum(layers((c + 3,) + tuple(m)) for m in level)
        c = sum(m[-1] for m in level)
    return backbone, sum(layers(tuple(f)) for f in fp)


# ------------------------------------------------------------------------------------------------
# plan_geometry
# ------------------------------------------------------------------------------------------------
PLAN_LEVELS = (SALevel(48, (1.0, 2.0), (6, 10)), SALevel(12, (1.5,), (5,)), SALevel(None, (), ()))


@pytest.mark.parametrize("cloud", [lattice_cloud, random_cloud])
def test_plan_geometry_matches_the_brute_force_reference(cloud):
    # sample 1 has fewer points (30) than level 0's num_points (48): it keeps all of them
    xyz, offsets = cloud([90, 30], seed=3)
    geometry = plan_geometry(xyz, offsets, PLAN_LEVELS)
    assert geometry.spec() == PLAN_LEVELS and geometry.xyz is xyz
    expected = ref_plan(xyz, offsets, PLAN_LEVELS)
    assert [len(g.xyz) for g in geometry.levels] == [78, 24, 2]
    for got, (centres, offs, picked, groups) in zip(geometry.levels, expected):
        assert got.offsets.tolist() == offs
        assert torch.equal(got.xyz, torch.from_numpy(np.ascontiguousarray(centres)))
        if picked is None:
            assert got.picked is None
        else:
            assert got.picked.tolist() == picked.tolist()
        assert len(got.groups) == len(groups)
        for g, r in zip(got.groups, groups):
            assert g.tolist() == r.tolist()


def test_group_all_needs_equal_sample_sizes():
    xyz, offsets = random_cloud([20, 21], seed=1)
    with pytest.raises(ValueError, match="group-all"):
        plan_geometry(xyz, offsets, (SALevel(None, (), ()),))


def test_interpolation_matches_brute_force_three_nn():
    xyz, offsets = lattice_cloud([90, 30], seed=5)
    geometry = plan_geometry(xyz, offsets, PLAN_LEVELS[:2])
    points = [(xyz, offsets)] + [(g.xyz, g.offsets) for g in geometry.levels]
    assert len(geometry.interpolation) == 2
    for i, (idx, weight) in enumerate(geometry.interpolation):
        expected = ref_three_nn(*points[i], *points[i + 1])
        assert idx.tolist() == [[r for r, _ in row] for row in expected]
        inv = np.array([[1.0 / (d + 1e-8) for _, d in row] for row in expected])
        np.testing.assert_allclose(weight.numpy(), inv / inv.sum(1, keepdims=True), rtol=1e-6)


def test_interpolation_from_samples_with_fewer_than_three_points():
    # level 1 keeps 4, 2 and 1 points of the three samples: three_nn alone would refuse the last two
    xyz, offsets = random_cloud([10, 2, 1], seed=2)
    geometry = plan_geometry(xyz, offsets, (SALevel(4, (1.0,), (4,)),))
    level = geometry.levels[0]
    idx, weight = geometry.interpolation[0]
    expected = ref_three_nn(xyz, offsets, level.xyz, level.offsets)
    known = torch.randn(len(level.xyz), 5, dtype=torch.float64)
    for n, row in enumerate(expected):
        assert idx[n, :len(row)].tolist() == [r for r, _ in row]
        inv = np.array([1.0 / (d + 1e-8) for _, d in row])
        np.testing.assert_allclose(weight[n, :len(row)].numpy(), inv / inv.sum(), rtol=1e-6)
        assert (weight[n, len(row):] == 0).all()
        mixed = (weight[n, :, None].double() * known[idx[n]]).sum(0)
        torch.testing.assert_close(mixed, (torch.from_numpy(inv / inv.sum())[:, None]
                                           * known[[r for r, _ in row]]).sum(0))
    # and the whole model runs on it
    backbone = PointNet2SAMSG(1, geometry.spec(), [((4, 6),)])
    neck = PointNetFPNeck([(7, 5)])
    out = neck(backbone(torch.rand(13, 1), geometry), geometry)
    assert out.shape == (13, 5) and torch.isfinite(out).all()


# ------------------------------------------------------------------------------------------------
# set abstraction
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("group_all", [False, True])
def test_sa_module_equals_the_plain_computation(training, group_all):
    xyz, offsets = random_cloud([40, 40] if group_all else [60, 45], seed=7, box=(30.0, 3.0, 3.0))
    xyz = xyz + torch.tensor([20.0, -10.0, -1.0])     # far from the origin, as KITTI points are
    spec = SALevel(None, (), ()) if group_all else SALevel(16, (0.6, 1.2), (8, 12))
    mlps = ((5, 7),) if group_all else ((4, 8), (6,))
    level = plan_geometry(xyz, offsets, (spec,), with_interpolation=False).levels[0]
    sa = SAModuleMSG(2, mlps)
    reset_bn(sa, seed=1)
    sa.train(training)
    assert sa.out_channels == sum(m[-1] for m in mlps)
    features = torch.randn(len(xyz), 2, requires_grad=True)
    got = sa(xyz, features, level)
    features64 = features.detach().double().requires_grad_()
    expected = ref_sa(sa, xyz, features64, level, training)
    assert got.shape == (len(level.xyz), sa.out_channels)
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)

    probe = torch.randn(got.shape, dtype=torch.float64)
    (got.double() * probe).sum().backward()
    (expected * probe).sum().backward()
    assert features.grad.abs().sum() > 0
    torch.testing.assert_close(features.grad.double(), features64.grad, atol=1e-4, rtol=1e-4)


def test_sa_module_one_centre_by_hand():
    xyz, offsets = random_cloud([50], seed=11)
    level = plan_geometry(xyz, offsets, (SALevel(8, (0.8,), (6,)),)).levels[0]
    sa = SAModuleMSG(0, ((4,),)).eval()
    reset_bn(sa, seed=2)
    got = sa(xyz, None, level)                        # features None: xyz only
    m = 3
    rows = level.groups[0][m]
    rel = xyz[rows].double() - xyz[level.picked[m]].double()
    norm, weight = sa.scales[0].norms[0], sa.scales[0].linears[0].weight.double()
    h = ((rel @ weight.t() - norm.running_mean.double()) / torch.sqrt(norm.running_var.double()
         + 1e-3) * norm.weight.double() + norm.bias.double())
    torch.testing.assert_close(got[m].double(), torch.relu(h).max(0).values, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------------
# feature propagation
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("training", [False, True])
def test_fp_neck_equals_the_plain_computation(training):
    xyz, offsets = random_cloud([50, 37], seed=13)
    levels = (SALevel(16, (0.5,), (8,)), SALevel(4, (1.0,), (8,)))
    geometry = plan_geometry(xyz, offsets, levels)
    backbone = PointNet2SAMSG(1, levels, [((6,),), ((5, 7),)]).eval()
    features = backbone(torch.rand(len(xyz), 1), geometry)
    assert [f.shape[1] for f in features] == backbone.out_channels == [1, 6, 7]
    neck = PointNetFPNeck([(13, 8), (9, 6, 5)])
    reset_bn(neck, seed=3)
    neck.train(training)
    got = neck(features, geometry)
    assert got.shape == (len(xyz), 5)

    points = [xyz, geometry.levels[0].xyz, geometry.levels[1].xyz]
    point_offsets = [offsets, geometry.levels[0].offsets, geometry.levels[1].offsets]
    known = features[2].detach().double()
    for j, target in enumerate((1, 0)):
        nn3 = ref_three_nn(points[target], point_offsets[target], points[target + 1],
                           point_offsets[target + 1])
        inv = torch.tensor([[1.0 / (d + 1e-8) for _, d in row] for row in nn3], dtype=torch.float64)
        idx = torch.tensor([[r for r, _ in row] for row in nn3])
        mixed = ((inv / inv.sum(1, keepdim=True))[..., None] * known[idx]).sum(1)
        x = torch.cat([mixed, features[target].detach().double()], dim=1)
        mlp = neck.fp_modules[j]
        known = ref_mlp(x, mlp.linears, mlp.norms, training)
    torch.testing.assert_close(got.double(), known, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------------
# the PointRCNN widths
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["teacher", "8x", "16x"])
def test_parameter_counts(name):
    backbone, neck = build(name)
    neck.check_inputs(backbone.out_channels)
    counts = (sum(p.numel() for p in backbone.parameters()),
              sum(p.numel() for p in neck.parameters()))
    assert counts == ref_params(1, *WIDTHS[name])
    assert neck.out_channels == WIDTHS[name][1][-1][-1]
    if name == "teacher":      # prior_art.md 1.4, "my count": backbone 1.03M, FP 1.98M
        assert abs(counts[0] - 1.03e6) < 0.01 * 1.03e6
        assert abs(counts[1] - 1.98e6) < 0.01 * 1.98e6


def test_teacher_and_student_share_one_geometry():
    small = tuple(SALevel(n // 8, lv.radii, lv.samples) for n, lv in
                  zip((4096, 1024, 256, 64), LEVELS))
    xyz, offsets = random_cloud([2048, 1500], seed=17, box=(20.0, 20.0, 3.0))
    intensity = torch.rand(len(xyz), 1)
    shared = plan_geometry(xyz, offsets, small)
    for name, seed in (("teacher", 0), ("16x", 1)):
        torch.manual_seed(seed)
        backbone, neck = build(name, small)
        on_shared = neck(backbone(intensity, shared), shared)
        fresh = plan_geometry(xyz.clone(), offsets.clone(), small)
        assert torch.equal(neck(backbone(intensity, fresh), fresh), on_shared)


def test_full_teacher_forward_backward():
    gen = torch.Generator().manual_seed(0)
    n = 16384
    xyz = torch.rand(2 * n, 3, generator=gen) * torch.tensor([70.0, 80.0, 4.0]) \
        + torch.tensor([0.0, -40.0, -3.0])
    offsets = torch.tensor([0, n, 2 * n])
    intensity = torch.rand(2 * n, 1, generator=gen).requires_grad_()
    torch.manual_seed(0)
    backbone, neck = build("teacher")
    start = time.perf_counter()
    geometry = plan_geometry(xyz, offsets, LEVELS)
    planned = time.perf_counter()
    features = backbone(intensity, geometry)
    out = neck(features, geometry)
    out.square().mean().backward()
    done = time.perf_counter()
    print(f"\nteacher 2 x {n} points, 1 thread: plan {planned - start:.2f} s, "
          f"forward + backward {done - planned:.2f} s")
    assert [tuple(f.shape) for f in features[1:]] == [(8192, 96), (2048, 256), (512, 512),
                                                      (128, 1024)]
    assert out.shape == (2 * n, 128) and torch.isfinite(out).all()
    assert torch.isfinite(intensity.grad).all() and intensity.grad.abs().sum() > 0
    for p in list(backbone.parameters()) + list(neck.parameters()):
        assert p.grad is not None and torch.isfinite(p.grad).all()


# ------------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------------
def test_bad_input_is_a_clear_value_error():
    levels = (SALevel(8, (0.5,), (4,)), SALevel(2, (1.0,), (4,)))
    xyz, offsets = random_cloud([20, 12], seed=19)
    geometry = plan_geometry(xyz, offsets, levels)
    backbone = PointNet2SAMSG(1, levels, [((4,),), ((5,),)])
    with pytest.raises(ValueError, match="features"):
        backbone(torch.rand(len(xyz), 2), geometry)
    with pytest.raises(ValueError, match="offsets"):
        plan_geometry(xyz, torch.tensor([0, 20, 31]), levels)
    with pytest.raises(ValueError, match="offsets"):
        plan_geometry(xyz, torch.tensor([0, 20, 32], dtype=torch.int32), levels)
    with pytest.raises(ValueError, match="radii and samples"):
        SALevel(64, (0.1, 0.5), (16,))
    with pytest.raises(ValueError, match=r"mlps\[1\]"):
        PointNet2SAMSG(1, levels, [((4,),), ((5,), (6,))])
    other = plan_geometry(xyz, offsets, (levels[0], SALevel(3, (1.0,), (4,))))
    with pytest.raises(ValueError, match="geometry"):
        backbone(torch.rand(len(xyz), 1), other)
    with pytest.raises(ValueError, match=r"FP 1 \(fp_channels\[1\]\)"):
        PointNetFPNeck([(9, 6), (8, 4)])(backbone(torch.rand(len(xyz), 1), geometry), geometry)
    with pytest.raises(ValueError, match="with_interpolation"):
        bare = plan_geometry(xyz, offsets, levels, with_interpolation=False)
        PointNetFPNeck([(9, 6), (10, 4)])(backbone(torch.rand(len(xyz), 1), bare), bare)
