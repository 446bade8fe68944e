"""One synthetic frame: LiDAR scan of a scene and the KITTI labels of what the sensors see.

Labelling rules (what a KITTI annotator would have marked):

- An object is a candidate if its 3D box projects into the image (the 2D box clipped to the image
  has positive area). Objects behind the camera or outside its view are never labelled, though
  they still produce points.
- A candidate is labelled with its class if it lies within ``label_distance`` metres (horizontal)
  of the sensor and at least one LiDAR return of the object itself lies in its box.
- A candidate with no such return, or one farther than ``label_distance``, that camera 2 still
  sees (visible fraction > 0) becomes a ``DontCare`` region (its clipped 2D box).
- ``bbox``: the projected 3D box clipped to the image. ``truncated``: the fraction of the unclipped
  projected box's area outside the image (for boxes crossing the camera plane, the part in front is
  projected from points sampled along its edges).
- ``occluded``: from the visible fraction ``v`` seen by camera 2. A grid of
  ``occlusion_grid x occlusion_grid`` rays is cast from the camera centre through the clipped
  2D box; ``v`` = (rays whose first hit is the object) / (rays that hit the object when it is
  alone). Levels: ``v > 0.8`` -> 0, ``v > 0.5`` -> 1, ``v > 0.2`` -> 2, else 3.
- ``alpha`` = ``observation_angle(location, rotation_y)``.
"""
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from pointdistiller.kitti_tools.calib import Calib
from pointdistiller.kitti_tools.geometry import (boxes_to_image, lidar_box_corners,
                                                 lidar_to_camera_boxes, observation_angle,
                                                 points_in_boxes)
from pointdistiller.kitti_tools.io import KittiObjects
from pointdistiller.kitti_tools.synth import raycast as rc
from pointdistiller.kitti_tools.synth.scene import Scene
from pointdistiller.kitti_tools.synth.sensors import LidarModel, camera_rays

OCCLUSION_THRESHOLDS = (0.8, 0.5, 0.2)  # visible fraction above which levels 0, 1, 2 apply

# Reflectivities of the terrain materials.
_ASPHALT, _PAINT, _SIDEWALK, _CURB = 0.45, 0.95, 0.5, 0.45
_LINE_HALF_WIDTH, _DASH, _DASH_PERIOD = 0.07, 3.0, 9.0


@dataclass
class SynthFrame:
    """A generated frame.

    Attributes:
        points: ``[N, 4]`` float32 (x, y, z, reflectance in [0, 1]), LiDAR frame.
        objects: the label file's objects: labelled ones nearest first, then DontCare regions.
        calib: the frame's calibration.
        image_shape: (height, width) of image 2.
        lidar_boxes: ``[n, 7]`` float64 LiDAR boxes of the labelled (not DontCare) objects, in the
            order of ``objects``.
        num_points: ``[n]`` int64 LiDAR returns of each labelled object inside its box.
        visible_fraction: ``[n]`` float64 fraction of each labelled object camera 2 sees.
    """

    points: np.ndarray
    objects: KittiObjects
    calib: Calib
    image_shape: Tuple[int, int]
    lidar_boxes: np.ndarray
    num_points: np.ndarray
    visible_fraction: np.ndarray


def occlusion_level(visible_fraction: np.ndarray) -> np.ndarray:
    """``[n]`` int64 KITTI occlusion level 0..3 from visible fractions (see module doc)."""
    v = np.asarray(visible_fraction, np.float64)
    hi, mid, lo = OCCLUSION_THRESHOLDS
    return np.where(v > hi, 0, np.where(v > mid, 1, np.where(v > lo, 2, 3))).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# LiDAR
