"""Training-time augmentation of LiDAR scenes (mmdetection3d's KITTI 3-class pipeline).

Order, as in the PointPillars/SECOND configs: GT sampling from the database, per-object noise,
random flip along the x axis, global rotation, global scaling; the dataset then applies the range
filter and shuffles the points. Every step is a plain function of ``(points, boxes, ..., rng)``:

- points: ``[N, C]`` float32, columns x, y, z (LiDAR frame, metres), then features (reflectance).
- boxes: ``[n, 7]`` float64 LiDAR boxes ``(x, y, z_centre, l, w, h, yaw)``.
- names: ``[n]`` object array of KITTI type names (all labelled non-DontCare objects, so that
  collision checks also see Vans, Trucks, ...; the dataset keeps its classes afterwards).
- rng: a ``numpy.random.Generator``; the same generator state gives the same result.
"""
import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from pointdistiller.kitti_tools.errors import KittiFormatError
from pointdistiller.kitti_tools.geometry import (boxes_overlap_bev, limit_period, points_in_boxes,
                                                 rotate_points_z)
from pointdistiller.kitti_tools.io import KITTI_TYPES, read_velodyne


@dataclass
class AugmentConfig:
    """Augmentation settings (defaults: the PointPillars/SECOND KITTI 3-class recipe).

    Attributes:
        gt_sampling: paste objects from the GT database into the scene.
        sample_counts: per class, the number of objects a scene is filled up to (existing
            objects of the class count; "up to 15 per class").
        db_min_points: database objects with fewer points are never sampled.
        db_skip_difficulty: database objects of these KITTI difficulties are never sampled
            (-1: neither easy, moderate nor hard).
        db_info_path: the ``kitti_dbinfos_*.json`` file; None: ``kitti_dbinfos_train.json`` next
            to the dataset's info file.
        object_noise: move each object (box and its points) by a random rigid motion that does not
            collide with the other boxes in BEV.
        object_translation_std: standard deviation of the per-object translation (x, y, z), metres.
        object_rotation: per-object yaw noise is uniform in ``[-object_rotation, object_rotation]``.
        object_noise_tries: candidate motions per object; the first collision-free one is used,
            none if all collide.
        flip_x_prob: probability of the flip along the x axis (y -> -y, yaw -> -yaw).
        global_rotation: scene yaw uniform in ``[-global_rotation, global_rotation]``, radians.
        global_scale: scene scale uniform in ``[low, high]``.
        shuffle_points: shuffle the point order.
    """

    gt_sampling: bool = True
    sample_counts: Dict[str, int] = field(
        default_factory=lambda: {"Car": 15, "Pedestrian": 15, "Cyclist": 15})
    db_min_points: int = 5
    db_skip_difficulty: Tuple[int, ...] = (-1,)
    db_info_path: Optional[str] = None
    object_noise: bool = True
    object_translation_std: Tuple[float, float, float] = (0.25, 0.25, 0.25)
    object_rotation: float = math.pi / 20
    object_noise_tries: int = 100
    flip_x_prob: float = 0.5
    global_rotation: float = math.pi / 4
    global_scale: Tuple[float, float] = (0.95, 1.05)
    shuffle_points: bool = True

    def __post_init__(self):
        self.sample_counts = dict(self.sample_counts)
        for name, count in self.sample_counts.items():
            if name not in KITTI_TYPES or name == "DontCare":
                raise ValueError(f"sample_counts: unknown class {name!r} (KITTI types: "
                                 f"{', '.join(KITTI_TYPES[:-1])})")
            if not isinstance(count, int) or count < 0:
                raise ValueError(f"sample_counts[{name!r}]: expected an integer >= 0, got {count!r}")
        self.db_skip_difficulty = tuple(int(d) for d in self.db_skip_difficulty)
        self.object_translation_std = tuple(float(v) for v in self.object_translation_std)
        self.global_scale = tuple(float(v) for v in self.global_scale)
        if len(self.object_translation_std) != 3 or min(self.object_translation_std) < 0:
            raise ValueError("object_translation_std: expected 3 values >= 0, got "
                             f"{self.object_translation_std}")
        if len(self.global_scale) != 2 or not 0 < self.global_scale[0] <= self.global_scale[1]:
            raise ValueError(f"global_scale: expected (low, high) with 0 < low <= high, got "
                             f"{self.global_scale}")
        if not 0.0 <= self.flip_x_prob <= 1.0:
            raise ValueError(f"flip_x_prob: expected a probability, got {self.flip_x_prob}")
        for name in ("object_rotation", "global_rotation"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: expected >= 0, got {getattr(self, name)}")
        if self.object_noise_tries < 1 or self.db_min_points < 0:
            raise ValueError("object_noise_tries must be >= 1 and db_min_points >= 0")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "AugmentConfig":
        """Builds a config from a mapping (e.g. a YAML section); unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown augmentation setting(s): {', '.join(unknown)} "
                             f"(known: {', '.join(sorted(known))})")
        return cls(**dict(values))


# ---------------------------------------------------------------------------------------------
# GT sampling
# ---------------------------------------------------------------------------------------------
class GTSampler:
    """Samples database objects into scenes without BEV collisions.

    Args:
        db_info_path: ``kitti_dbinfos_*.json`` written by ``kitti-tools prepare``; the ``.bin``
            paths in it are relative to its folder and hold points relative to the box centre.
        sample_counts: per class, the number of objects a scene is filled up to.
        min_points: database objects with fewer points are skipped.
        skip_difficulty: database objects of these difficulties are skipped.
        num_features: values per point in the ``.bin`` files.
    """

    def __init__(self, db_info_path: str, sample_counts: Mapping[str, int], min_points: int = 5,
                 skip_difficulty: Sequence[int] = (-1,), num_features: int = 4):
        try:
            with open(db_info_path, "r", encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            raise KittiFormatError(db_info_path, "GT database info file not found (run "
                                                 "`kitti-tools prepare`)") from None
        except ValueError as exc:
            raise KittiFormatError(db_info_path, f"not valid JSON ({exc})") from None
        classes = data.get("classes") if isinstance(data, dict) else None
        if not isinstance(classes, dict):
            raise KittiFormatError(db_info_path, "no 'classes' mapping: not a GT database info file")
        self.base_dir = os.path.dirname(os.path.abspath(db_info_path))
        self.sample_counts = dict(sample_counts)
        self.num_features = num_features
        skip = set(int(d) for d in skip_difficulty)
        self.pools: Dict[str, list] = {}
        for name in self.sample_counts:
            entries = classes.get(name, [])
            self.pools[name] = [e for e in entries
                                if e["num_points"] >= min_points and e["difficulty"] not in skip]
        self.pool_boxes = {name: np.asarray([e["box"] for e in pool], np.float64).reshape(-1, 7)
                           for name, pool in self.pools.items()}

    def load_points(self, entry: dict) -> np.ndarray:
        """``[n, num_features]`` float32 points of one database object, in the scene frame."""
        points = read_velodyne(os.path.join(self.base_dir, entry["path"]), self.num_features)
        points[:, :3] += np.asarray(entry["box"][:3], np.float32)
        return points

    def sample(self, boxes: np.ndarray, names: np.ndarray, rng: np.random.Generator
               ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Draws objects that collide neither with ``boxes`` nor with each other.

        Args:
            boxes: ``[n, 7]`` the scene's boxes; names: ``[n]`` their types.

        Returns:
            (``[s, 7]`` float64 sampled boxes, ``[s]`` names, ``[P, num_features]`` float32 their
            points in the scene frame).
        """
        occupied = np.asarray(boxes, np.float64).reshape(-1, 7)
        new_boxes, new_names, new_points = [], [], []
        for name, target in self.sample_counts.items():
            pool = self.pools[name]
            want = min(target - int(np.sum(names == name)), len(pool))
            if want <= 0:
                continue
            picks = rng.choice(len(pool), size=want, replace=False)
            candidates = self.pool_boxes[name][picks]
            free = ~boxes_overlap_bev(candidates, occupied).any(axis=1)
            mutual = boxes_overlap_bev(candidates, candidates)
            accepted = []
            for i in np.nonzero(free)[0]:
                if not mutual[i, accepted].any():
                    accepted.append(i)
            if not accepted:
                continue
            occupied = np.concatenate([occupied, candidates[accepted]])
            for i in accepted:
                new_boxes.append(candidates[i])
                new_names.append(name)
                new_points.append(self.load_points(pool[picks[i]]))
        if not new_boxes:
            return (np.zeros((0, 7)), np.zeros(0, dtype=object),
                    np.zeros((0, self.num_features), np.float32))
        return (np.stack(new_boxes), np.asarray(new_names, dtype=object),
                np.concatenate(new_points).astype(np.float32, copy=False))


def paste_objects(points: np.ndarray, boxes: np.ndarray, names: np.ndarray, new_boxes: np.ndarray,
                  new_names: np.ndarray, new_points: np.ndarray):
    """Adds sampled objects to a scene: removes the scene points inside the new boxes, then
    appends the new points, boxes and names."""
    if len(new_boxes) == 0:
        return points, boxes, names
    inside = points_in_boxes(points, new_boxes).any(axis=1)
    points = np.concatenate([points[~inside], new_points.astype(points.dtype, copy=False)])
    return (points, np.concatenate([boxes, new_boxes]), np.concatenate([names, new_names]))


# ---------------------------------------------------------------------------------------------
# per-object and global transforms
# ---------------------------------------------------------------------------------------------
def object_noise(points: np.ndarray, boxes: np.ndarray, rng: np.random.Generator,
                 translation_std=(0.25, 0.25, 0.25), max_rotation: float = math.pi / 20,
                 tries: int = 100) -> Tuple[np.ndarray, np.ndarray]:
    """Moves each box and the points inside it by a random yaw (about the box centre) and
    translation; a motion whose box overlaps another box in BEV is rejected, and after ``tries``
    rejections the object stays put. Boxes are processed in order against the others' current
    positions. Each point moves with the first box that contained it.

    Returns:
        (``[N, C]`` points, ``[n, 7]`` boxes): new arrays.
    """
    points = points.copy()
    boxes = np.asarray(boxes, np.float64).copy()
    n = len(boxes)
    if n == 0:
        return points, boxes
    inside = points_in_boxes(points, boxes)
    owner = np.where(inside.any(axis=1), np.argmax(inside, axis=1), -1)
    std = np.asarray(translation_std, np.float64)
    for i in range(n):
        shift = rng.normal(size=(tries, 3)) * std
        turn = rng.uniform(-max_rotation, max_rotation, size=tries)
        candidates = np.repeat(boxes[i:i + 1], tries, axis=0)
        candidates[:, :3] += shift
        candidates[:, 6] += turn
        others = np.delete(boxes, i, axis=0)
        ok = ~boxes_overlap_bev(candidates, others).any(axis=1)
        if not ok.any():
            continue
        t = int(np.argmax(ok))
        sel = owner == i
        local = points[sel].copy()
        local[:, :3] -= boxes[i, :3].astype(points.dtype)
        local = rotate_points_z(local, turn[t])
        local[:, :3] += (boxes[i, :3] + shift[t]).astype(points.dtype)
        points[sel] = local
        boxes[i] = candidates[t]
    boxes[:, 6] = limit_period(boxes[:, 6])
    return points, boxes


def flip_x(points: np.ndarray, boxes: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Mirror along the x axis: y -> -y for points and boxes, yaw -> -yaw."""
    points = points.copy()
    boxes = np.asarray(boxes, np.float64).copy()
    points[:, 1] = -points[:, 1]
    boxes[:, 1] = -boxes[:, 1]
    boxes[:, 6] = limit_period(-boxes[:, 6])
    return points, boxes


def rotate_scene(points: np.ndarray, boxes: np.ndarray, angle: float):
    """Rotates points and boxes by ``angle`` about the z axis (box yaws increase by ``angle``)."""
    boxes = np.asarray(boxes, np.float64).copy()
    boxes[:, :3] = rotate_points_z(boxes[:, :3], angle)
    boxes[:, 6] = limit_period(boxes[:, 6] + angle)
    return rotate_points_z(points, angle), boxes


def scale_scene(points: np.ndarray, boxes: np.ndarray, scale: float):
    """Scales point coordinates, box centres and box sizes by ``scale``."""
    points = points.copy()
    boxes = np.asarray(boxes, np.float64).copy()
    points[:, :3] = (points[:, :3].astype(np.float64) * scale).astype(points.dtype)
    boxes[:, :6] *= scale
    return points, boxes


def points_in_range(points: np.ndarray, point_range: Sequence[float]) -> np.ndarray:
    """``[N]`` bool: ``xmin <= x < xmax`` and likewise for y and z; ``point_range`` is
    ``(xmin, ymin, zmin, xmax, ymax, zmax)``."""
    lo = np.asarray(point_range[:3], np.float64)
    hi = np.asarray(point_range[3:], np.float64)
    xyz = points[:, :3]
    return ((xyz >= lo) & (xyz < hi)).all(axis=1)


def boxes_in_range(boxes: np.ndarray, point_range: Sequence[float]) -> np.ndarray:
    """``[n]`` bool: the box centre lies inside the BEV part (x, y) of ``point_range``."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 7)
    return ((boxes[:, 0] >= point_range[0]) & (boxes[:, 0] < point_range[3])
            & (boxes[:, 1] >= point_range[1]) & (boxes[:, 1] < point_range[4]))


def augment_scene(points: np.ndarray, boxes: np.ndarray, names: np.ndarray, config: AugmentConfig,
                  rng: np.random.Generator, sampler: Optional[GTSampler] = None):
    """Applies GT sampling (when ``sampler`` is given and ``config.gt_sampling``), object noise,
    x-flip, global rotation and global scaling, in that order.

    Returns:
        (points ``[N', C]`` float32, boxes ``[n', 7]`` float64, names ``[n']``, record): the record
        says what was drawn: ``{"sampled": int, "flip_x": bool, "rotation": float, "scale": float}``.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 7)
    names = np.asarray(names, dtype=object).reshape(-1)
    record = {"sampled": 0, "flip_x": False, "rotation": 0.0, "scale": 1.0}
    if sampler is not None and config.gt_sampling:
        new_boxes, new_names, new_points = sampler.sample(boxes, names, rng)
        points, boxes, names = paste_objects(points, boxes, names, new_boxes, new_names, new_points)
        record["sampled"] = int(len(new_boxes))
    if config.object_noise:
        points, boxes = object_noise(points, boxes, rng, config.object_translation_std,
                                     config.object_rotation, config.object_noise_tries)
    if rng.random() < config.flip_x_prob:
        points, boxes = flip_x(points, boxes)
        record["flip_x"] = True
    if config.global_rotation > 0:
        angle = float(rng.uniform(-config.global_rotation, config.global_rotation))
        points, boxes = rotate_scene(points, boxes, angle)
        record["rotation"] = angle
    low, high = config.global_scale
    if (low, high) != (1.0, 1.0):
        scale = float(rng.uniform(low, high))
        points, boxes = scale_scene(points, boxes, scale)
        record["scale"] = scale
    return points, boxes, names, record
