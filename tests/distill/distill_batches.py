"""Small voxelized batches for the distillation tests (a module of its own: importing it from a
conftest breaks when pytest collects several test folders with conftest files at once)."""
import numpy as np

from pointdistiller.data.collate import Sample, VoxelCollator


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
    collate = VoxelCollator(v.voxel_size, v.point_range, v.max_points, v.max_voxels[0])
    return collate(samples)
