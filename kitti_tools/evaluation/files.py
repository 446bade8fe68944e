"""Evaluation of a folder of result files against a folder of label_2 files.

Frames are matched by id (``<id>.txt``). Every id must have a label file; a frame without
detections is normally an empty result file, and a missing result file is an error unless
``allow_missing=True`` treats it as empty. All missing files are reported in one error.
"""
import os
from typing import List, Optional, Sequence

from pointdistiller.kitti_tools.io import KittiObjects, read_label

from pointdistiller.kitti_tools.evaluation import params
from pointdistiller.kitti_tools.evaluation.core import EvalResult, evaluate

# how many missing ids an error message lists before "..."
_LIST_LIMIT = 10


class MissingFramesError(ValueError):
    """Some frame ids lack a label file or a result file.

    Attributes:
        missing_gt: ids without ``<gt_dir>/<id>.txt``.
        missing_det: ids without ``<det_dir>/<id>.txt``.
    """

    def __init__(self, gt_dir: str, det_dir: str, missing_gt: List[str], missing_det: List[str],
                 allow_missing: bool):
        self.missing_gt = missing_gt
        self.missing_det = missing_det
        parts = []
        if missing_gt:
            parts.append(f"{len(missing_gt)} id(s) have no label file in {gt_dir}: "
                         f"{_short_list(missing_gt)}")
        if missing_det:
            parts.append(f"{len(missing_det)} id(s) have no result file in {det_dir}: "
                         f"{_short_list(missing_det)}")
        hints = ["pass an id list (--ids) to evaluate a subset"]
        if missing_det and not allow_missing:
            hints.append("--allow-missing treats a missing result file as a frame without detections")
        super().__init__("missing frames: " + "; ".join(parts) + " (" + "; ".join(hints) + ")")


def _short_list(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:_LIST_LIMIT])
    return shown + (f", ... ({len(ids) - _LIST_LIMIT} more)" if len(ids) > _LIST_LIMIT else "")


def _txt_ids(folder: str, name: str) -> List[str]:
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{name}: {folder} is not a directory")
    return sorted(f[:-4] for f in os.listdir(folder) if f.endswith(".txt"))


def evaluate_dirs(gt_dir: str, det_dir: str, ids: Optional[Sequence[str]] = None,
                  allow_missing: bool = False,
                  classes: Sequence[str] = params.CLASSES) -> EvalResult:
    """Reads ``<gt_dir>/<id>.txt`` (label_2, 15 fields) and ``<det_dir>/<id>.txt`` (results,
    16 fields) and evaluates them with :func:`~.core.evaluate`.

    Args:
        gt_dir: the label_2 folder.
        det_dir: the result folder.
        ids: frame ids to evaluate (e.g. from ``read_ids("ImageSets/val.txt")``); None: every id
            that has a file in either folder (which then must be present in both).
        allow_missing: treat a missing result file as a frame without detections.
        classes: classes to evaluate.

    Raises:
        MissingFramesError: listing the ids without a label file and those without a result file.
        KittiFormatError: ``path:line:`` of a malformed line.
        FileNotFoundError: a folder does not exist.
    """
    gt_ids = set(_txt_ids(gt_dir, "gt_dir"))
    det_ids = set(_txt_ids(det_dir, "det_dir"))
    if ids is None:
        ids = sorted(gt_ids | det_ids)
        if not ids:
            raise FileNotFoundError(f"gt_dir: no .txt label files in {gt_dir}")
    ids = [str(i) for i in ids]
    missing_gt = [i for i in ids if i not in gt_ids]
    missing_det = [i for i in ids if i not in det_ids]
    if missing_gt or (missing_det and not allow_missing):
        raise MissingFramesError(gt_dir, det_dir, missing_gt, missing_det, allow_missing)
    gt_annos, dt_annos = [], []
    for frame_id in ids:
        gt_annos.append(read_label(os.path.join(gt_dir, frame_id + ".txt"), kind="label"))
        if frame_id in det_ids:
            dt_annos.append(read_label(os.path.join(det_dir, frame_id + ".txt"), kind="result"))
        else:
            dt_annos.append(KittiObjects.empty(with_score=True))
    return evaluate(gt_annos, dt_annos, classes=classes)
