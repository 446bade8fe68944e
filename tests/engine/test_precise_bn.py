"""Precise BN: the recomputed statistics against a hand-written reference, what it leaves alone,
the combination across two gloo processes, and the trainer's use of it."""
import json
import os

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from pointdistiller.engine.precise_bn import bn_buffers, recompute_bn_stats, restore_bn_buffers

from trainer_runs import train as _train


def _two_bn_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm1d(3), nn.ReLU(), nn.BatchNorm1d(3))
    for bn in (model[0], model[2]):           # stale statistics, as a short schedule leaves them
        bn.running_mean.fill_(5.0)
        bn.running_var.fill_(0.01)
        bn.momentum = 0.01
    return model


def _batches(n=4, rows=16):
    g = torch.Generator().manual_seed(1)
    return [torch.randn(rows, 3, generator=g) * (i + 1) + i for i in range(n)]


def _reference(batches, eps=1e-5):
    """By hand: layer 1 sees the raw batch; layer 2 sees relu of the batch normalised with its own
    (biased) statistics, gamma 1, beta 0; each running value is the plain mean over batches of the
    batch mean and of the unbiased batch variance."""
    m1, v1, m2, v2 = [], [], [], []
    for x in batches:
        m1.append(x.mean(0))
        v1.append(x.var(0, unbiased=True))
        y = torch.relu((x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + eps))
        m2.append(y.mean(0))
        v2.append(y.var(0, unbiased=True))
    mean = lambda xs: torch.stack(xs).mean(0)
    return mean(m1), mean(v1), mean(m2), mean(v2)


def test_statistics_equal_the_hand_computed_averages():
    model = _two_bn_model()
    batches = _batches()
    used = recompute_bn_stats(model, batches, 10, model)
    assert used == 4
    m1, v1, m2, v2 = _reference(batches)
    torch.testing.assert_close(model[0].running_mean, m1)
    torch.testing.assert_close(model[0].running_var, v1)
    torch.testing.assert_close(model[2].running_mean, m2)
    torch.testing.assert_close(model[2].running_var, v2)


def test_only_the_first_batches_are_used_and_state_is_restored():
    model = _two_bn_model().eval()
    batches = _batches(6)
    draws = []

    def forward(x):
        draws.append(torch.rand(1))            # a stochastic forward (e.g. RoI sampling)
        return model(x)

    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    assert recompute_bn_stats(model, batches, 2, forward) == 2
    torch.testing.assert_close(torch.rand(3), expected_next)     # the global RNG went on unchanged
    assert len(draws) == 2
    assert not model.training
    assert model[0].momentum == 0.01 and model[2].momentum == 0.01
    torch.testing.assert_close(model[0].running_mean, _reference(batches[:2])[0])


def test_nothing_to_do_changes_nothing():
    model = _two_bn_model()
    before = bn_buffers(model)
    assert recompute_bn_stats(model, [], 10, model) == 0
    assert recompute_bn_stats(model, _batches(), 0, model) == 0
    after = bn_buffers(model)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_failing_forward_leaves_the_statistics_as_they_were():
    model = _two_bn_model()
    before = bn_buffers(model)
    calls = []

    def forward(x):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("corrupt batch")
        return model(x)

    with pytest.raises(RuntimeError, match="corrupt batch"):
        recompute_bn_stats(model, _batches(), 4, forward)
    after = bn_buffers(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model[0].momentum == 0.01


def test_eval_output_after_recompute_matches_train_mode():
    """The failure it fixes: stale statistics give eval outputs far from what training saw; after
    recomputing on the same data distribution eval and train mode agree closely."""
    model = _two_bn_model()
    g = torch.Generator().manual_seed(2)
    data = [torch.randn(512, 3, generator=g) * 3 + 2 for _ in range(8)]
    probe = torch.randn(512, 3, generator=g) * 3 + 2
    with torch.no_grad():
        train_out = model.train()(probe)
        stale = model.eval()(probe)
        recompute_bn_stats(model, data, 8, model)
        fresh = model.eval()(probe)
    assert (stale - train_out).abs().max() > 10
    assert (fresh - train_out).abs().mean() < 0.1       # the probe batch's own sampling noise


def test_restore_bn_buffers_puts_back_the_copy():
    model = _two_bn_model()
    saved = bn_buffers(model)
    recompute_bn_stats(model, _batches(), 4, model)
    assert not torch.equal(model[0].running_mean, saved["0.running_mean"])
    restore_bn_buffers(model, saved)
    after = bn_buffers(model)
    assert all(torch.equal(saved[k], after[k]) for k in saved)


def _gloo_worker(rank, port, out_dir):
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}",
                                         rank=rank, world_size=2)
    try:
        model = _two_bn_model()
        batches = _batches(4)
        mine = batches[:3] if rank == 0 else batches[3:]      # 3 batches on rank 0, 1 on rank 1
        recompute_bn_stats(model, mine, 10, model)
        torch.save({k: v for k, v in bn_buffers(model).items()}, os.path.join(out_dir, f"{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_processes_combine_their_statistics(tmp_path):
    """3 batches on rank 0 and 1 on rank 1: both ranks end with what one process computes over the
    4 batches (the hand-written reference), not with the mean of the two ranks' averages."""
    mp.spawn(_gloo_worker, args=(29541, str(tmp_path)), nprocs=2, join=True)
    m1, v1, m2, v2 = _reference(_batches(4))
    for rank in (0, 1):
        got = torch.load(tmp_path / f"{rank}.pt", weights_only=True)
        torch.testing.assert_close(got["0.running_mean"], m1)
        torch.testing.assert_close(got["0.running_var"], v1)
        torch.testing.assert_close(got["2.running_mean"], m2)
        torch.testing.assert_close(got["2.running_var"], v2)


def test_trainer_writes_recomputed_statistics(tmp_path, synth_root, configs):
    """model_final.pt holds statistics recomputed with the final weights (not the moving averages
    of latest.pt), and the run's log says so; precise_bn=0 keeps the moving averages."""
    lines = []
    from pointdistiller.config import load_config
    from pointdistiller.engine.trainer import Trainer

    path = str(configs / "teacher.yaml")
    cfg = load_config(path, (f"data.root={synth_root}", "train.max_iters=3", "train.precise_bn=2"))
    Trainer(cfg, path, str(tmp_path / "on"), device="cpu", log=lines.append, progress=False).run()
    final = torch.load(tmp_path / "on" / "model_final.pt", weights_only=True)["model"]
    latest = torch.load(tmp_path / "on" / "checkpoints" / "latest.pt", weights_only=True)["model"]
    key = "voxel_encoder.norm.running_mean"
    assert not torch.equal(final[key], latest[key])
    assert int(final["voxel_encoder.norm.num_batches_tracked"]) == 2
    assert any("recomputed over 2 training batches" in str(line) for line in lines)

    off = _train(tmp_path, synth_root, configs, sub="off", extra=("train.max_iters=3", "train.precise_bn=0"))
    final = torch.load(off.final_checkpoint, weights_only=True)["model"]
    latest = torch.load(tmp_path / "off" / "checkpoints" / "latest.pt", weights_only=True)["model"]
    assert torch.equal(final[key], latest[key])
    assert json.loads((tmp_path / "off" / "eval.json").read_text())
