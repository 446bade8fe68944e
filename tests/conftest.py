"""Shared test fixtures: the real KITTI sample frames, one torch thread, and the CUDA skip rule."""
import os

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KITTI_SAMPLE = os.environ.get(
    "PD_KITTI_SAMPLE", os.path.join(os.path.dirname(REPO), "shared", "kitti_sample"))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run `make gpu-check` on a GPU machine)")
    for item in items:
        if "cuda" in item.keywords:
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
