"""PointDistiller's behaviour against independent references: nodes selected from a hand-built
importance map, importance taken from the teacher, weights = n_b softmax(s / tau) per sample worked
out by hand, and the loss and its gradient against a dense evaluation written here from the formulas
of method.md (brute-force kNN, explicit edge tensors, BatchNorm from its definition)."""
import math

import pytest
import torch
from torch import nn

import pointdistiller.distill.local as local
from pointdistiller.distill.config import DistillConfig, LocalTermConfig
from pointdistiller.distill.distiller import Distiller
from pointdistiller.distill.local import LocalDistillation
from pointdistiller.detectors.outputs import DetectorOutput, FeatureTap


# --------------------------------------------------------------------------------------------------
# selection and weights, by hand
# --------------------------------------------------------------------------------------------------
def test_selection_of_a_hand_built_importance_map():
    # sample 0: rows 0-5, sample 1: rows 6-9; a budget of 5 splits 3 + 2
    importance = torch.tensor([1.0, 7.0, 3.0, 7.0, 0.5, 2.0,    # ties 7, 7: the lower row first
                               4.0, 9.0, 4.0, 1.0])
    offsets = torch.tensor([0, 6, 10])
    term = LocalDistillation(4, 4, num_nodes=5, k=2, tau=1.0)
    sel = term.select(importance, offsets, torch.randn(10, 4))
    assert sel.idx.tolist() == [1, 3, 2, 7, 6]
    assert sel.query_offsets.tolist() == [0, 3, 5]
    # pooled: the 5 most important rows of the whole batch
    pooled = LocalDistillation(4, 4, num_nodes=5, k=2, tau=1.0, selection="pooled")
    assert pooled.select(importance, offsets, torch.randn(10, 4)).idx.tolist() == [7, 1, 3, 6, 8]


def test_weights_are_n_softmax_over_each_sample():
    importance = torch.tensor([2.0, 0.0, 1.0, 5.0, 3.0])
    offsets = torch.tensor([0, 3, 5])
    tau = 0.5
    sel = LocalDistillation(2, 2, num_nodes=5, k=1, tau=tau).select(importance, offsets,
                                                                    torch.randn(5, 2))
    # sample 0 keeps its 3 rows in the order 2.0, 1.0, 0.0; sample 1 its 2 rows 5.0, 3.0
    e0 = [math.exp(v / tau) for v in (2.0, 1.0, 0.0)]
    e1 = [math.exp(v / tau) for v in (5.0, 3.0)]
    expected = [3 * e / sum(e0) for e in e0] + [2 * e / sum(e1) for e in e1]
    assert sel.weights.tolist() == pytest.approx(expected, rel=1e-6)
    flat = LocalDistillation(2, 2, num_nodes=5, k=1, tau=tau, reweight=False)
    assert flat.select(importance, offsets, torch.randn(5, 2)).weights.tolist() == [1.0] * 5


def test_neighbours_are_nearest_in_the_teacher_space():
    # one sample on a line: rows at x = 0, 1, 3, 5.5, 10; the centre x = 3 (the most important)
    space = torch.tensor([[0.0], [1.0], [3.0], [5.5], [10.0]])
    importance = torch.tensor([0.0, 0.0, 5.0, 0.0, 0.0])
    term = LocalDistillation(1, 1, num_nodes=1, k=3, tau=1.0)
    sel = term.select(importance, torch.tensor([0, 5]), space)
    assert sel.idx.tolist() == [2]
    assert sel.nbr.tolist() == [[2, 1, 3]]        # squared distances 0, 4, 6.25 (then 9 and 49)


# --------------------------------------------------------------------------------------------------
# importance comes from the teacher
# --------------------------------------------------------------------------------------------------
class _Fixed(nn.Module):
    """A stand-in detector whose only feature tap is a fixed BEV map ``[B, C, H, W]``."""

    def __init__(self, bev: torch.Tensor):
        super().__init__()
        self.bev = nn.Parameter(bev)

    def forward(self, batch, head=True):
        return DetectorOutput(head=None, features={"bev": self.bev})

    def loss(self, batch, out):
        return {"total": out.features["bev"].sum() * 0}


def test_importance_is_the_teachers_channel_max(monkeypatch):
    gen = torch.Generator().manual_seed(0)
    teacher_bev = torch.randn(2, 6, 4, 5, generator=gen)
    student_bev = torch.randn(2, 3, 4, 5, generator=gen)
    seen = {}
    select = LocalDistillation.select

    def spy(self, importance, offsets, space):
        seen["importance"] = importance.clone()
        sel = select(self, importance, offsets, space)
        seen["idx"] = sel.idx.clone()
        return sel

    monkeypatch.setattr(LocalDistillation, "select", spy)
    cfg = DistillConfig(local=[LocalTermConfig(feature="bev", importance="channel_max", num_nodes=8,
                                               k=3, tau=1.0)])
    distiller = Distiller(_Fixed(student_bev), _Fixed(teacher_bev), cfg,
                          {"bev": FeatureTap("bev", 6, "bev")}, {"bev": FeatureTap("bev", 3, "bev")})
    distiller(batch=None)
    # independent: node (b, y, x) is row b*20 + y*5 + x; its importance the max over the teacher's 6
    expected = teacher_bev.amax(dim=1).reshape(-1)
    assert torch.equal(seen["importance"], expected)
    student_rank = student_bev.amax(dim=1).reshape(2, 20).argsort(dim=1, descending=True)[:, :4]
    teacher_rank = teacher_bev.amax(dim=1).reshape(2, 20).argsort(dim=1, descending=True)[:, :4]
    assert not torch.equal(student_rank, teacher_rank)    # the two would select differently
    assert seen["idx"].tolist() == (teacher_rank + torch.tensor([[0], [20]])).reshape(-1).tolist()


