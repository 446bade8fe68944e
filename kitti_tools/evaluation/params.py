"""The fixed parameters of the KITTI 3D-object metric: classes, difficulty limits, minimum overlaps.

Values follow the official devkit (``evaluate_object.cpp``) and the python port
(``kitti_object_eval_python``); see ``shared/docs/kitti_eval.md`` section 2.
"""
from typing import Dict, Optional, Tuple

from pointdistiller.kitti_tools.classes import CLASS_NAMES

# Evaluated classes, in report order.
CLASSES: Tuple[str, ...] = CLASS_NAMES
# GT of the neighbouring class is "ignored" (may absorb a detection, never a TP or FN).
NEIGHBOUR: Dict[str, Optional[str]] = {"Car": "Van", "Pedestrian": "Person_sitting", "Cyclist": None}

DIFFICULTIES: Tuple[str, ...] = ("easy", "moderate", "hard")
# Indexed by difficulty. GT is ignored when occluded > MAX_OCCLUSION, truncated > MAX_TRUNCATION or
# its 2D height <= MIN_HEIGHT; a detection is ignored when its 2D height < MIN_HEIGHT.
MIN_HEIGHT: Tuple[float, ...] = (40.0, 25.0, 25.0)
MAX_OCCLUSION: Tuple[int, ...] = (0, 1, 2)
MAX_TRUNCATION: Tuple[float, ...] = (0.15, 0.3, 0.5)

# Matching metrics: 2D image box, bird's-eye view, 3D.
METRICS: Tuple[str, ...] = ("bbox", "bev", "3d")
# Overlap sets, min_overlap[set][metric] = (Car, Pedestrian, Cyclist). "strict" is the current
# official devkit; "loose" is the older BEV/3D set that the python port also reports.
OVERLAP_SETS: Tuple[str, ...] = ("strict", "loose")
MIN_OVERLAP: Dict[str, Dict[str, Tuple[float, float, float]]] = {
    "strict": {"bbox": (0.7, 0.5, 0.5), "bev": (0.7, 0.5, 0.5), "3d": (0.7, 0.5, 0.5)},
    "loose": {"bbox": (0.7, 0.5, 0.5), "bev": (0.5, 0.25, 0.25), "3d": (0.5, 0.25, 0.25)},
}

# Precision is sampled at up to 41 score thresholds (recall ~ k/40).
NUM_SAMPLE_POINTS = 41
# A detection whose alpha equals this value has no orientation; AOS is then not computed.
NO_ALPHA = -10.0


def min_overlap(overlap_set: str, metric: str, cls: str) -> float:
    """The minimum overlap (strict ``>``) of one class for one metric and overlap set."""
    return MIN_OVERLAP[overlap_set][metric][CLASSES.index(cls)]
