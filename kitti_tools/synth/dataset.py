"""Synthetic KITTI datasets: independent frames seeded from (seed, frame index), written in KITTI's
layout by a process pool, resumable and byte-for-byte reproducible.

Layout under ``out``::

    training/velodyne/NNNNNN.bin  training/calib/NNNNNN.txt  training/image_2/NNNNNN.png
    training/label_2/NNNNNN.txt   (written last: a frame is complete when its label exists)
    ImageSets/train.txt  ImageSets/val.txt  ImageSets/trainval.txt
    synth.json                    (generator version and seed, checked on reruns)
"""
import dataclasses
import json
import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Dict, List, Optional, Tuple

import numpy as np

from pointdistiller.kitti_tools.fileio import atomic_write_json

from pointdistiller.kitti_tools.io import (frame_paths, write_calib, write_ids, write_label,
                                           write_png_header_only, write_velodyne)
from pointdistiller.kitti_tools.synth.frame import SynthFrame, render_frame
from pointdistiller.kitti_tools.synth.scene import generate_scene
from pointdistiller.kitti_tools.synth.sensors import IMAGE_SHAPE, LidarModel, kitti_calib

GENERATOR_VERSION = 1
META_FILE = "synth.json"


def frame_id(index: int) -> str:
    return f"{index:06d}"


def frame_rngs(seed: int, frame_index: int) -> Tuple[np.random.Generator, np.random.Generator]:
    """(scene generator, sensor-noise generator) of frame ``frame_index``, from (seed, index) only."""
    if seed < 0 or frame_index < 0:
        raise ValueError(f"seed ({seed}) and frame_index ({frame_index}) must be non-negative")
    scene_ss, sensor_ss = np.random.SeedSequence([int(seed), int(frame_index)]).spawn(2)
    return np.random.default_rng(scene_ss), np.random.default_rng(sensor_ss)


def generate_frame(seed: int, frame_index: int, lidar: Optional[LidarModel] = None) -> SynthFrame:
    """Generates frame ``frame_index`` of the dataset with ``seed`` (deterministic).

    Returns:
        A :class:`SynthFrame`: ``points`` ``[N, 4]`` float32, ``objects`` (KittiObjects), ``calib``,
        ``image_shape`` (375, 1242), ``lidar_boxes`` ``[n, 7]`` float64 of the labelled objects.
    """
    scene_rng, sensor_rng = frame_rngs(seed, frame_index)
    lidar = lidar or LidarModel()
    calib = kitti_calib()
    scene = generate_scene(scene_rng, calib, IMAGE_SHAPE, mount_height=lidar.mount_height)
    return render_frame(scene, sensor_rng, calib, IMAGE_SHAPE, lidar)


def split_ids(frames: int, val_fraction: float) -> Tuple[List[str], List[str]]:
    """(train ids, val ids): frame i is in val when ``floor((i + 1) f) > floor(i f)``, so val holds
    ``floor(frames * f)`` evenly spread frames and extending a dataset keeps earlier assignments."""
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"val_fraction must be in [0, 1], got {val_fraction}")
    train, val = [], []
    for i in range(frames):
        in_val = math.floor((i + 1) * val_fraction + 1e-9) > math.floor(i * val_fraction + 1e-9)
        (val if in_val else train).append(frame_id(i))
    return train, val


def frame_complete(out: str, index: int) -> bool:
    """Whether all four files of a frame exist (the label is written last)."""
    paths = frame_paths(out, frame_id(index))
    return all(os.path.isfile(paths[k]) for k in ("label", "velodyne", "calib", "image"))


def write_frame(out: str, seed: int, index: int, lidar: Optional[LidarModel] = None) -> Dict[str, int]:
    """Generates and writes one frame (label file last); returns counts for progress reports."""
    frame = generate_frame(seed, index, lidar)
    paths = frame_paths(out, frame_id(index))
    write_velodyne(paths["velodyne"], frame.points)
    write_calib(paths["calib"], frame.calib)
    write_png_header_only(paths["image"], *frame.image_shape)
    write_label(paths["label"], frame.objects)
    return {"points": int(len(frame.points)), "objects": int(len(frame.lidar_boxes))}


def _worker(job):
    out, seed, index, lidar = job
    return index, write_frame(out, seed, index, lidar)


