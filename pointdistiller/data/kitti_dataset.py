"""KITTI training/evaluation dataset over the info files of ``kitti-tools prepare``, and the
DataLoader builder (seeded shuffling, DistributedSampler under torch.distributed).

Reproducibility: a sample's augmentation draws from ``numpy.random.default_rng`` seeded with
``(seed, epoch, index)``, so the same epoch gives the same scenes whatever the number of workers or
the order in which they run. Call :func:`set_epoch` before each epoch (it also reseeds the
shuffling); loaders are built without persistent workers so the workers see the new epoch.
"""
import json
import os
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, SequentialSampler

from pointdistiller.kitti_tools.calib import Calib
from pointdistiller.kitti_tools.errors import KittiFormatError
from pointdistiller.kitti_tools.geometry import fov_mask
from pointdistiller.kitti_tools.io import KITTI_TYPES, read_velodyne
from pointdistiller.kitti_tools.prepare import INFO_FORMAT

from pointdistiller.data.augment import (AugmentConfig, GTSampler, augment_scene, boxes_in_range,
                                         points_in_range)
from pointdistiller.kitti_tools.classes import CLASS_NAMES
from pointdistiller.data.collate import Sample

# PointPillars' KITTI range (architectures.md): (xmin, ymin, zmin, xmax, ymax, zmax), metres.
POINTPILLARS_RANGE = (0.0, -39.68, -3.0, 69.12, 39.68, 1.0)


