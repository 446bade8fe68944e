"""Local distillation: the factorized/fused evaluation against the explicit edge tensors and the
authors' dense formulation, the per-sample selection, reweighting and gradient flow."""
import copy

import pytest
import torch
import torch.nn.functional as F

import pointdistiller.distill.local as local
from pointdistiller.distill.dense_reference import dense_local_distillation
from pointdistiller.distill.local import GraphLayer, LocalDistillation, bev_to_nodes, effective_count


def close(actual, expected, rel=1e-5):
    """|actual - expected| <= rel * max|expected| elementwise (relative to the tensor's scale)."""
    scale = expected.detach().abs().max().clamp_min(1e-12)
    err = (actual.detach() - expected.detach()).abs().max()
    assert err <= rel * scale, f"max error {float(err):.3g} vs scale {float(scale):.3g}"


def randomise_bn(module, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=gen))
                m.bias.copy_(torch.rand(m.bias.shape, generator=gen) - 0.5)
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) - 0.5)
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))
    return module


def problem(sizes=(120, 180), c_t=16, c_s=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    teacher = torch.randn(n, c_t, generator=gen)
    student = torch.randn(n, c_s, generator=gen).requires_grad_()
    importance = torch.rand(n, generator=gen) * 10
    offsets = torch.tensor([0] + list(sizes)).cumsum(0)
    return teacher, student, importance, offsets


def run(module, teacher, student, importance, offsets, **kw):
    """(loss, grad of the student features, grads of the module's parameters)."""
    student.grad = None
    module.zero_grad(set_to_none=True)
    loss, stats = module(teacher, student, importance, offsets, **kw)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in module.named_parameters()}
    return loss.detach(), student.grad.clone(), grads, stats


@pytest.fixture(params=[True, False], ids=["numba", "torch"])
def cpu_kernel(request, monkeypatch):
    """Runs a test with the numba CPU kernel and with the chunked PyTorch pass (the GPU's)."""
    monkeypatch.setattr(local, "CPU_KERNEL", request.param)
    monkeypatch.setattr(local, "_CHUNK_ELEMENTS", {"cpu": 4096, "cuda": 1 << 24})  # several chunks
    return request.param


# ------------------------------------------------------------------------------------------------
# factorized == gather
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 5, 16])
def test_graph_layer_factorized_equals_gather(k):
    torch.manual_seed(0)
    layer = randomise_bn(GraphLayer(12, 6))
    feats = torch.randn(80, 12, requires_grad=True)
    nbr = torch.randint(0, 80, (30, k))
    centre = torch.randint(0, 80, (30,))
    outs = {}
    for mode in ("factorized", "gather"):
        feats.grad = None
        layer.zero_grad()
        out = layer(feats, nbr, centre, mode)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        outs[mode] = (out.detach(), feats.grad.clone(), layer.conv.weight.grad.clone())
    assert outs["gather"][0].shape == (30, k, 6)
    for a, b in zip(outs["factorized"], outs["gather"]):
        close(a, b)


@pytest.mark.parametrize("pool", ["none", "max"])
@pytest.mark.parametrize("k", [1, 7, 32])
@pytest.mark.parametrize("selection", ["per_sample", "pooled"])
@pytest.mark.parametrize("train", [True, False], ids=["bn_train", "bn_eval"])
def test_loss_factorized_equals_gather(cpu_kernel, pool, k, selection, train):
    teacher, student, importance, offsets = problem()
    torch.manual_seed(1)
    fused = randomise_bn(LocalDistillation(16, 8, num_nodes=50, k=k, tau=0.5, pool=pool,
                                           selection=selection)).train(train)
    gather = copy.deepcopy(fused)
    gather.edge_mode = "gather"
    loss_f, grad_f, params_f, stats = run(fused, teacher, student, importance, offsets)
    loss_g, grad_g, params_g, _ = run(gather, teacher, student, importance, offsets)
    assert stats["k"] == k and stats["selected"] == 50
    close(loss_f, loss_g)
    close(grad_f, grad_g)
    assert grad_f.abs().sum() > 0
    for name in params_g:
        if name.endswith("conv.bias") and train:
            # BN with batch statistics cancels the conv bias: both gradients are rounding noise
            assert params_f[name].abs().max() < 1e-5 and params_g[name].abs().max() < 1e-5
            continue
        close(params_f[name], params_g[name])
    for (name, a), (_, b) in zip(fused.named_buffers(), gather.named_buffers()):
        close(a.float(), b.float())   # running statistics updated alike


