"""One KITTI-layout frame as pictures: its scan, calibration, image, ground truth and (optionally)
a folder of result files, rendered in the three views of :mod:`.render`."""
import os
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

from pointdistiller.kitti_tools.calib import Calib
from pointdistiller.kitti_tools.geometry import camera_to_lidar_boxes
from pointdistiller.kitti_tools import io as kio
from pointdistiller.kitti_tools.visual.render import (BevView, FrameBoxes, compose, render_3d,
                                                      render_bev, render_camera)

VIEWS = ("3d", "bev", "camera")


@dataclass
class Frame:
    """What the pictures of one frame need (image None when image_2 holds no pixels)."""

    frame_id: str
    points: np.ndarray
    calib: Calib
    image_shape: Tuple[int, int]
    image: Optional[np.ndarray]
    gt: FrameBoxes
    dets: FrameBoxes


def objects_to_boxes(objects: kio.KittiObjects, calib: Calib) -> FrameBoxes:
    """Camera-frame KITTI objects (labels or results) -> LiDAR boxes; DontCare is left out."""
    keep = objects.name != "DontCare"
    objects = objects.select(keep)
    boxes = camera_to_lidar_boxes(objects.location, objects.hwl, objects.rotation_y, calib)
    return FrameBoxes(boxes, objects.name, None if objects.score is None else objects.score)


def _read_image(path: str) -> Optional[np.ndarray]:
    """RGB pixels of a PNG, or None when it has none (the synthetic scenes' header-only PNGs)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, SyntaxError):
        return None


def load_frame(root: str, frame_id: str, results: Optional[str] = None, split: str = "training",
               velodyne: str = "velodyne") -> Frame:
    """Reads one frame of a KITTI-layout ``root`` (real or synthetic) and, when given, its result
    file in ``results`` (a missing file means no detections). ``velodyne`` falls back to
    ``velodyne_reduced`` when the full scan is absent."""
    paths = kio.frame_paths(root, frame_id, split, velodyne)
    if not os.path.isfile(paths["velodyne"]):
        reduced = kio.frame_paths(root, frame_id, split, "velodyne_reduced")["velodyne"]
        if os.path.isfile(reduced):
            paths["velodyne"] = reduced
    points = kio.read_velodyne(paths["velodyne"])
    calib = kio.read_calib(paths["calib"])
    image_shape = kio.read_image_size(paths["image"])
    gt = (objects_to_boxes(kio.read_label(paths["label"]), calib) if os.path.isfile(paths["label"])
          else FrameBoxes.empty())
    dets = FrameBoxes.empty(with_scores=True)
    if results is not None:
        path = os.path.join(results, f"{frame_id}.txt")
        if os.path.isfile(path):
            dets = objects_to_boxes(kio.read_label(path, kind="result"), calib)
    return Frame(frame_id, points, calib, image_shape, _read_image(paths["image"]), gt, dets)


def render_frame(frame: Frame, views: Sequence[str] = VIEWS, colour: str = "height",
                 bev: BevView = BevView(), width: int = 1280) -> np.ndarray:
    """The frame's views stacked into one picture ``[H, W, 3]`` uint8."""
    panels, titles = [], []
    counts = f"{len(frame.gt)} ground-truth boxes (white), {len(frame.dets)} detections"
    for view in views:
        if view == "3d":
            panels.append(render_3d(frame.points, frame.gt, frame.dets, colour=colour))
            titles.append(f"{frame.frame_id}: 3D, {counts}")
        elif view == "bev":
            panels.append(render_bev(frame.points, frame.gt, frame.dets, bev, colour))
            titles.append(f"{frame.frame_id}: bird's-eye view, x forward (up), {bev.scale:g} px/m")
        elif view == "camera":
            panels.append(render_camera(frame.image, frame.image_shape, frame.calib, frame.gt,
                                        frame.dets, frame.points))
            titles.append(f"{frame.frame_id}: camera 2"
                          + ("" if frame.image is not None else " (no pixels: LiDAR points by depth)"))
        else:
            raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    return compose(panels, titles, width)