# --------------------------------------------------------------------------------------------------
# the loss against a dense evaluation written from the formulas
# --------------------------------------------------------------------------------------------------
def _dense_loss(term: LocalDistillation, teacher, student, importance, offsets):
    """method.md, literally: per-sample top-N, brute-force kNN in the teacher space (squared
    Euclidean distance in float64, ties to the lower row), edges cat(f_j, f_i), conv1x1, BatchNorm
    with the batch mean and biased variance over all (node, neighbour) pairs, ReLU, and
    lambda * mean(w_i (G_T - G_S)^2)."""
    idx, weights, nbrs = [], [], []
    counts = (offsets[1:] - offsets[:-1]).tolist()
    share = term.num_nodes // len(counts)
    for b, start in enumerate(offsets[:-1].tolist()):
        n_b = min(share, counts[b])
        rows = list(range(start, start + counts[b]))
        ranked = sorted(rows, key=lambda r: (-float(importance[r]), r))[:n_b]
        s = torch.tensor([float(importance[r]) for r in ranked], dtype=torch.float64)
        weights.append(n_b * torch.softmax(s / term.tau, dim=0))
        for i in ranked:
            dist = [(float(((teacher[j].double() - teacher[i].double()) ** 2).sum()), j) for j in rows]
            nbrs.append([j for _, j in sorted(dist)[:term.k]])
        idx += ranked
    w = torch.cat(weights).float()

    def graph(layer, feats):
        edges = torch.stack([torch.stack([torch.cat([feats[j], feats[i]]) for j in nb])
                             for i, nb in zip(idx, nbrs)])                         # [Q, K, 2C]
        x = edges @ layer.conv.weight[:, :, 0].t()
        if layer.conv.bias is not None:
            x = x + layer.conv.bias
        mean = x.mean(dim=(0, 1))
        var = ((x - mean) ** 2).mean(dim=(0, 1))
        return torch.relu((x - mean) / torch.sqrt(var + layer.bn.eps) * layer.bn.weight + layer.bn.bias)

    g_t = graph(term.teacher_graph, teacher)
    g_s = graph(term.student_graph, student)
    return term.loss_weight * (w[:, None, None] * (g_t - g_s) ** 2).mean()


@pytest.mark.parametrize("use_numba", [True, False], ids=["numba", "torch"])
@pytest.mark.parametrize("graph_init", ["torch", "authors"])
def test_loss_and_gradient_equal_the_dense_formulas(monkeypatch, use_numba, graph_init):
    monkeypatch.setattr(local, "CPU_KERNEL", use_numba)
    gen = torch.Generator().manual_seed(3)
    sizes = (30, 45)
    teacher = torch.randn(sum(sizes), 6, generator=gen)
    student = torch.randn(sum(sizes), 4, generator=gen, requires_grad=True)
    importance = torch.randint(0, 6, (sum(sizes),), generator=gen).float()   # many ties
    offsets = torch.tensor([0, sizes[0], sum(sizes)])
    torch.manual_seed(0)
    term = LocalDistillation(6, 4, num_nodes=20, k=5, tau=2.0, graph_init=graph_init)
    loss, _ = term(teacher, student, importance, offsets)
    loss.backward()
    grad = student.grad.clone()
    student.grad = None
    expected = _dense_loss(term, teacher, student, importance, offsets)
    expected.backward()
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)
    torch.testing.assert_close(grad, student.grad, rtol=1e-4, atol=1e-6)
    assert (term.teacher_graph.conv.bias is None) == (graph_init == "authors")


def _term_and_nodes(teacher_graph, seed=4):
    gen = torch.Generator().manual_seed(seed)
    teacher = torch.randn(60, 6, generator=gen)
    student = torch.randn(60, 4, generator=gen, requires_grad=True)
    importance = torch.rand(60, generator=gen)
    torch.manual_seed(0)
    term = LocalDistillation(6, 4, num_nodes=16, k=5, tau=1.0, teacher_graph=teacher_graph)
    return term, teacher, student, importance, torch.tensor([0, 25, 60])


def test_a_trained_teacher_graph_has_a_zero_loss_for_any_features():
    # the degenerate minimum the frozen teacher graph removes: BN scales 0, equal shifts
    term, teacher, student, importance, offsets = _term_and_nodes("trained")
    with torch.no_grad():
        for layer in (term.teacher_graph, term.student_graph):
            layer.bn.weight.zero_()
            layer.bn.bias.fill_(0.3)
    loss, _ = term(teacher, student, importance, offsets)
    assert float(loss) == 0.0
    loss, _ = term(teacher * 5 + 1, torch.randn(60, 4), importance, offsets)
    assert float(loss) == 0.0


@pytest.mark.parametrize("teacher_graph", ["trained", "frozen"])
def test_frozen_teacher_graph_keeps_its_weights(teacher_graph):
    term, teacher, student, importance, offsets = _term_and_nodes(teacher_graph)
    before = {k: v.clone() for k, v in term.teacher_graph.state_dict().items() if "running" not in k
              and "num_batches" not in k}
    params = [p for p in term.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params + [student], lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        loss, _ = term(teacher, student, importance, offsets)
        loss.backward()
        opt.step()
    after = term.teacher_graph.state_dict()
    changed = {k for k, v in before.items() if not torch.equal(v, after[k])}
    if teacher_graph == "frozen":
        assert changed == set()
        assert all(p.grad is None for p in term.teacher_graph.parameters())
        assert term.student_graph.conv.weight.grad.abs().sum() > 0 and student.grad.abs().sum() > 0
    else:
        assert changed == set(before)
    with pytest.raises(ValueError, match="teacher_graph"):
        LocalDistillation(6, 4, teacher_graph="fixed")