def _check_meta(out: str, seed: int, lidar: LidarModel) -> None:
    path = os.path.join(out, META_FILE)
    want = {"generator_version": GENERATOR_VERSION, "seed": int(seed),
            "lidar": json.loads(json.dumps(dataclasses.asdict(lidar)))}
    if os.path.isfile(path):
        try:
            with open(path, "r", encoding="utf-8") as f:
                have = json.load(f)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: unreadable synth metadata ({exc}); remove it or use a new --out")
        for key, value in want.items():
            if have.get(key) != value:
                raise ValueError(f"{path}: this folder was generated with {key}={have.get(key)!r}, "
                                 f"not {value!r}; use a new --out or delete the folder")
    else:
        atomic_write_json(path, want)


def _pool_context():
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else methods[0])


def generate_dataset(out: str, frames: int, seed: int = 0, val_fraction: float = 0.5,
                     workers: int = 2, lidar: Optional[LidarModel] = None,
                     progress: bool = False) -> Dict[str, object]:
    """Writes a synthetic KITTI dataset of ``frames`` frames under ``out`` (see the module doc).

    Frames already complete are skipped, so an interrupted run can be resumed and a rerun with the
    same seed changes nothing. A folder made with another seed or LiDAR model is refused.

    Args:
        out: output folder (created).
        frames: number of frames (ids 000000 .. frames-1).
        seed: dataset seed; frame i depends only on (seed, i).
        val_fraction: share of frames listed in ImageSets/val.txt (see :func:`split_ids`).
        workers: processes (1: generate in this process).
        lidar: the LiDAR model (default HDL-64E-like).
        progress: show a tqdm progress bar.

    Returns:
        ``{"written": [...indices], "skipped": n, "points": total points written,
        "objects": total labelled objects written}``.
    """
    if frames < 0 or frames > 1_000_000:
        raise ValueError(f"frames must be in [0, 1000000], got {frames}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    train, val = split_ids(frames, val_fraction)
    lidar = lidar or LidarModel()
    os.makedirs(out, exist_ok=True)
    _check_meta(out, seed, lidar)
    todo = [i for i in range(frames) if not frame_complete(out, i)]
    stats = {"written": [], "skipped": frames - len(todo), "points": 0, "objects": 0}
    jobs = [(out, seed, i, lidar) for i in todo]
    if workers == 1 or len(todo) <= 1:
        _collect(map(_worker, jobs), stats, len(jobs), progress)
    else:
        _warm_up()
        # the pool forks before the progress bar starts its monitor thread
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)),
                                 mp_context=_pool_context()) as pool:
            _collect(pool.map(_worker, jobs, chunksize=1), stats, len(jobs), progress)
    write_ids(os.path.join(out, "ImageSets", "train.txt"), train)
    write_ids(os.path.join(out, "ImageSets", "val.txt"), val)
    write_ids(os.path.join(out, "ImageSets", "trainval.txt"), [frame_id(i) for i in range(frames)])
    stats["written"].sort()
    return stats


def _collect(results, stats, total: int, progress: bool) -> None:
    from tqdm import tqdm

    with tqdm(total=total, desc="synth", unit="frame", disable=not progress) as bar:
        for index, counts in results:
            stats["written"].append(index)
            stats["points"] += counts["points"]
            stats["objects"] += counts["objects"]
            bar.update(1)


def _warm_up() -> None:
    """Compiles (or loads from numba's cache) the kernels before forking, so workers share them."""
    from pointdistiller.kitti_tools.synth import raycast as rc

    prims = np.zeros((1, rc.PRIM_FIELDS))
    prims[0, rc.F_A:rc.F_C + 1] = 1.0
    prims[0, rc.F_COS] = 1.0
    prims[0, rc.F_DENSITY] = 1.0
    prims[0, rc.F_X] = 5.0
    ground = np.zeros(rc.GROUND_FIELDS)
    ground[rc.G_Z0] = -1.7
    ground[rc.G_ROAD_HALF] = 5.0
    rc.cast_lidar(prims, ground, np.zeros(2), 8, 2, 10.0)
    rc.cast_rays(np.zeros((1, 3)), np.array([[1.0, 0.0, 0.0]]), prims, ground)
