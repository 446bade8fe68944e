"""benchmarks/bm_kd_synthetic.py at a small scale (--quick: 16 scenes, 4 steps a run): the command that
reproduces the shipped demo teacher, a plain and a distilled student, resuming from the results
files, reusing a run that another method already ran, and leaving stale rows out of the report."""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "benchmarks", "bm_kd_synthetic.py")
sys.path.insert(0, os.path.join(REPO, "benchmarks"))
import bm_kd_synthetic as bm  # noqa: E402


def _run(work, *args):
    env = {**os.environ, "PD_CACHE": os.path.join(work, "cache")}
    proc = subprocess.run([sys.executable, SCRIPT, "--quick", "--work-root", work, *args],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _rows(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory):
    work = str(tmp_path_factory.mktemp("bm_kd"))
    first = _run(work, "--stage", "teachers", "--only", "teacher/pointpillars")
    students = _run(work, "--stage", "table", "--only", "pp4x_p*", "--seeds", "0")
    return work, first, students


def test_teacher_stage_writes_pinned_fp16_weights(quick_runs):
    work, out, _ = quick_runs
    layout = bm.Layout(work)
    weights = layout.weights(bm.TEACHERS["pointpillars"])
    (row,) = _rows(layout.table)[:1]
    assert row["key"] == "teacher/pointpillars" and row["steps"] == 4
    assert row["weights_sha256"] == bm.sha256_file(weights)
    assert f"sha256 {row['weights_sha256']}" in out
    from pointdistiller.engine.checkpoint import load_checkpoint

    state = load_checkpoint(weights)["model"]
    assert {str(v.dtype) for v in state.values() if v.is_floating_point()} == {"torch.float16"}


def test_students_distil_from_the_written_teacher_and_resume(quick_runs):
    work, _, _ = quick_runs
    layout = bm.Layout(work)
    rows = {r["key"]: r for r in _rows(layout.table)}
    plain, kd = rows["pp4x_plain/seed0"], rows["pp4x_pointdistiller/seed0"]
    assert plain["teacher_sha256"] is None and plain["steps"] == 4
    assert kd["teacher_sha256"] == rows["teacher/pointpillars"]["weights_sha256"]
    assert "local0_effective_weighted" in kd["effective_weighted"]
    dead, total = kd["dead_units"]          # the trainer's count of its last evaluation
    assert 0 <= dead <= total and total > 0
    again = _run(work, "--stage", "table", "--only", "pp4x_p*", "--seeds", "0")
    assert "pp4x_plain/seed0: done" in again and "pp4x_pointdistiller/seed0: done" in again
    assert len(_rows(layout.table)) == len(rows)


def test_a_run_with_the_same_resolved_config_is_reused_and_stale_rows_leave_the_report(quick_runs):
    work, _, _ = quick_runs
    layout = bm.Layout(work)
    # the ablation "tau 10" resolves to the table's PointDistiller with the paper's trained teacher
    # graph: the same run (a dry run says so and records nothing)
    dry = _run(work, "--stage", "ablation", "--only", "abl_pd_tau10/seed0", "--dry-run")
    assert "the same run as pp4x_pointdistiller_trained/seed0 " in dry and "dry run: not recorded" in dry
    assert not os.path.exists(layout.ablation) or _rows(layout.ablation) == []
    out = _run(work, "--stage", "ablation", "--only", "abl_pd_tau10/seed0")
    assert "abl_pd_tau10/seed0: the same run as pp4x_pointdistiller_trained/seed0" in out
    (reused,) = _rows(layout.ablation)
    assert reused["same_run_as"] == "pp4x_pointdistiller_trained/seed0"
    # a row whose config no longer matches its method is left out of the report
    rows = _rows(layout.table)
    stale = {**rows[-1], "fingerprint": "0" * 16}
    # and so is a row of a method that no longer exists; teacher rows stay
    retired = {**rows[-1], "method": "pp4x_retired_method"}
    kept = bm.current_rows(rows + [stale, retired], quick=True)
    assert stale not in kept and retired not in kept and rows[-1] in kept
    assert any(r["method"] == "teacher" for r in kept)


def test_a_new_field_at_its_neutral_default_keeps_earlier_rows_current():
    # rows recorded before distill.local[].teacher_graph existed hashed configs without it
    fp, resolved = bm.resolve(os.path.join("configs", "demo", "pointpillars_student_4x_kd.yaml"),
                              ["distill.local=[{feature: pfn, tau: 10.0}]"])
    assert resolved["distill"]["local"][0]["teacher_graph"] == "trained"
    before = json.loads(json.dumps(resolved))
    del before["distill"]["local"][0]["teacher_graph"]
    del before["distill"]["warmup_iters"]      # and before distill.warmup_iters existed
    assert fp == bm._hash(before) and bm._hash(resolved) in bm.fingerprints(resolved)
    frozen_fp, frozen = bm.resolve(os.path.join("configs", "demo", "pointpillars_student_4x_kd.yaml"),
                                   ["distill.local=[{feature: pfn, tau: 10.0, teacher_graph: frozen}]"])
    assert frozen["distill"]["local"][0]["teacher_graph"] == "frozen"
    assert frozen_fp != fp and not bm.fingerprints(frozen) & bm.fingerprints(resolved)


def test_a_schedule_ablation_shares_its_changed_schedule_and_a_stray_train_override_is_refused(
        tmp_path):
    import argparse
    args = argparse.Namespace(quick=False, dry_run=True, commit=False, work_root=str(tmp_path))
    layout = bm.Layout(str(tmp_path))
    plain = bm._kd("x_plain", "PointPillars 4x", "pointpillars", "no KD, lr 1e-4",
                   "pointpillars_student_4x.yaml", seeds=(0,), schedule=("train.lr=0.0001",))
    overrides, _, resolved = bm.student_run(plain, 0, quick=False)
    assert "train.lr=0.0001" in overrides and resolved["train"]["lr"] == 0.0001
    bm.run_student(plain, 0, layout.ablation, layout, args)         # accepted (dry run: no training)
    stray = bm._kd("x_stray", "PointPillars 4x", "pointpillars", "lr in the overrides",
                   "pointpillars_student_4x.yaml", "train.lr=0.0001", seeds=(0,))
    with pytest.raises(RuntimeError, match="does not share the schedule"):
        bm.run_student(stray, 0, layout.ablation, layout, args)


def test_a_work_dir_of_another_config_is_set_aside_not_resumed(quick_runs):
    work, _, _ = quick_runs
    # seed 1's work dir holds a run of another config (an earlier default)
    old = os.path.join(work, "pp4x_plain_seed1")
    os.makedirs(old)
    with open(os.path.join(old, "config.yaml"), "w") as f:
        f.write("model: {type: pointpillars}\ntrain: {lr: 0.123}\n")
    out = _run(work, "--stage", "table", "--only", "pp4x_plain/*", "--seeds", "1")
    assert "holds a run of another config" in out
    stale = [d for d in os.listdir(work) if d.startswith("pp4x_plain_seed1.stale-")
             and not d.endswith(".log")]
    assert len(stale) == 1
    with open(os.path.join(work, stale[0], "config.yaml")) as f:
        assert "0.123" in f.read()                       # kept as it was
    rows = {r["key"]: r for r in _rows(bm.Layout(work).table)}
    assert rows["pp4x_plain/seed1"]["steps"] == 4        # and the run went on afresh
