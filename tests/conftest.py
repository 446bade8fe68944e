"""Shared test fixtures: the real KITTI sample frames, one torch thread, small file systems (full,
read-only), and the CUDA / spconv skip rules."""
import os
import subprocess

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KITTI_SAMPLE = os.environ.get(
    "PD_KITTI_SAMPLE", os.path.join(os.path.dirname(REPO), "shared", "kitti_sample"))


def _have_spconv() -> bool:
    try:
        import spconv.pytorch  # noqa: F401
    except ImportError:
        return False
    return True


def pytest_collection_modifyitems(config, items):
    # spconv is a declared dependency, so `make test` always has it; a GPU machine's own Python
    # (`make gpu-check`) may lack it, and then only the SECOND cases are skipped there.
    rules = []
    if not torch.cuda.is_available():
        rules.append(("cuda", "needs a CUDA GPU (run `make gpu-check` on a GPU machine)"))
    if any("spconv" in item.keywords for item in items) and not _have_spconv():
        rules.append(("spconv", "spconv is not installed in this Python"))
    for keyword, reason in rules:
        skip = pytest.mark.skip(reason=reason)
        for item in items:
            if keyword in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def kitti_sample():
    """Path of the real KITTI sample (``../shared/kitti_sample``); fails loudly if missing."""
    if not os.path.isdir(os.path.join(KITTI_SAMPLE, "training")):
        pytest.fail(f"real KITTI sample not found at {KITTI_SAMPLE} (set PD_KITTI_SAMPLE)")
    return KITTI_SAMPLE


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for the rest of the module: on this shared 2-core box two threads mostly
    wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def small_fs(tmp_path):
    """``mount(size_kib, readonly=False) -> folder``: a tmpfs of that size (read-only if asked), for
    the full-disk and read-only-file-system cases. Needs root to mount; for a read-only folder a
    non-root user gets a chmod 555 folder instead (root would write through that)."""
    mounted = []

    def mount(size_kib: int, readonly: bool = False) -> str:
        folder = tmp_path / f"fs{len(mounted)}"
        folder.mkdir()
        opts = f"size={size_kib}k" + (",ro" if readonly else "")
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(folder)],
                              capture_output=True, text=True)
        if proc.returncode == 0:
            mounted.append(str(folder))
            return str(folder)
        if readonly and os.geteuid() != 0:
            folder.chmod(0o555)
            return str(folder)
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()}); run the tests as root")

    yield mount
    for folder in mounted:
        subprocess.run(["umount", folder], capture_output=True)
