"""Fixtures of the distillation tests: one torch thread and small voxelized batches."""
import numpy as np
import pytest
import torch

from pointdistiller.data.collate import Sample, VoxelCollator


@pytest.fixture(autouse=True, scope="package")
def one_thread():
    """One torch thread: on this shared 2-core box two threads mostly wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def voxelize_numpy(points, voxel_size, point_range, max_points, max_voxels):
    """The voxelize op's contract (voxels numbered by first appearance, the first ``max_points``
    points of each kept) in numpy, so these tests do not depend on that op."""
    pts = points.numpy()
    lo = np.asarray(point_range[:3], np.float32)
    size = np.asarray(voxel_size, np.float32)
    grid = np.round((np.asarray(point_range[3:], np.float32) - lo) / size).astype(np.int64)
    cell = np.floor((pts[:, :3] - lo) / size).astype(np.int64)
    ok = np.nonzero(((cell >= 0) & (cell < grid)).all(axis=1))[0]
    keys = (cell[ok, 2] * grid[1] + cell[ok, 1]) * grid[0] + cell[ok, 0]
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    vid = rank[inverse]
    m = min(len(first), max_voxels)
    order = np.argsort(vid, kind="stable")
    sorted_vid = vid[order]
    slot = np.arange(len(order)) - np.searchsorted(sorted_vid, sorted_vid, side="left")
    keep = (sorted_vid < m) & (slot < max_points)
    voxels = np.zeros((m, max_points, pts.shape[1]), np.float32)
    voxels[sorted_vid[keep], slot[keep]] = pts[ok[order[keep]]]
    counts = np.minimum(np.bincount(vid[vid < m], minlength=m), max_points).astype(np.int32)
    coords = np.ascontiguousarray(cell[ok[np.sort(first)[:m]]][:, ::-1], np.int32)
    return torch.from_numpy(voxels), torch.from_numpy(coords), torch.from_numpy(counts), None


def make_batch(model, num_points=3000, batch_size=2, seed=0):
    """Random points over ``model``'s field (clustered, so pillars hold several points) and two
    anchor-like boxes per sample, voxelized with the model's settings."""
    rng = np.random.default_rng(seed)
    v = model.voxelization
    r = np.asarray(v.point_range, np.float32)
    samples = []
    for b in range(batch_size):
        centres = r[:3] + rng.random((num_points // 10, 3), dtype=np.float32) * (r[3:] - r[:3])
        xyz = np.repeat(centres, 10, axis=0) + rng.normal(0, 0.3, (len(centres) * 10, 3))
        xyz = np.clip(xyz, r[:3], r[3:] - 1e-3).astype(np.float32)
        points = np.concatenate([xyz, rng.random((len(xyz), 1), dtype=np.float32)], axis=1)
        cx, cy = (r[0] + r[3]) / 2, (r[1] + r[4]) / 2
        boxes = np.array([[cx, cy, -1.0, 3.9, 1.6, 1.56, 0.0],
                          [cx - 1.5, cy + 1.0, -0.735, 0.8, 0.6, 1.73, np.pi / 2]], np.float32)
        samples.append(Sample(points, boxes, np.array([0, 1]), f"{b:06d}"))
    collate = VoxelCollator(v.voxel_size, v.point_range, v.max_points, v.max_voxels[0],
                            voxelize_numpy)
    return collate(samples)
