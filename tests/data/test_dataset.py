"""KittiDataset, VoxelCollator and the DataLoader builder on a tiny dataset prepared from the real
sample frames (database from all four frames so that every class can be sampled)."""
import os
import shutil

import numpy as np
import pytest
import torch

from pointdistiller.data.augment import AugmentConfig
from pointdistiller.detectors.batch import Batch
from pointdistiller.kitti_tools.classes import CLASS_NAMES
from pointdistiller.data.collate import Sample, VoxelCollator
from pointdistiller.data.kitti_dataset import KittiDataset, build_dataloader, set_epoch
from pointdistiller.kitti_tools.errors import KittiFormatError
from pointdistiller.kitti_tools.geometry import boxes_overlap_bev, fov_mask, points_in_boxes
from pointdistiller.kitti_tools.prepare import prepare_kitti

PP_RANGE = (0.0, -39.68, -3.0, 69.12, 39.68, 1.0)
PP_VOXEL = (0.16, 0.16, 4.0)


def reference_voxelize(points, voxel_size, point_range, max_points, max_voxels):
    """The voxelize contract (ops/csrc/voxelize/voxelize.h) in plain numpy, for collation tests:
    voxels numbered by first appearance, the first ``max_points`` points (input order) kept."""
    pts = points.numpy()
    lo = np.asarray(point_range[:3], np.float32)
    size = np.asarray(voxel_size, np.float32)
    grid = np.round((np.asarray(point_range[3:], np.float32) - lo) / size).astype(np.int64)
    c = np.floor((pts[:, :3] - lo) / size).astype(np.int64)
    ok = np.nonzero(((c >= 0) & (c < grid)).all(axis=1))[0]
    keys = (c[ok, 2] * grid[1] + c[ok, 1]) * grid[0] + c[ok, 0]
    uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    rank = np.empty(len(uniq), np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(uniq))
    vid = rank[inverse]
    p2v = np.full(len(pts), -1, np.int64)
    p2v[ok] = np.where(vid < max_voxels, vid, -1)
    m = min(len(uniq), max_voxels)
    order = np.argsort(vid, kind="stable")
    sorted_vid = vid[order]
    starts = np.searchsorted(sorted_vid, sorted_vid, side="left")
    slot = np.arange(len(order)) - starts
    keep = (sorted_vid < m) & (slot < max_points)
    voxels = np.zeros((m, max_points, pts.shape[1]), np.float32)
    voxels[sorted_vid[keep], slot[keep]] = pts[ok[order[keep]]]
    counts = np.minimum(np.bincount(vid[vid < m], minlength=m), max_points)
    first_pts = ok[np.sort(first)[:m]]
    coords = c[first_pts][:, ::-1]
    return (torch.from_numpy(voxels), torch.from_numpy(np.ascontiguousarray(coords, np.int32)),
            torch.from_numpy(counts.astype(np.int32)), torch.from_numpy(p2v))


@pytest.fixture(scope="module")
def tiny(kitti_sample, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("tiny") / "kitti")
    shutil.copytree(kitti_sample, root, ignore=shutil.ignore_patterns(
        "standard_split", "example_detections", "image_2"))
    os.makedirs(os.path.join(root, "training", "image_2"))
    for frame in ("000000", "000001", "000002", "000008"):  # the PNG header is all prepare reads
        shutil.copy(os.path.join(kitti_sample, "training", "image_2", f"{frame}.png"),
                    os.path.join(root, "training", "image_2"))
    for folder, _, files in os.walk(root):
        os.chmod(folder, 0o755)
    prepare_kitti(root, splits=["trainval"], db_split="trainval", workers=1, progress=False,
                  log=lambda m: None)
    return root


def _dataset(root, training=True, **kwargs):
    augment = AugmentConfig(db_info_path=os.path.join(root, "kitti_dbinfos_trainval.json"),
                            **kwargs) if training else None
    return KittiDataset(os.path.join(root, "kitti_infos_trainval.json"), root, training=training,
                        augment=augment, point_range=PP_RANGE, seed=7)


def _collator():
    return VoxelCollator(PP_VOXEL, PP_RANGE, max_points=32, max_voxels=16000,
                         voxelize=reference_voxelize)


def test_eval_samples(tiny):
    ds = _dataset(tiny, training=False)
    assert len(ds) == 4
    s = ds[1]
    assert s.frame_id == "000001" and s.meta["augment"] is None
    assert s.points.dtype == np.float32 and s.points.shape[1] == 4
    assert fov_mask(s.points, s.meta["calib"], s.meta["image_shape"]).all()
    lo, hi = np.asarray(PP_RANGE[:3]), np.asarray(PP_RANGE[3:])
    assert ((s.points[:, :3] >= lo) & (s.points[:, :3] < hi)).all()
    # 000001: Truck (dropped), Car, Cyclist, DontCare x4 (dropped)
    assert s.gt_labels.tolist() == [CLASS_NAMES.index("Car"), CLASS_NAMES.index("Cyclist")]
    assert s.gt_boxes.dtype == np.float32 and s.gt_boxes.shape == (2, 7)
    assert [len(ds[i].gt_labels) for i in range(4)] == [1, 2, 1, 6]
    # no augmentation in evaluation: twice the same
    np.testing.assert_array_equal(ds[1].points, s.points)