def test_loss_without_gradients_matches(cpu_kernel):
    teacher, student, importance, offsets = problem()
    module = LocalDistillation(16, 8, num_nodes=40, k=8).eval()
    with torch.no_grad():
        loss_nograd, _ = module(teacher, student, importance, offsets)
    assert loss_nograd.grad_fn is None
    loss, _ = module(teacher, student, importance, offsets)
    close(loss_nograd, loss.detach())


# ------------------------------------------------------------------------------------------------
# against the authors' dense formulation and an independent per-sample dense computation
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pool", ["none", "max"])
@pytest.mark.parametrize("reweight", [True, False])
def test_pooled_gather_equals_dense_reference(pool, reweight):
    teacher, student, importance, offsets = problem(sizes=(150, 250), c_t=24, c_s=12, seed=3)
    torch.manual_seed(2)
    module = LocalDistillation(24, 12, num_nodes=64, k=20, tau=0.3, pool=pool, reweight=reweight,
                               selection="pooled", edge_mode="gather")
    dense = copy.deepcopy(module)
    loss, grad, params, _ = run(module, teacher, student, importance, offsets)
    student.grad = None
    ref = dense_local_distillation(dense, teacher, student, importance)
    ref.backward()
    close(loss, ref.detach())
    close(grad, student.grad)
    close(params["student_graph.conv.weight"], dense.student_graph.conv.weight.grad)
    # and the default factorized evaluation of the same pooled graph
    module.edge_mode = "factorized"
    close(run(module, teacher, student, importance, offsets)[0], ref.detach())


def dense_per_sample(module, teacher, student, importance, offsets):
    """Per-sample top-N, kNN by cdist + topk inside each sample, explicit edges, BN over the whole
    batch's edges, per-sample weights ``n_b softmax(s / tau)``: written from the method's text."""
    sizes = (offsets[1:] - offsets[:-1]).tolist()
    nonempty = [b for b, n in enumerate(sizes) if n > 0]
    share, rest = divmod(module.num_nodes, len(nonempty))
    budgets = {b: min(sizes[b], share + (j < rest)) for j, b in enumerate(nonempty)}
    k = min([module.k] + [sizes[b] for b in nonempty])
    centres, nbrs, weights = [], [], []
    for b, n_b in budgets.items():
        start, end = int(offsets[b]), int(offsets[b + 1])
        s = importance[start:end]
        top = torch.topk(s, n_b).indices
        dist = torch.cdist(teacher[start + top], teacher[start:end]) ** 2
        nbrs.append(torch.topk(dist, k, largest=False).indices + start)
        centres.append(top + start)
        weights.append(n_b * torch.softmax(s[top] / module.tau, 0))
    centre, nbr, w = torch.cat(centres), torch.cat(nbrs), torch.cat(weights)

    def graph(layer, f):
        edges = torch.cat([f[nbr], f[centre][:, None, :].expand(-1, k, -1)], dim=2)
        return F.relu(layer.bn(layer.conv(edges.permute(0, 2, 1))))       # [Q, C', K]

    diff = graph(module.teacher_graph, teacher) - graph(module.student_graph, student)
    return module.loss_weight * (diff.pow(2) * w[:, None, None]).mean()