class KittiDataset(Dataset):
    """Scenes of one prepared KITTI split.

    Args:
        info_path: ``kitti_infos_<split>.json`` from ``kitti-tools prepare``.
        root: the KITTI root the info's relative paths start from.
        class_names: classes kept as ground truth, in label order (others and DontCare dropped;
            in training all labelled objects still take part in the collision checks).
        point_range: ``(xmin, ymin, zmin, xmax, ymax, zmax)``; points outside are dropped, and in
            training also boxes whose centre lies outside the BEV range.
        training: apply ``augment`` and the box range filter.
        augment: augmentation settings (training only); None: no augmentation.
        fov_reduce: keep only points seen by camera 2 (what KITTI detectors train on).
        seed: base seed of the per-sample random generators.
        num_features: values per point in the ``.bin`` files.

    ``dataset[i]`` is a :class:`~pointdistiller.data.collate.Sample`: points ``[N, 4]`` float32,
    gt_boxes ``[G, 7]`` float32, gt_labels ``[G]`` int64, frame_id, and meta with ``calib``
    (:class:`Calib`), ``image_shape`` ``(h, w)`` and ``augment`` (what was drawn, or None).
    """

    def __init__(self, info_path: str, root: str, class_names: Sequence[str] = CLASS_NAMES,
                 point_range: Sequence[float] = POINTPILLARS_RANGE, training: bool = False,
                 augment: Optional[AugmentConfig] = None, fov_reduce: bool = True, seed: int = 0,
                 num_features: int = 4):
        if len(point_range) != 6:
            raise ValueError(f"point_range: expected 6 values, got {point_range}")
        unknown = [n for n in class_names if n not in KITTI_TYPES or n == "DontCare"]
        if unknown or not class_names:
            raise ValueError(f"class_names: unknown class(es) {unknown} (KITTI types: "
                             f"{', '.join(KITTI_TYPES[:-1])})")
        if augment is not None and not isinstance(augment, AugmentConfig):
            raise TypeError(f"augment: expected AugmentConfig or None, got {type(augment).__name__}")
        try:
            with open(info_path, "r", encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            raise KittiFormatError(info_path, "info file not found (run `kitti-tools prepare`)") from None
        except ValueError as exc:
            raise KittiFormatError(info_path, f"not valid JSON ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != INFO_FORMAT:
            raise KittiFormatError(info_path, "not a KITTI info file of `kitti-tools prepare`")
        self.info_path = info_path
        self.root = root
        self.frames = data["frames"]
        self.class_names = tuple(class_names)
        self.point_range = tuple(float(v) for v in point_range)
        self.training = training
        self.augment = augment if training else None
        self.fov_reduce = fov_reduce
        self.seed = int(seed)
        self.epoch = 0
        self.num_features = num_features
        self.sampler = None
        if self.augment is not None and self.augment.gt_sampling:
            db_path = self.augment.db_info_path or os.path.join(
                os.path.dirname(os.path.abspath(info_path)), "kitti_dbinfos_train.json")
            self.sampler = GTSampler(db_path, self.augment.sample_counts, self.augment.db_min_points,
                                     self.augment.db_skip_difficulty, num_features)

    def __len__(self) -> int:
        return len(self.frames)

    def set_epoch(self, epoch: int) -> None:
        """Selects the random streams of ``epoch`` (see module doc)."""
        self.epoch = int(epoch)

    def rng(self, index: int) -> np.random.Generator:
        """The random generator of sample ``index`` in the current epoch."""
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def load_scene(self, index: int):
        """Unaugmented scene: (points ``[N, C]`` float32, boxes ``[n, 7]`` float64, names ``[n]``
        of all labelled non-DontCare objects, calib, image_shape)."""
        info = self.frames[index]
        calib = Calib(**{k: np.asarray(v, np.float64) for k, v in info["calib"].items()})
        image_shape = tuple(info["image_shape"])
        points = read_velodyne(os.path.join(self.root, info["velodyne_path"]), self.num_features)
        if self.fov_reduce:
            points = points[fov_mask(points, calib, image_shape)]
        annos = info.get("annos")
        if annos is None:
            return points, np.zeros((0, 7)), np.zeros(0, dtype=object), calib, image_shape
        names = np.asarray(annos["name"], dtype=object)
        boxes = np.asarray(annos["gt_boxes_lidar"], np.float64).reshape(-1, 7)
        care = names != "DontCare"
        return points, boxes[care], names[care], calib, image_shape

    def __getitem__(self, index: int) -> Sample:
        info = self.frames[index]
        points, boxes, names, calib, image_shape = self.load_scene(index)
        record = None
        if self.augment is not None:
            rng = self.rng(index)
            points, boxes, names, record = augment_scene(points, boxes, names, self.augment, rng,
                                                         self.sampler)
        points = points[points_in_range(points, self.point_range)]
        if self.training:
            keep = boxes_in_range(boxes, self.point_range)
            boxes, names = boxes[keep], names[keep]
        if self.augment is not None and self.augment.shuffle_points:
            points = points[rng.permutation(len(points))]
        wanted = np.isin(names, self.class_names)
        labels = np.asarray([self.class_names.index(n) for n in names[wanted]], np.int64)
        return Sample(points=np.ascontiguousarray(points, np.float32),
                      gt_boxes=boxes[wanted].astype(np.float32), gt_labels=labels,
                      frame_id=info["frame_id"],
                      meta={"calib": calib, "image_shape": image_shape, "augment": record})


def _worker_init(worker_id: int) -> None:
    # Voxelization runs in the workers: one thread each avoids oversubscribing the cores.
    torch.set_num_threads(1)


def build_dataloader(dataset: Dataset, batch_size: int, collate_fn: Callable, workers: int = 0,
                     shuffle: bool = True, seed: int = 0, drop_last: bool = False,
                     pin_memory: bool = False) -> DataLoader:
    """A DataLoader over ``dataset`` producing collated batches.

    Shuffling draws from a ``torch.Generator`` seeded from ``(seed, epoch)`` (see
    :func:`set_epoch`); when ``torch.distributed`` is initialised a ``DistributedSampler`` (same
    seed) splits the data between ranks instead, and ``batch_size`` is per rank.
    """
    if batch_size < 1 or workers < 0:
        raise ValueError(f"batch_size must be >= 1 and workers >= 0, got {batch_size}, {workers}")
    generator = None
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
    elif shuffle:
        generator = torch.Generator()
        sampler = RandomSampler(dataset, generator=generator)
    else:
        sampler = SequentialSampler(dataset)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                        collate_fn=collate_fn, drop_last=drop_last, pin_memory=pin_memory,
                        worker_init_fn=_worker_init if workers > 0 else None,
                        persistent_workers=False)
    loader.shuffle_seed = int(seed)
    loader.shuffle_generator = generator
    set_epoch(loader, 0)
    return loader


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Prepares ``loader`` (from :func:`build_dataloader`) for ``epoch``: reseeds the shuffling
    (or calls ``DistributedSampler.set_epoch``) and the dataset's augmentation streams."""
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)
    generator = getattr(loader, "shuffle_generator", None)
    if generator is not None:
        state = np.random.SeedSequence([getattr(loader, "shuffle_seed", 0), int(epoch)])
        generator.manual_seed(int(state.generate_state(1, np.uint64)[0] >> 1))
    if hasattr(loader.dataset, "set_epoch"):
        loader.dataset.set_epoch(epoch)