def test_training_is_deterministic_per_seed_epoch_and_index(tiny):
    ds = _dataset(tiny)
    a, b = ds[3], ds[3]
    np.testing.assert_array_equal(a.points, b.points)
    np.testing.assert_array_equal(a.gt_boxes, b.gt_boxes)
    assert a.meta["augment"] == b.meta["augment"]
    other = _dataset(tiny)  # a fresh instance (as in a worker process) gives the same sample
    np.testing.assert_array_equal(other[3].points, a.points)
    ds.set_epoch(1)
    c = ds[3]
    assert c.meta["augment"] != a.meta["augment"]
    assert len(c.points) != len(a.points) or not np.array_equal(c.points, a.points)


def test_training_samples_are_consistent(tiny):
    ds = _dataset(tiny)
    sampled = 0
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            s = ds[i]
            sampled += s.meta["augment"]["sampled"]
            boxes = s.gt_boxes.astype(np.float64)
            assert len(boxes) == len(s.gt_labels)
            assert (s.gt_labels >= 0).all() and (s.gt_labels < 3).all()
            overlap = boxes_overlap_bev(boxes, boxes)
            np.fill_diagonal(overlap, False)
            assert not overlap.any()
            lo, hi = np.asarray(PP_RANGE[:3]), np.asarray(PP_RANGE[3:])
            assert ((s.points[:, :3] >= lo) & (s.points[:, :3] < hi)).all()
            assert ((boxes[:, 0] >= PP_RANGE[0]) & (boxes[:, 0] < PP_RANGE[3])).all()
            # every object keeps points after all transforms (real or pasted ones)
            counts = points_in_boxes(s.points, boxes * [1, 1, 1, 1.01, 1.01, 1.01, 1]).sum(axis=0)
            assert (counts > 0).all(), (i, counts)
            # the per-class fill-up is respected (these scenes hold at most 6 cars)
            assert np.bincount(s.gt_labels, minlength=3).max() <= 15
    assert sampled > 0


def test_gt_sampling_off_and_range(tiny):
    ds = _dataset(tiny, gt_sampling=False, object_noise=False, flip_x_prob=0.0, global_rotation=0.0,
                  global_scale=(1.0, 1.0), shuffle_points=False)
    plain = _dataset(tiny, training=False)
    s, p = ds[3], plain[3]
    np.testing.assert_array_equal(s.points, p.points)
    np.testing.assert_array_equal(s.gt_boxes, p.gt_boxes)


def test_collate_batch(tiny):
    ds = _dataset(tiny)
    samples = [ds[i] for i in range(4)]
    batch = _collator()(samples)
    assert isinstance(batch, Batch) and batch.batch_size == 4
    assert batch.frame_ids == ["000000", "000001", "000002", "000008"]
    assert batch.points.dtype == torch.float32 and batch.voxels.dtype == torch.float32
    assert batch.voxel_coords.dtype == torch.int32 and batch.voxel_coords.shape[1] == 4
    assert batch.voxel_num_points.dtype == torch.int32 and (batch.voxel_num_points >= 1).all()
    assert batch.point_offsets.tolist() == np.cumsum([0] + [len(s.points) for s in samples]).tolist()
    assert batch.gt_offsets.tolist() == np.cumsum([0] + [len(s.gt_labels) for s in samples]).tolist()
    for b, s in enumerate(samples):
        lo, hi = int(batch.voxel_offsets[b]), int(batch.voxel_offsets[b + 1])
        assert (batch.voxel_coords[lo:hi, 0] == b).all() and hi > lo
        ref = reference_voxelize(torch.from_numpy(s.points), PP_VOXEL, PP_RANGE, 32, 16000)
        assert torch.equal(batch.voxels[lo:hi], ref[0])
        assert torch.equal(batch.voxel_coords[lo:hi, 1:], ref[1])
        boxes, labels = batch.sample_gt(b)
        torch.testing.assert_close(boxes, torch.from_numpy(s.gt_boxes))
        assert labels.dtype == torch.int64
    assert int(batch.voxel_num_points.sum()) <= len(batch.points)
    zyx = batch.voxel_coords[:, 1:]
    assert (zyx[:, 0] == 0).all() and zyx[:, 1].max() < 496 and zyx[:, 2].max() < 432