# ---------------------------------------------------------------------------------------------
def scan(scene: Scene, lidar: LidarModel, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Simulates one LiDAR sweep of ``scene``.

    Returns:
        (``[N, 4]`` float32 points ordered by beam then azimuth, ``[N]`` int64 owner object index of
        each point, -1 for background and terrain).
    """
    prims = scene.primitives()
    t, hit, cos = rc.cast_lidar(prims, scene.ground, lidar.elevations, lidar.num_columns,
                                lidar.interleave, lidar.max_range)
    beam, col = np.nonzero(np.isfinite(t))
    rng_t, hit, cos = t[beam, col], hit[beam, col], cos[beam, col].astype(np.float64)
    n = len(rng_t)
    keep = rng.random(n) >= lidar.dropout + lidar.dropout_far * (rng_t / lidar.max_range) ** 2
    noisy = rng_t + rng.normal(0.0, lidar.range_noise, n) if lidar.range_noise > 0 else rng_t
    el = lidar.elevations
    az = np.arange(lidar.num_columns) * (2.0 * np.pi / lidar.num_columns)
    cos_el = np.cos(el)[beam]
    dirs = np.stack([cos_el * np.cos(az)[col], cos_el * np.sin(az)[col], np.sin(el)[beam]], axis=1)
    xyz = dirs * noisy[:, None]
    exact = dirs * rng_t[:, None]

    refl = np.empty(n)
    is_prim = hit >= 0
    refl[is_prim] = prims[hit[is_prim], rc.F_REFL]
    refl[hit == rc.HIT_SIDEWALK] = _SIDEWALK
    refl[hit == rc.HIT_CURB] = _CURB
    road = hit == rc.HIT_ROAD
    refl[road] = _ASPHALT
    if len(scene.lane_lines) and road.any():
        ry, rx = exact[road, 1], exact[road, 0]
        painted = np.zeros(len(ry), dtype=bool)
        for y_line, dashed in scene.lane_lines:
            on = np.abs(ry - y_line) <= _LINE_HALF_WIDTH
            if dashed:
                on &= np.mod(rx, _DASH_PERIOD) < _DASH
            painted |= on
        refl[np.nonzero(road)[0][painted]] = _PAINT
    intensity = refl * (0.55 + 0.45 * cos) * (1.0 - 0.2 * rng_t / lidar.max_range)
    intensity = np.clip(intensity + rng.normal(0.0, 0.02, n), 0.0, 1.0)
    intensity = np.round(intensity, 2)

    owner = np.where(is_prim, prims[np.maximum(hit, 0), rc.F_OWNER], -1.0).astype(np.int64)
    points = np.concatenate([xyz, intensity[:, None]], axis=1).astype(np.float32)[keep]
    return points, owner[keep]


# ---------------------------------------------------------------------------------------------
# labels
# ---------------------------------------------------------------------------------------------
def _edge_samples(boxes: np.ndarray, per_edge: int = 16) -> np.ndarray:
    """``[n, 12 * per_edge, 3]`` points along the 12 edges of each box."""
    corners = lidar_box_corners(boxes)
    edges = np.array([[0, 1], [1, 2], [2, 3], [3, 0], [4, 5], [5, 6], [6, 7], [7, 4],
                      [0, 4], [1, 5], [2, 6], [3, 7]])
    s = np.linspace(0.0, 1.0, per_edge)[None, None, :, None]
    a, b = corners[:, edges[:, 0], None, :], corners[:, edges[:, 1], None, :]
    return (a + (b - a) * s).reshape(len(boxes), -1, 3)


def project_boxes(boxes: np.ndarray, calib: Calib, image_shape: Tuple[int, int]):
    """2D boxes of LiDAR boxes in image 2.

    Returns:
        (``[n, 4]`` unclipped boxes, ``[n, 4]`` clipped boxes, ``[n]`` bool the clipped box has
        positive area, ``[n]`` truncation in [0, 1]). Boxes crossing the camera plane are
        projected from edge samples in front of it.
    """
    n = len(boxes)
    raw, front = boxes_to_image(boxes, calib, image_shape, clip=False)
    crossing = ~front & (raw != 0).any(axis=1)
    if crossing.any():
        pts = _edge_samples(boxes[crossing])
        uv, depth = calib.lidar_to_image(pts.reshape(-1, 3))
        uv, depth = uv.reshape(len(pts), -1, 2), depth.reshape(len(pts), -1)
        for k, i in enumerate(np.nonzero(crossing)[0]):
            ok = depth[k] > 0.1
            raw[i] = [uv[k, ok, 0].min(), uv[k, ok, 1].min(), uv[k, ok, 0].max(), uv[k, ok, 1].max()]
    h, w = image_shape
    clipped = raw.copy()
    clipped[:, [0, 2]] = np.clip(raw[:, [0, 2]], 0, w - 1)
    clipped[:, [1, 3]] = np.clip(raw[:, [1, 3]], 0, h - 1)
    area = np.clip(clipped[:, 2] - clipped[:, 0], 0, None) * np.clip(clipped[:, 3] - clipped[:, 1], 0, None)
    raw_area = (raw[:, 2] - raw[:, 0]) * (raw[:, 3] - raw[:, 1])
    in_image = ((front | crossing) & (area > 0)).astype(bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        trunc = np.where(raw_area > 0, 1.0 - area / raw_area, 1.0)
    return raw, clipped, in_image, np.clip(trunc, 0.0, 1.0)


def visible_fractions(scene: Scene, prims: np.ndarray, calib: Calib, boxes_2d: np.ndarray,
                      indices: np.ndarray, grid: int) -> np.ndarray:
    """Fraction of each object ``indices[k]`` that camera 2 sees through its 2D box (module doc)."""
    out = np.zeros(len(indices))
    if len(indices) == 0:
        return out
    s = (np.arange(grid) + 0.5) / grid
    uu, vv = np.meshgrid(s, s, indexing="xy")
    uu, vv = uu.ravel(), vv.ravel()
    owners = prims[:, rc.F_OWNER].astype(np.int64)
    uv = np.concatenate([np.stack([b[0] + (b[2] - b[0]) * uu, b[1] + (b[3] - b[1]) * vv], 1)
                         for b in boxes_2d[indices]])
    centre, dirs = camera_rays(calib, uv)
    origins = np.broadcast_to(centre, dirs.shape)
    ray_ids = np.arange(len(dirs), dtype=np.int64) + (1 << 40)
    _, first = rc.cast_rays(origins, dirs, prims, scene.ground, use_ground=True, ray_ids=ray_ids)
    first_owner = np.where(first >= 0, owners[np.maximum(first, 0)], -1)
    m = grid * grid
    for k, obj in enumerate(indices):
        sl = slice(k * m, (k + 1) * m)
        own = np.nonzero(owners == obj)[0]
        _, alone = rc.cast_rays(origins[sl], dirs[sl], prims[own], scene.ground, use_ground=False,
                                ray_ids=ray_ids[sl])
        n_alone = int((alone >= 0).sum())
        if n_alone:
            out[k] = min(1.0, float((first_owner[sl] == obj).sum()) / n_alone)
    return out


def label_scene(scene: Scene, points: np.ndarray, owner: np.ndarray, calib: Calib,
                image_shape: Tuple[int, int], label_distance: float = 80.0, occlusion_grid: int = 12):
    """KITTI labels of ``scene`` given its scan (see the module doc for the rules).

    Returns:
        (KittiObjects, ``[n, 7]`` LiDAR boxes, ``[n]`` points per box, ``[n]`` visible fraction),
        the arrays for the labelled (not DontCare) rows in label order.
    """
    boxes = scene.boxes()
    names = scene.names()
    n = len(boxes)
    if n == 0:
        return KittiObjects.empty(), np.zeros((0, 7)), np.zeros(0, np.int64), np.zeros(0)
    raw, clipped, in_image, trunc = project_boxes(boxes, calib, image_shape)
    dist = np.hypot(boxes[:, 0], boxes[:, 1])
    cand = np.nonzero(in_image)[0]
    prims = scene.primitives()
    vis = np.zeros(n)
    vis[cand] = visible_fractions(scene, prims, calib, clipped, cand, occlusion_grid)
    counts = np.zeros(n, np.int64)
    for i in cand:
        own = points[owner == i, :3]
        if len(own):
            counts[i] = int(points_in_boxes(own, boxes[i:i + 1]).sum())
    labelled = in_image & (counts >= 1) & (dist <= label_distance)
    dontcare = in_image & ~labelled & (vis > 0)
    lab = np.nonzero(labelled)[0]
    lab = lab[np.argsort(dist[lab], kind="stable")]
    dc = np.nonzero(dontcare)[0]
    dc = dc[np.argsort(dist[dc], kind="stable")]

    location, hwl, ry = lidar_to_camera_boxes(boxes[lab], calib)
    objects = KittiObjects(
        name=names[lab], truncated=trunc[lab], occluded=occlusion_level(vis[lab]),
        alpha=observation_angle(location, ry), bbox=clipped[lab], hwl=hwl, location=location,
        rotation_y=ry)
    if len(dc):
        k = len(dc)
        care = KittiObjects(
            name=np.array(["DontCare"] * k, dtype=object), truncated=np.full(k, -1.0),
            occluded=np.full(k, -1, np.int64), alpha=np.full(k, -10.0), bbox=clipped[dc],
            hwl=np.full((k, 3), -1.0), location=np.full((k, 3), -1000.0), rotation_y=np.full(k, -10.0))
        objects = KittiObjects(*[np.concatenate([getattr(objects, f), getattr(care, f)])
                                 for f in ("name", "truncated", "occluded", "alpha", "bbox", "hwl",
                                           "location", "rotation_y")])
    return objects, boxes[lab], counts[lab], vis[lab]


def render_frame(scene: Scene, rng: np.random.Generator, calib: Calib,
                 image_shape: Tuple[int, int], lidar: Optional[LidarModel] = None,
                 label_distance: float = 80.0, occlusion_grid: int = 12) -> SynthFrame:
    """Scans ``scene`` and labels it (see the module doc)."""
    lidar = lidar or LidarModel()
    points, owner = scan(scene, lidar, rng)
    objects, boxes, counts, vis = label_scene(scene, points, owner, calib, image_shape,
                                              label_distance, occlusion_grid)
    return SynthFrame(points=points, objects=objects, calib=calib, image_shape=tuple(image_shape),
                      lidar_boxes=boxes, num_points=counts, visible_fraction=vis)
