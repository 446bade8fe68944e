"""Safe by default: no checkpoint can run code, and every bad environment (read-only or full disk,
a missing GPU, an output path under a file) is one line on stderr, exit 2, with nothing
half-written; killed runs leave no temporaries behind for long."""
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from pointdistiller.cli import evaluate as pd_eval
from pointdistiller.cli import train as pd_train
from pointdistiller.engine.checkpoint import load_checkpoint

from trainer_runs import REPO, train


class _RunsCommand:
    """Pickles as ``os.system(command)``: what a malicious checkpoint would carry."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _payload(path, marker):
    torch.save({"format": 2, "model": {"w": torch.zeros(1)}, "x": _RunsCommand(f"touch {marker}")},
               path)


def _one_error_line(capsys, *needles):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    for needle in needles:
        assert needle in err[0], err[0]
    return err[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, synth_root, configs):
    """A finished tiny run: (work dir, its model_final.pt)."""
    out = tmp_path_factory.mktemp("trained")
    result = train(out, synth_root, configs, extra=("train.max_iters=2",))
    return out / "run", result.final_checkpoint


# ------------------------------------------------------------------------------------------------
# checkpoints never run code
# ------------------------------------------------------------------------------------------------
def test_payload_checkpoint_through_pd_eval(tmp_path, capsys, synth_root, configs):
    ckpt, marker = tmp_path / "evil.pt", tmp_path / "ran"
    _payload(ckpt, marker)
    assert pd_eval.main([str(configs / "teacher.yaml"), str(ckpt), "--data", synth_root,
                         "--device", "cpu"]) == 2
    _one_error_line(capsys, str(ckpt), "refused", "Nothing was executed")
    assert not marker.exists()


def test_payload_checkpoint_as_teacher(tmp_path, capsys, synth_root, configs):
    ckpt, marker = tmp_path / "evil.pt", tmp_path / "ran"
    _payload(ckpt, marker)
    assert pd_train.main([str(configs / "student_kd.yaml"), "--teacher", str(ckpt), "--set",
                          f"data.root={synth_root}", "--work-dir", str(tmp_path / "kd"),
                          "--device", "cpu", "--no-progress"]) == 2
    _one_error_line(capsys, str(ckpt), "refused")
    assert not marker.exists()
    assert not (tmp_path / "kd").exists()


def test_payload_checkpoint_on_resume(tmp_path, capsys, synth_root, configs):
    train(tmp_path, synth_root, configs, extra=("train.max_iters=3",), stop_at=1)
    latest, marker = tmp_path / "run" / "checkpoints" / "latest.pt", tmp_path / "ran"
    _payload(latest, marker)
    assert pd_train.main([str(configs / "teacher.yaml"), "--resume", "--set", f"data.root={synth_root}",
                          "--set", "train.max_iters=3", "--work-dir", str(tmp_path / "run"),
                          "--device", "cpu", "--no-progress"]) == 2
    _one_error_line(capsys, str(latest), "refused")
    assert not marker.exists()


def test_checkpoints_of_the_earlier_format_still_load(tmp_path):
    """Format 1 stored numpy's RNG state as an array: it loads through the numpy allow-list."""
    path = tmp_path / "old.pt"
    torch.save({"format": 1, "model": {"w": torch.ones(2)}, "model_config": {"type": "pointpillars"},
                "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                        "python": random.getstate()}}, path)
    state = load_checkpoint(str(path))
    assert state["rng"]["numpy"][1].dtype == np.uint32
    assert torch.equal(state["model"]["w"], torch.ones(2))


# ------------------------------------------------------------------------------------------------
# the environment: one line, exit 2, nothing half-written
# ------------------------------------------------------------------------------------------------
def test_read_only_work_dir_fails_before_any_work(tmp_path, capsys, small_fs, configs):
    ro = small_fs(64, readonly=True)
    work = os.path.join(ro, "run")
    # a data root that does not exist: the work dir must be refused before the data is looked at
    assert pd_train.main([str(configs / "teacher.yaml"), "--set", "data.root=/nonexistent",
                          "--work-dir", work, "--device", "cpu", "--no-progress"]) == 2
    _one_error_line(capsys, "work dir", work)
    assert not os.path.exists(work)


def test_work_dir_under_a_regular_file(tmp_path, capsys, configs):
    (tmp_path / "file").write_text("x")
    work = str(tmp_path / "file" / "run")
    assert pd_train.main([str(configs / "teacher.yaml"), "--set", "data.root=/nonexistent",
                          "--work-dir", work, "--device", "cpu", "--no-progress"]) == 2
    _one_error_line(capsys, work, "is not a folder")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_device_without_cuda(tmp_path, capsys, configs):
    assert pd_train.main([str(configs / "teacher.yaml"), "--device", "cuda", "--work-dir",
                          str(tmp_path / "run"), "--no-progress"]) == 2
    _one_error_line(capsys, "--device cuda", "use --device cpu")
    assert pd_train.main([str(configs / "teacher.yaml"), "--device", "tpu", "--work-dir",
                          str(tmp_path / "run"), "--no-progress"]) == 2
    _one_error_line(capsys, "--device tpu")


def test_pd_eval_outputs_checked_first(tmp_path, capsys, small_fs, trained, synth_root, configs):
    _, ckpt = trained
    ro = small_fs(64, readonly=True)
    args = [str(configs / "teacher.yaml"), ckpt, "--data", synth_root, "--device", "cpu"]
    assert pd_eval.main(args + ["--out", os.path.join(ro, "res")]) == 2
    _one_error_line(capsys, "--out", "read-only")
    (tmp_path / "file").write_text("x")
    assert pd_eval.main(args + ["--json", str(tmp_path / "file" / "ap.json")]) == 2
    _one_error_line(capsys, "--json", "is not a folder")


def test_full_disk_during_a_checkpoint_keeps_the_previous_one(tmp_path, capsys, small_fs,
                                                              synth_root, configs, trained):
    size = os.path.getsize(trained[0] / "checkpoints" / "latest.pt")
    # room for one checkpoint, the logs and the config, not for the next checkpoint beside it
    fs = small_fs(int(size * 1.6) // 1024)
    work = os.path.join(fs, "run")
    assert pd_train.main([str(configs / "teacher.yaml"), "--set", f"data.root={synth_root}",
                          "--set", "train.max_iters=3", "--set", "train.checkpoint_interval=1",
                          "--work-dir", work, "--device", "cpu", "--no-progress"]) == 2
    line = _one_error_line(capsys, "no space left on device", "latest.pt")
    assert "previous file is unchanged" in line
    assert load_checkpoint(os.path.join(work, "checkpoints", "latest.pt"))["iteration"] == 1
    assert not [n for n in os.listdir(os.path.join(work, "checkpoints")) if n.startswith(".tmp-")]


def test_stale_temporaries_are_removed_on_resume(tmp_path, synth_root, configs):
    train(tmp_path, synth_root, configs, extra=("train.max_iters=2",), stop_at=1)
    stale = tmp_path / "run" / "checkpoints" / ".tmp-latest.pt-abc123"
    stale.write_bytes(b"half a checkpoint")
    train(tmp_path, synth_root, configs, extra=("train.max_iters=2",), resume=True)
    assert not stale.exists()


def test_spconv_import_prints_no_warnings():
    code = ("import warnings; warnings.simplefilter('always')\n"
            "from pointdistiller.detectors.middle_encoders import sparse_encoder")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "FutureWarning" not in proc.stderr


def test_pd_profile_of_a_pointpillars_config_prints_no_spconv_warnings():
    """pd-profile imports spconv for its FLOP counter even when the model has no sparse conv."""
    code = ("import warnings, sys; warnings.simplefilter('always')\n"
            "from pointdistiller.cli.profile import count_flops\n"
            "import torch\n"
            "count_flops(torch.nn.Linear(2, 2), torch.zeros(1, 2))\n"
            "assert 'spconv.pytorch.conv' in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "FutureWarning" not in proc.stderr
