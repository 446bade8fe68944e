"""Detections -> KITTI result files (``<frame_id>.txt``, 16 fields per line, one file per frame).

The LiDAR boxes of a detector become camera-frame KITTI objects: bottom-centre location, size
(h, w, l), ``rotation_y``, observation angle ``alpha`` and the 2D box of the projected 3D box,
clipped to the image. Boxes behind the camera or projecting wholly outside the image are dropped,
like the official tools expect (the benchmark only scores objects seen by camera 2).
"""
import os
from typing import Sequence, Tuple

import numpy as np

from pointdistiller.kitti_tools.fileio import atomic_open

from pointdistiller.kitti_tools.calib import Calib
from pointdistiller.kitti_tools.geometry import boxes_to_image, lidar_to_camera_boxes, observation_angle
from pointdistiller.kitti_tools.io import KittiObjects, format_objects


def _as_numpy(name: str, value) -> np.ndarray:
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch here
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name}: expected an array, got {type(value).__name__} ({exc})") from None


def detections_to_kitti(boxes_lidar, scores, labels, class_names: Sequence[str], calib: Calib,
                        image_shape: Tuple[int, int]) -> KittiObjects:
    """Converts one frame's detections to KITTI result objects.

    Args:
        boxes_lidar: ``[k, 7]`` LiDAR boxes ``(x, y, z_centre, l, w, h, yaw)`` (numpy or torch,
            any float dtype), metres and radians.
        scores: ``[k]`` confidences.
        labels: ``[k]`` integer class indices into ``class_names``.
        class_names: e.g. ``CLASS_NAMES`` = ("Car", "Pedestrian", "Cyclist").
        calib: the frame's calibration.
        image_shape: ``(height, width)`` of image 2.

    Returns:
        KittiObjects with scores, in the input order minus the dropped boxes: those whose centre
        lies behind the camera (depth <= 0) or whose projected 2D box does not overlap the image.
        ``bbox`` is clipped to the image, ``alpha`` is the observation angle; ``truncated`` and
        ``occluded`` are -1 (unknown), as results files conventionally hold.

    Raises:
        ValueError: wrong shapes, non-finite values or labels outside ``class_names``.
    """
    boxes = _as_numpy("boxes_lidar", boxes_lidar).astype(np.float64)
    scores = _as_numpy("scores", scores).astype(np.float64).reshape(-1)
    labels = _as_numpy("labels", labels)
    if boxes.ndim != 2 or boxes.shape[1] != 7:
        if boxes.size == 0:
            boxes = boxes.reshape(0, 7)
        else:
            raise ValueError(f"boxes_lidar: expected shape [k, 7], got {list(boxes.shape)}")
    k = len(boxes)
    if scores.shape != (k,):
        raise ValueError(f"scores: expected shape [{k}], got {list(scores.shape)}")
    labels = labels.reshape(-1)
    if labels.shape != (k,):
        raise ValueError(f"labels: expected shape [{k}], got {list(labels.shape)}")
    if k and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels: expected integer class indices, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    if k and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise ValueError(f"labels: values must lie in [0, {len(class_names)}), got "
                         f"[{labels.min()}, {labels.max()}]")
    if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
        raise ValueError("boxes_lidar/scores: NaN or inf values")
    if k == 0:
        return KittiObjects.empty(with_score=True)

    location, hwl, rotation_y = lidar_to_camera_boxes(boxes, calib)
    centre_depth = calib.lidar_to_image(boxes[:, :3])[1]
    bbox, _ = boxes_to_image(boxes, calib, image_shape, clip=False)
    height, width = image_shape
    keep = ((centre_depth > 0) & (bbox[:, 0] < width) & (bbox[:, 1] < height)
            & (bbox[:, 2] > 0) & (bbox[:, 3] > 0))
    bbox[:, [0, 2]] = np.clip(bbox[:, [0, 2]], 0, width - 1)
    bbox[:, [1, 3]] = np.clip(bbox[:, [1, 3]], 0, height - 1)
    names = np.asarray([class_names[i] for i in labels], dtype=object)
    objects = KittiObjects(
        name=names, truncated=np.full(k, -1.0), occluded=np.full(k, -1, np.int64),
        alpha=observation_angle(location, rotation_y), bbox=bbox, hwl=hwl, location=location,
        rotation_y=rotation_y, score=scores)
    return objects.select(keep)


def write_results(directory: str, frame_id: str, objects: KittiObjects) -> str:
    """Writes ``<directory>/<frame_id>.txt`` atomically (an empty file when there are no objects).

    Returns:
        The path written.

    Raises:
        ValueError: ``objects`` carries no scores, or ``frame_id`` is not a plain file name.
    """
    if objects.score is None:
        raise ValueError("objects: result files need scores (objects.score is None)")
    if not frame_id or os.sep in frame_id or frame_id in (".", ".."):
        raise ValueError(f"frame_id: expected a plain id like '000008', got {frame_id!r}")
    path = os.path.join(directory, f"{frame_id}.txt")
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(format_objects(objects))
    return path
