"""The data side of a run: the dataset root (the built-in synthetic scenes, generated and prepared on
first use), resumable sampling, and the DataLoader of a split voxelized with the model's settings."""
import math
import os
from typing import Dict, Iterator, List, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from pointdistiller.data.collate import build_collator
from pointdistiller.data.kitti_dataset import KittiDataset, _worker_init
from pointdistiller.detectors.build import num_point_features, point_range
from pointdistiller.kitti_tools.classes import CLASS_NAMES
from pointdistiller.kitti_tools.fileio import atomic_open

from pointdistiller.engine import dist
from pointdistiller.engine.errors import RunError
from pointdistiller.engine.sections import DataConfig, TrainConfig


class ResumableSampler(Sampler):
    """Shuffled (or sequential) indices of one epoch from ``(seed, epoch)``, split between ranks like
    ``DistributedSampler`` (padded to a multiple of the world size), skipping the first ``start``
    indices of this rank (the samples a resumed run has already seen)."""

    def __init__(self, size: int, shuffle: bool, seed: int, rank: int = 0, world: int = 1):
        self.size, self.shuffle, self.seed, self.rank, self.world = size, shuffle, seed, rank, world
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def _indices(self) -> List[int]:
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0]))
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        per_rank = math.ceil(self.size / self.world) if self.size else 0
        order += order[:per_rank * self.world - len(order)]
        return order[self.rank::self.world]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices()[self.start:])

    def __len__(self) -> int:
        return max(0, (math.ceil(self.size / self.world) if self.size else 0) - self.start)


class _Repeated(torch.utils.data.Dataset):
    """``dataset`` repeated ``times`` (index i -> i % len); keeps ``set_epoch``."""

    def __init__(self, dataset, times: int):
        self.dataset, self.times = dataset, times

    def __len__(self):
        return len(self.dataset) * self.times

    def __getitem__(self, i):
        return self.dataset[i % len(self.dataset)]

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)


def cache_root() -> str:
    return os.environ.get("PD_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "pointdistiller")


def resolve_dataset_root(data: DataConfig, log=print) -> str:
    """The prepared KITTI root of ``data``: the configured one, or the built-in synthetic scenes
    (generated and prepared on first use, then reused)."""
    if data.root is not None:
        root = os.path.abspath(os.path.expanduser(data.root))
        info = os.path.join(root, f"kitti_infos_{data.train_split}.json")
        if not os.path.isfile(info):
            raise RunError(f"data.root: {info} not found; run `kitti-tools prepare --root {root}` first")
        return root
    from pointdistiller.kitti_tools.prepare import prepare_kitti
    from pointdistiller.kitti_tools.synth.dataset import generate_dataset

    root = data.synthetic_dir or os.path.join(
        cache_root(), f"synthetic-{data.synthetic_frames}-{data.synthetic_seed}")
    done = os.path.join(root, ".prepared")
    if not os.path.isfile(done):
        if dist.is_main():
            log(f"generating {data.synthetic_frames} synthetic KITTI-layout scenes in {root} "
                f"(once; reused afterwards)")
            generate_dataset(root, data.synthetic_frames, seed=data.synthetic_seed, progress=True)
            prepare_kitti(root, splits=("train", "val", "trainval"), progress=True, log=log)
            with atomic_open(done, "w") as f:
                f.write("ok\n")
        dist.barrier()
    return root


def build_loader(root: str, data: DataConfig, model_cfg: Dict, train: TrainConfig, split: str,
                 training: bool) -> Tuple[DataLoader, KittiDataset]:
    """A DataLoader of ``split`` with the collator of the model's declared input (voxels of its
    voxelization settings with the train or test voxel budget, or its resampled points)."""
    info = os.path.join(root, f"kitti_infos_{split}.json")
    if not os.path.isfile(info):
        raise RunError(f"{info} not found (split {split!r}); run `kitti-tools prepare --root {root}`")
    dataset = KittiDataset(info, root, class_names=CLASS_NAMES,
                           point_range=point_range(model_cfg),
                           training=training, augment=data.augment if training else None,
                           fov_reduce=data.fov_reduce, seed=train.seed,
                           num_features=num_point_features(model_cfg))
    if len(dataset) == 0:
        raise RunError(f"{info}: the {split} split holds no frames")
    collate = build_collator(model_cfg, training)
    ds = _Repeated(dataset, train.repeat) if training and train.repeat > 1 else dataset
    sampler = ResumableSampler(len(ds), shuffle=training, seed=train.seed, rank=dist.rank(),
                               world=dist.world_size())
    loader = DataLoader(ds, batch_size=train.batch_size,
                        sampler=sampler, num_workers=train.workers, collate_fn=collate,
                        drop_last=False, worker_init_fn=_worker_init if train.workers > 0 else None,
                        persistent_workers=False)
    return loader, dataset
