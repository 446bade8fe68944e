"""The torch-free runtime of an exported student: numpy, numba and onnxruntime only.

    from pointdistiller.deploy.runtime import Detector
    detector = Detector("bundle/")              # checks the bundle's sha256 first
    detections = detector(points)               # points [N, 4] float32 (x, y, z, intensity), LiDAR

Per frame: the points the training pipeline would have kept (the camera's field of view when the
config reduced to it and a calibration is given; the point range), hard voxelization
(:class:`~pointdistiller.deploy.kernels.Voxelizer`, bit-identical to the toolkit's op), the ONNX
network, then the decoding of ``pointdistiller.detectors.post_processing.decode_detections``:
sigmoid scores, the ``nms_pre`` best anchors above the score threshold (ties to lower indices),
residual decoding against the bundle's anchors, the direction-bin heading fix, rotated BEV NMS per
class, and the ``max_detections`` best of all classes. Every number comes from ``deploy.json``.
"""
import math
import os
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from pointdistiller.deploy.bundle import INPUT_NAMES, read_bundle
from pointdistiller.deploy.kernels import Voxelizer, nms_bev, select_mask


@dataclass
class DeployDetections:
    """Detections of one frame: ``boxes [k, 7]`` float32 LiDAR ``(x, y, z_centre, l, w, h, yaw)``,
    ``scores [k]`` float32 descending, ``labels [k]`` int64 indices into ``class_names``."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.scores.shape[0])


def _limit_period(val: np.ndarray, offset: float, period: float) -> np.ndarray:
    return val - np.floor(val / np.float32(period) + np.float32(offset)) * np.float32(period)


def _top_k_lowest_index(values: np.ndarray, k: int) -> np.ndarray:
    """Ascending indices of the ``k`` largest values, ties at the k-th value to lower indices."""
    kth = np.partition(values, len(values) - k)[len(values) - k]
    above = values > kth
    ties = np.nonzero(values == kth)[0][: k - int(above.sum())]
    chosen = above.copy()
    chosen[ties] = True
    return np.nonzero(chosen)[0]


def _anchor_rows(head_map: np.ndarray, rows: np.ndarray, num_anchors: int) -> np.ndarray:
    """Values of the flattened anchors ``rows`` (``(h * W + w) * A + a``) from one head map
    ``[1, A*D, H, W]`` -> ``[len(rows), D]``, without transposing the whole map."""
    _, channels, _, w = head_map.shape
    d = channels // num_anchors
    cell, a = np.divmod(rows, num_anchors)
    h, x = np.divmod(cell, w)
    return head_map[0][(a * d)[:, None] + np.arange(d)[None, :], h[:, None], x[:, None]]


def decode(cls: np.ndarray, box: np.ndarray, dirs: np.ndarray, anchors: np.ndarray,
           post: Dict) -> DeployDetections:
    """Detections from the head's raw maps of one frame (``[1, A*K, H, W]``, ``[1, A*7, H, W]``,
    ``[1, A*2, H, W]``) and the flattened anchors ``[H*W*A, 7]`` (order ``(h * W + w) * A + a``);
    ``post`` is deploy.json's ``post_processing``."""
    n = anchors.shape[0]
    _, _, h, w = cls.shape
    num_anchors = n // (h * w)
    k = cls.shape[1] // num_anchors
    thr = np.float32(post["score_threshold"])
    # sigmoid is monotone, so the best score of an anchor is the sigmoid of its best logit
    best_logit = cls[0].reshape(num_anchors, k, h, w).max(axis=1).transpose(1, 2, 0).reshape(n)
    best = (1.0 / (1.0 + np.exp(-best_logit))).astype(np.float32)
    keep = np.nonzero(best > thr)[0]
    nms_pre = post["nms_pre"]
    if nms_pre > 0 and len(keep) > nms_pre:
        keep = keep[_top_k_lowest_index(best[keep], nms_pre)]
    logits = _anchor_rows(cls, keep, num_anchors)
    scores = (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
    deltas = _anchor_rows(box, keep, num_anchors)
    dir_logits = _anchor_rows(dirs, keep, num_anchors)
    a = anchors[keep]
    diag = np.sqrt(a[:, 3] * a[:, 3] + a[:, 4] * a[:, 4])
    with np.errstate(over="ignore"):   # an overflowing size is dropped below, as in PyTorch
        boxes = np.stack([deltas[:, 0] * diag + a[:, 0], deltas[:, 1] * diag + a[:, 1],
                          deltas[:, 2] * a[:, 5] + a[:, 2], np.exp(deltas[:, 3]) * a[:, 3],
                          np.exp(deltas[:, 4]) * a[:, 4], np.exp(deltas[:, 5]) * a[:, 5],
                          deltas[:, 6] + a[:, 6]], axis=1).astype(np.float32)
    offset = np.float32(post["dir_offset"])
    bins = dir_logits.argmax(axis=1).astype(np.float32)
    boxes[:, 6] = _limit_period(boxes[:, 6] - offset, 0.0, math.pi) + offset + np.float32(math.pi) * bins
    finite = np.isfinite(boxes).all(axis=1)
    kept_boxes, kept_scores, kept_labels = [], [], []
    for c in range(scores.shape[1]):
        candidates = np.nonzero((scores[:, c] > thr) & finite)[0]
        if len(candidates) == 0:
            continue
        chosen = nms_bev(boxes[candidates], scores[candidates, c], post["nms_iou_threshold"])
        kept_boxes.append(boxes[candidates][chosen])
        kept_scores.append(scores[candidates, c][chosen])
        kept_labels.append(np.full(len(chosen), c, np.int64))
    if not kept_boxes:
        return DeployDetections(np.zeros((0, 7), np.float32), np.zeros(0, np.float32),
                                np.zeros(0, np.int64))
    boxes, scores, labels = (np.concatenate(kept_boxes), np.concatenate(kept_scores),
                             np.concatenate(kept_labels))
    order = np.argsort(-scores, kind="stable")[: post["max_detections"]]
    return DeployDetections(boxes[order], scores[order], labels[order])


class Detector:
    """A deployment bundle, ready to detect.

    Args:
        bundle: the folder ``pd-export`` wrote.
        threads: onnxruntime intra-op threads (1 on a shared CPU; 0 lets onnxruntime choose).
        providers: onnxruntime execution providers (default: CPU).
    """

    def __init__(self, bundle: str, threads: int = 1, providers: Optional[Sequence[str]] = None):
        import onnxruntime as ort

        self.folder = bundle
        self.deploy = read_bundle(bundle)
        self.class_names = tuple(self.deploy["class_names"])
        self.anchors = np.load(os.path.join(bundle, self.deploy["anchors_file"]["file"]),
                               allow_pickle=False)
        v = self.deploy["voxelization"]
        self.point_range = tuple(v["point_range"])
        self.voxelizer = Voxelizer(v["voxel_size"], v["point_range"], v["max_points"],
                                   v["max_voxels"])
        self.num_features = self.deploy["input"]["num_point_features"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            os.path.join(bundle, self.deploy["network"]["file"]), options,
            providers=list(providers) if providers else ["CPUExecutionProvider"])

    def select_points(self, points: np.ndarray, calib=None, image_shape: Optional[Tuple[int, int]] = None
                      ) -> np.ndarray:
        """The points the training pipeline keeps: the field of view of camera 2 (when the config
        reduced to it and ``calib`` is given), then the point range, ``min <= p < max`` per axis."""
        points = np.asarray(points, np.float32)
        if points.ndim != 2 or points.shape[1] != self.num_features:
            raise ValueError(f"points: expected [N, {self.num_features}] "
                             f"({', '.join(self.deploy['input']['columns'])}), got {points.shape}")
        fov = calib if self.deploy["input"]["fov_reduce"] else None
        return points[select_mask(points, self.point_range, fov, image_shape or (375, 1242))]

    def network(self, points: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The head's raw maps ``(cls, box, dir)`` for already selected points."""
        voxels, coords, num_points = self.voxelizer(points)
        return tuple(self.session.run(None, dict(zip(INPUT_NAMES, (voxels, num_points, coords)))))

    def __call__(self, points: np.ndarray, calib=None,
                 image_shape: Optional[Tuple[int, int]] = None) -> DeployDetections:
        """Detections of one frame of raw LiDAR points ``[N, C]`` float32 (LiDAR frame)."""
        cls, box, dirs = self.network(self.select_points(points, calib, image_shape))
        return decode(cls, box, dirs, self.anchors, self.deploy["post_processing"])