def test_collate_empty_cloud_and_no_objects():
    empty = Sample(np.zeros((0, 4), np.float32), np.zeros((0, 7), np.float32), np.zeros(0, np.int64),
                   "e")
    one = Sample(np.array([[1.0, 0.0, 0.0, 0.5], [1.05, 0.02, 0.1, 0.2]], np.float32),
                 np.zeros((0, 7), np.float32), np.zeros(0, np.int64), "o")
    batch = _collator()([empty, one, empty])
    assert batch.batch_size == 3
    assert batch.voxel_offsets.tolist() == [0, 0, 1, 1]
    assert batch.point_offsets.tolist() == [0, 0, 2, 2]
    assert batch.voxels.shape == (1, 32, 4) and batch.voxel_num_points.tolist() == [2]
    assert batch.voxel_coords.tolist() == [[1, 0, 248, 6]]  # y 0 -> (0 + 39.68) / 0.16
    assert batch.gt_boxes.shape == (0, 7) and batch.gt_offsets.tolist() == [0, 0, 0, 0]
    only_empty = _collator()([empty])
    assert only_empty.voxels.shape == (0, 32, 4) and only_empty.voxel_coords.shape == (0, 4)
    with pytest.raises(ValueError, match="samples"):
        _collator()([])
    with pytest.raises(ValueError, match="voxel_size"):
        VoxelCollator((0.16, 0.16), PP_RANGE, 32, 16000)


def test_collate_with_the_voxelize_op(tiny):
    try:
        from pointdistiller.ops.voxelization import voxelize

        voxelize(torch.zeros((1, 4)), PP_VOXEL, PP_RANGE, 32, 10)
    except (ImportError, RuntimeError) as exc:
        pytest.skip(f"voxelize op not available: {exc}")
    samples = [_dataset(tiny, training=False)[i] for i in range(2)]
    default = VoxelCollator(PP_VOXEL, PP_RANGE, 32, 16000)(samples)
    ref = _collator()(samples)
    assert torch.equal(default.voxels, ref.voxels)
    torch.testing.assert_close(default.voxel_coords, ref.voxel_coords)
    torch.testing.assert_close(default.voxel_offsets, ref.voxel_offsets)


def test_dataloader_is_reproducible(tiny):
    ds = _dataset(tiny)

    def epoch_batches(loader, epoch):
        set_epoch(loader, epoch)
        return [(b.frame_ids, b.points.clone(), b.gt_boxes.clone()) for b in loader]

    loader = build_dataloader(ds, batch_size=2, collate_fn=_collator(), workers=0, seed=3)
    first = epoch_batches(loader, 0)
    second = epoch_batches(loader, 1)
    assert sorted(f for ids, _, _ in first for f in ids) == ["000000", "000001", "000002", "000008"]
    again = epoch_batches(build_dataloader(ds, batch_size=2, collate_fn=_collator(), seed=3), 1)
    for (ids_a, pa, ba), (ids_b, pb, bb) in zip(second, again):
        assert ids_a == ids_b
        assert torch.equal(pa, pb)
        torch.testing.assert_close(ba, bb)
    orders = {tuple(f for ids, _, _ in epoch_batches(loader, e) for f in ids) for e in range(4)}
    assert len(orders) > 1  # the order changes between epochs
    plain = build_dataloader(ds, batch_size=4, collate_fn=_collator(), shuffle=False)
    assert next(iter(plain)).frame_ids == ["000000", "000001", "000002", "000008"]


@pytest.mark.slow
def test_dataloader_workers_match_single_process(tiny):
    ds = _dataset(tiny)
    single = build_dataloader(ds, batch_size=2, collate_fn=_collator(), workers=0, seed=1)
    multi = build_dataloader(ds, batch_size=2, collate_fn=_collator(), workers=2, seed=1)
    for epoch in (0, 1):
        set_epoch(single, epoch)
        set_epoch(multi, epoch)
        for a, b in zip(single, multi):
            assert a.frame_ids == b.frame_ids
            assert torch.equal(a.points, b.points)
            assert torch.equal(a.voxels, b.voxels)


def test_dataloader_distributed(tiny, tmp_path):
    import torch.distributed as dist
    from torch.utils.data import DistributedSampler

    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        loader = build_dataloader(_dataset(tiny), batch_size=2, collate_fn=_collator(), seed=4)
        assert isinstance(loader.sampler, DistributedSampler) and loader.sampler.seed == 4
        set_epoch(loader, 2)
        assert loader.sampler.epoch == 2 and loader.dataset.epoch == 2
        assert sorted(f for b in loader for f in b.frame_ids) == ["000000", "000001", "000002", "000008"]
    finally:
        dist.destroy_process_group()


def test_dataset_errors(tiny, tmp_path):
    with pytest.raises(KittiFormatError, match="none.json: info file not found"):
        KittiDataset(str(tmp_path / "none.json"), tiny)
    (tmp_path / "x.json").write_text('{"frames": []}')
    with pytest.raises(KittiFormatError, match="x.json: not a KITTI info file"):
        KittiDataset(str(tmp_path / "x.json"), tiny)
    with pytest.raises(KittiFormatError, match="nodb.json: GT database info file not found"):
        KittiDataset(os.path.join(tiny, "kitti_infos_trainval.json"), tiny, training=True,
                     augment=AugmentConfig(db_info_path=str(tmp_path / "nodb.json")))
    with pytest.raises(TypeError, match="augment"):
        KittiDataset(os.path.join(tiny, "kitti_infos_trainval.json"), tiny, training=True,
                     augment={"gt_sampling": False})
    with pytest.raises(ValueError, match=r"class_names: unknown class\(es\) \['car'\]"):
        KittiDataset(os.path.join(tiny, "kitti_infos_trainval.json"), tiny, class_names=("car",))
