"""Trainer: a real (tiny) training run on synthetic scenes, exact resume, work-dir and teacher
checks, distillation from a trained teacher, and 2-process DDP on CPU (gloo)."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from pointdistiller.engine.errors import RunError

from trainer_runs import REPO, train as _train

def test_training_run_writes_everything(tmp_path, synth_root, configs):
    result = _train(tmp_path, synth_root, configs, extra=("train.max_iters=3",))
    assert result.iterations == 3
    run = tmp_path / "run"
    for f in ("config.yaml", "model_final.pt", "checkpoints/latest.pt", "eval.json", "log.jsonl"):
        assert (run / f).is_file(), f
    assert any(n.startswith("events.out.tfevents") for n in os.listdir(run / "tb"))
    metrics = json.loads((run / "eval.json").read_text())
    assert set(metrics) == {"strict", "loose"}
    assert len(os.listdir(run / "results" / "val")) == 3   # 6 frames, half val
    steps = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps if "eval" not in s] == [1, 2, 3]
    assert all(torch.isfinite(torch.tensor(s["total"])) for s in steps if "total" in s)
    # the gradient's norm before clipping, every logged step
    assert all(0 < s["grad_norm"] < float("inf") for s in steps if "total" in s)
    # the dead-ReLU count of the evaluation, over the model's own nn.ReLU layers
    units = next(s["units"] for s in steps if "eval" in s)
    from pointdistiller.config import load_config
    from pointdistiller.detectors.build import build_detector
    model = build_detector(load_config(str(run / "config.yaml")).model)
    relus = {n for n, m in model.named_modules() if isinstance(m, torch.nn.ReLU)}
    assert 0 <= units["dead"] <= units["total"] and units["total"] > 0
    assert sum(units["layers"].values()) == units["dead"] and set(units["layers"]) <= relus


def test_loss_decreases_over_a_short_run(tmp_path, synth_root, configs):
    """Without augmentation the 3 training scenes are fitted: the loss falls clearly in 20 steps."""
    no_aug = ("data.augment.gt_sampling=false", "data.augment.object_noise=false",
              "data.augment.flip_x_prob=0.0", "data.augment.global_rotation=0.0",
              "data.augment.global_scale=[1.0, 1.0]")
    _train(tmp_path, synth_root, configs, extra=("train.epochs=10",) + no_aug)
    steps = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    totals = [s["total"] for s in steps if "total" in s]
    assert len(totals) == 20
    assert sum(totals[-3:]) < 0.8 * sum(totals[:3])


def test_resume_gives_the_same_weights(tmp_path, synth_root, configs):
    # the evaluation after epoch 1 recomputes the BN statistics (precise BN) for itself only: the
    # straight run goes on from the moving averages, as the resumed one does from latest.pt
    extra = ("train.checkpoint_interval=1", "train.eval_interval=1")
    straight = _train(tmp_path, synth_root, configs, sub="straight", extra=extra)
    _train(tmp_path, synth_root, configs, sub="interrupted", extra=extra, stop_at=2)
    assert not (tmp_path / "interrupted" / "model_final.pt").exists()
    resumed = _train(tmp_path, synth_root, configs, sub="interrupted", extra=extra, resume=True)
    assert resumed.iterations == straight.iterations
    a = torch.load(straight.final_checkpoint, weights_only=True)["model"]
    b = torch.load(resumed.final_checkpoint, weights_only=True)["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_work_dir_of_another_run_is_refused(tmp_path, synth_root, configs):
    _train(tmp_path, synth_root, configs, extra=("train.max_iters=1",))
    before = (tmp_path / "run" / "model_final.pt").stat().st_mtime_ns
    with pytest.raises(RunError, match="holds another run"):
        _train(tmp_path, synth_root, configs, extra=("train.max_iters=1",))
    with pytest.raises(RunError, match="config differs"):
        _train(tmp_path, synth_root, configs, extra=("train.max_iters=2",), resume=True)
    assert (tmp_path / "run" / "model_final.pt").stat().st_mtime_ns == before


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory, synth_root, configs):
    out = tmp_path_factory.mktemp("teacher")
    return _train(out, synth_root, configs, extra=("train.max_iters=2",)).final_checkpoint


def test_distillation_run(tmp_path, synth_root, configs, teacher_ckpt):
    result = _train(tmp_path, synth_root, configs, "student_kd.yaml", "kd", ("train.max_iters=2",),
                    teacher=teacher_ckpt)
    steps = [json.loads(line) for line in (tmp_path / "kd" / "log.jsonl").read_text().splitlines()]
    logged = [s for s in steps if "kd" in s]
    assert len(logged) == 2 and all(s["kd"] > 0 for s in logged)
    assert all(s["local0_effective_weighted"] >= 1.0 for s in logged)
    saved = torch.load(result.final_checkpoint, weights_only=True)["model"]
    student = _train(tmp_path, synth_root, configs, "student.yaml", "plain", ("train.max_iters=1",))
    assert set(saved) == set(torch.load(student.final_checkpoint, weights_only=True)["model"])


def test_distillation_warmup_ramps_the_kd_loss_by_step(tmp_path, synth_root, configs, teacher_ckpt):
    """distill.warmup_iters = 4: the step optimises det + (step + 1) / 4 of the distillation terms
    (the logged kd_* terms stay at full weight); a resumed run continues the ramp at its step."""
    _train(tmp_path, synth_root, configs, "student_kd.yaml", "warm",
           ("train.max_iters=3", "distill.warmup_iters=4"), teacher=teacher_ckpt, stop_at=2)
    _train(tmp_path, synth_root, configs, "student_kd.yaml", "warm",
           ("train.max_iters=3", "distill.warmup_iters=4"), teacher=teacher_ckpt, resume=True)
    logged = [json.loads(line) for line in (tmp_path / "warm" / "log.jsonl").read_text().splitlines()]
    logged = {s["step"]: s for s in logged if "kd" in s}
    assert sorted(logged) == [1, 2, 3]
    for step, scale in ((1, 0.25), (2, 0.5), (3, 0.75)):
        s = logged[step]
        terms = sum(v for k, v in s.items() if k.startswith("kd_"))
        assert s["warmup_scale"] == scale
        assert s["kd"] == pytest.approx(scale * terms, rel=1e-5)
        assert s["total"] == pytest.approx(s["det"] + scale * terms, rel=1e-5)


def test_teacher_checks(tmp_path, synth_root, configs, teacher_ckpt):
    def kd(sub, extra=(), teacher=teacher_ckpt):
        return _train(tmp_path, synth_root, configs, "student_kd.yaml", sub,
                      ("train.max_iters=1",) + tuple(extra), teacher=teacher)

    with pytest.raises(RunError, match="sha256"):
        kd("a", ("teacher.sha256=" + "ab" * 32,))
    with pytest.raises(RunError, match="not found"):
        kd("b", teacher=str(tmp_path / "missing.pt"))
    other = tmp_path / "other.pt"          # weights of another architecture
    state = torch.load(teacher_ckpt, weights_only=True)
    state["model"] = {k: v[..., :1] if v.dim() > 1 else v for k, v in state["model"].items()}
    torch.save(state, other)
    with pytest.raises(RunError, match="does not match its config"):
        kd("c", teacher=str(other))
    with pytest.raises(RunError, match="voxelize differently"):
        kd("d", ("model.max_points_per_voxel=8",))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(RunError, match="not a readable checkpoint"):
        kd("e", teacher=str(bad))
    with pytest.raises(RunError, match="no feature tap"):
        kd("f", ("distill.local=[{feature: nope}]",))
    for sub in "abcdef":    # a refused run leaves no work dir behind: the same command can be rerun
        assert not (tmp_path / sub).exists()


@pytest.mark.slow
def test_sigkill_then_resume(tmp_path, synth_root, configs):
    """A run killed with SIGKILL mid-training resumes from its last checkpoint and finishes."""
    args = [sys.executable, "-m", "pointdistiller.cli.train", str(configs / "teacher.yaml"),
            "--work-dir", str(tmp_path / "run"), "--device", "cpu", "--no-progress",
            "--set", f"data.root={synth_root}", "--set", "train.checkpoint_interval=1",
            "--set", "train.epochs=4"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = tmp_path / "run" / "checkpoints" / "latest.pt"
    deadline = time.time() + 120
    while not latest.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert latest.exists()
    done = subprocess.run(args + ["--resume"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "run" / "model_final.pt").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("config, port", [("teacher.yaml", 29533), ("rcnn_teacher.yaml", 29534)],
                         ids=["pointpillars", "point_rcnn"])
def test_ddp_two_gloo_processes(tmp_path, synth_root, configs, config, port):
    args = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
            "-m", "pointdistiller.cli.train", str(configs / config),
            "--work-dir", str(tmp_path / "ddp"), "--device", "cpu", "--no-progress",
            "--set", f"data.root={synth_root}", "--set", "train.max_iters=2"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert (tmp_path / "ddp" / "model_final.pt").is_file()
    assert (tmp_path / "ddp" / "eval.json").is_file()


def test_point_rcnn_teacher_then_distilled_student(tmp_path, synth_root, configs):
    """The point-based path end to end: the loader's point collator, both stages' losses, KITTI
    result files, then PointDistiller on the FP tap from the trained teacher's checkpoint."""
    teacher = _train(tmp_path, synth_root, configs, name="rcnn_teacher.yaml", sub="teacher",
                     extra=("train.max_iters=2",))
    steps = [json.loads(line) for line in (tmp_path / "teacher" / "log.jsonl").read_text().splitlines()]
    assert {"rpn_cls", "rpn_box", "rcnn_cls", "rcnn_box", "rcnn_corner"} <= set(steps[0])
    assert len(os.listdir(tmp_path / "teacher" / "results" / "val")) == 3
    student = _train(tmp_path, synth_root, configs, name="rcnn_student_kd.yaml", sub="student",
                     extra=("train.max_iters=2",), teacher=str(teacher.final_checkpoint))
    assert student.iterations == 2
    steps = [json.loads(line) for line in (tmp_path / "student" / "log.jsonl").read_text().splitlines()]
    assert all(s["kd_local0"] > 0 and s["local0_selected"] == 512 for s in steps if "total" in s)
    # a voxel teacher cannot teach a point student
    with pytest.raises(RunError, match="teacher takes voxels and the student points"):
        _train(tmp_path, synth_root, configs, name="rcnn_student_kd.yaml", sub="mixed",
               extra=("train.max_iters=1", f"teacher.config={configs / 'teacher.yaml'}"))