@pytest.mark.parametrize("sizes", [(120, 180, 90), (40, 0, 300)])
def test_per_sample_factorized_equals_independent_dense(cpu_kernel, sizes):
    teacher, student, importance, offsets = problem(sizes=sizes, seed=4)
    torch.manual_seed(3)
    module = LocalDistillation(16, 8, num_nodes=61, k=12, tau=0.7)
    ref_module = copy.deepcopy(module)
    loss, grad, params, _ = run(module, teacher, student, importance, offsets)
    student.grad = None
    ref = dense_per_sample(ref_module, teacher, student, importance, offsets)
    ref.backward()
    close(loss, ref.detach())
    close(grad, student.grad)
    close(params["teacher_graph.conv.weight"], ref_module.teacher_graph.conv.weight.grad)


# ------------------------------------------------------------------------------------------------
# selection, budgets, weights
# ------------------------------------------------------------------------------------------------
def select(module, sizes, importance=None, channels=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    space = torch.randn(n, channels, generator=gen)
    if importance is None:
        importance = torch.rand(n, generator=gen)
    offsets = torch.tensor([0] + list(sizes)).cumsum(0)
    return module.select(importance, offsets, space), offsets, space


def test_per_sample_neighbours_stay_in_their_sample():
    module = LocalDistillation(6, 4, num_nodes=30, k=10)
    sel, offsets, _ = select(module, (50, 70, 40))
    for b in range(3):
        lo, hi = int(sel.query_offsets[b]), int(sel.query_offsets[b + 1])
        rows = torch.cat([sel.idx[lo:hi, None], sel.nbr[lo:hi]], dim=1)
        assert ((rows >= offsets[b]) & (rows < offsets[b + 1])).all()
    assert (sel.nbr[:, 0] == sel.idx).all()      # the centre is its own nearest neighbour
    pooled = LocalDistillation(6, 4, num_nodes=30, k=10, selection="pooled")
    psel, _, _ = select(pooled, (50, 70, 40))
    assert psel.query_offsets.tolist() == [0, 30]


def test_budgets_split_evenly_and_pick_the_most_important():
    module = LocalDistillation(6, 4, num_nodes=10, k=4)
    sel, offsets, _ = select(module, (30, 30, 30))
    assert sel.query_offsets.tolist() == [0, 4, 7, 10]   # remainder to the first samples
    imp = torch.arange(90.0)
    sel, _, _ = select(module, (30, 30, 30), importance=imp)
    assert sel.idx.tolist() == [29, 28, 27, 26, 59, 58, 57, 89, 88, 87]


def test_small_and_empty_samples_and_k_clipping():
    module = LocalDistillation(6, 4, num_nodes=20, k=16)
    sel, _, _ = select(module, (3, 50))            # the small sample takes only its 3 nodes
    assert sel.query_offsets.tolist() == [0, 3, 13] and sel.nbr.shape == (13, 3)  # K -> 3
    sel, offsets, _ = select(module, (0, 40, 0, 30))
    assert sel.query_offsets.tolist() == [0, 0, 10, 10, 20] and sel.nbr.shape[1] == 16
    assert ((sel.nbr[:10] >= 0) & (sel.nbr[:10] < 40)).all()
    with pytest.raises(ValueError, match="empty feature map"):
        select(module, (0, 0))


def test_weights_mean_one_and_reweight_off():
    module = LocalDistillation(6, 4, num_nodes=24, k=4, tau=0.2)
    sel, _, _ = select(module, (40, 60))
    assert torch.allclose(sel.weights[:12].mean(), torch.tensor(1.0))
    assert torch.allclose(sel.weights[12:].mean(), torch.tensor(1.0))
    assert (sel.weights[:12].diff() <= 1e-6).all()     # importance-descending -> weight-descending
    module.reweight = False
    sel, _, _ = select(module, (40, 60))
    assert torch.equal(sel.weights, torch.ones(24))


def test_tau_effect_on_effective_count():
    counts = torch.randperm(64).float() + 1           # distinct integer points-per-pillar
    module = LocalDistillation(6, 4, num_nodes=32, k=4, tau=0.01)
    sel, _, _ = select(module, (64,), importance=counts)
    assert effective_count(sel.weights) == pytest.approx(1.0, abs=1e-6)   # ~one-hot (e^-100)
    module.tau = 1e4
    sel, _, _ = select(module, (64,), importance=counts)
    assert effective_count(sel.weights) == pytest.approx(32, rel=1e-3)
    assert effective_count(torch.ones(7)) == pytest.approx(7)
    assert effective_count(torch.tensor([3.0, 0.0, 0.0])) == pytest.approx(1)
    assert effective_count(torch.zeros(0)) == 0.0


def test_knn_in_coordinates():
    teacher, student, importance, offsets = problem(sizes=(60, 60))
    coords = torch.randn(120, 3)
    module = LocalDistillation(16, 8, num_nodes=10, k=5, knn_space="coords")
    sel = module.select(importance, offsets, coords)
    for q in range(10):
        b = int(sel.idx[q] >= 60)
        d = ((coords[60 * b:60 * (b + 1)] - coords[sel.idx[q]]) ** 2).sum(1)
        expected = torch.topk(d, 5, largest=False).indices + 60 * b
        assert set(sel.nbr[q].tolist()) == set(expected.tolist())
    loss, stats = module(teacher, student, importance, offsets, coords=coords)
    assert torch.isfinite(loss) and stats["k"] == 5
    with pytest.raises(ValueError, match="coordinates"):
        module(teacher, student, importance, offsets)


# ------------------------------------------------------------------------------------------------
# gradient flow, errors
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("edge_mode", ["factorized", "gather"])
def test_gradients_reach_student_and_graph_layers_not_teacher(edge_mode):
    teacher, student, importance, offsets = problem()
    teacher.requires_grad_()
    module = LocalDistillation(16, 8, num_nodes=40, k=8, edge_mode=edge_mode)
    loss, _ = module(teacher, student, importance, offsets)
    loss.backward()
    assert teacher.grad is None
    assert student.grad is not None and student.grad.abs().sum() > 0
    for name, p in module.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if not name.endswith("conv.bias"):
            assert p.grad.abs().sum() > 0, name


def test_argument_errors():
    teacher, student, importance, offsets = problem()
    module = LocalDistillation(16, 8, num_nodes=10, k=4)
    with pytest.raises(ValueError, match="one row per node"):
        module(teacher[:-1], student, importance, offsets)
    with pytest.raises(ValueError, match="offsets"):
        module(teacher, student, importance, offsets[:-1])
    with pytest.raises(ValueError, match="graph layer expects"):
        module(teacher[:, :8], student, importance, offsets)
    for kwargs in ({"pool": "mean"}, {"selection": "batch"}, {"edge_mode": "dense"},
                   {"knn_space": "student"}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            LocalDistillation(16, 8, **kwargs)
    with pytest.raises(ValueError, match="tau"):
        LocalDistillation(16, 8, tau=0.0)


def test_bev_to_nodes():
    bev = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    nodes, offsets, coords = bev_to_nodes(bev)
    assert nodes.shape == (40, 3) and offsets.tolist() == [0, 20, 40] and coords.shape == (40, 2)
    assert torch.equal(nodes[20 + 2 * 5 + 3], bev[1, :, 2, 3])
    assert coords[20 + 2 * 5 + 3].tolist() == [2.0, 3.0]


@pytest.mark.cuda
@pytest.mark.parametrize("pool", ["none", "max"])
def test_cuda_matches_cpu(pool):
    teacher, student, importance, offsets = problem(sizes=(300, 500), c_t=32, c_s=16)
    torch.manual_seed(0)
    cpu = LocalDistillation(32, 16, num_nodes=200, k=32, tau=0.5, pool=pool)
    gpu = copy.deepcopy(cpu).cuda()
    loss_c, grad_c, params_c, _ = run(cpu, teacher, student, importance, offsets)
    student_g = student.detach().cuda().requires_grad_()
    loss_g, grad_g, params_g, _ = run(gpu, teacher.cuda(), student_g, importance.cuda(),
                                      offsets.cuda())
    close(loss_g.cpu(), loss_c)
    close(grad_g.cpu(), grad_c, rel=1e-4)
    close(params_g["student_graph.conv.weight"].cpu(), params_c["student_graph.conv.weight"],
          rel=1e-4)