def test_a_run_started_before_a_new_config_field_resumes(tmp_path):
    """A work dir written before distill.warmup_iters (and local[].teacher_graph) existed resumes
    when the field holds the value that behaves as the run did; any other value is refused."""
    import yaml

    from pointdistiller.engine.trainer import _check_work_dir

    old = {"model": {"type": "second"}, "train": {"lr": 0.001},
           "distill": {"teacher_mode": "eval", "local": [{"feature": "backbone.0", "tau": 1.0}]}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    now = {"model": {"type": "second"}, "train": {"lr": 0.001},
           "distill": {"teacher_mode": "eval", "warmup_iters": 0,
                       "local": [{"feature": "backbone.0", "tau": 1.0, "teacher_graph": "trained"}]}}
    _check_work_dir(str(tmp_path), now, resume=True)
    for changed in ({"warmup_iters": 120}, {"local": [{"feature": "backbone.0", "tau": 1.0,
                                                        "teacher_graph": "frozen"}]},
                    {"local": [{"feature": "backbone.0", "tau": 2.0, "teacher_graph": "trained"}]}):
        other = {**now, "distill": {**now["distill"], **changed}}
        with pytest.raises(RunError, match="config differs"):
            _check_work_dir(str(tmp_path), other, resume=True)


def test_kd_probe_trains_only_the_distillation_modules(tmp_path, synth_root, configs, teacher_ckpt):
    """scripts/kd_probe.py: the graph layers learn against the cached outputs of a frozen student;
    student and teacher weights stay what their checkpoints hold."""
    sys.path.insert(0, os.path.join(REPO, "scripts"))
    import kd_probe

    student = _train(tmp_path, synth_root, configs, "student.yaml", "plain", ("train.max_iters=1",))
    distiller, rows = kd_probe.probe(str(configs / "student_kd.yaml"), (f"data.root={synth_root}",),
                                     student.final_checkpoint, teacher_ckpt, batches=2, steps=6,
                                     lr=0.01, report_every=3, log=lambda *_: None)
    assert [step for step, _ in rows] == [0, 3, 6]
    assert all(set(losses) == {"local0"} for _, losses in rows)
    assert rows[-1][1]["local0"] < rows[0][1]["local0"]
    # (the student runs in train mode, as in a training step: its BN running statistics move, its
    # parameters must not; the teacher runs in eval mode, so nothing of it moves)
    for model, ckpt, keys in ((distiller.student, student.final_checkpoint,
                               dict(distiller.student.named_parameters())),
                              (distiller.teacher_model, teacher_ckpt, None)):
        saved = torch.load(ckpt, weights_only=True)["model"]
        now = model.state_dict()
        assert all(torch.equal(now[k].float(), saved[k].float()) for k in (keys or saved)), ckpt
    # a config without a distill section is refused with its name
    with pytest.raises(RunError, match="no distill section"):
        kd_probe.probe(str(configs / "student.yaml"), (f"data.root={synth_root}",))
