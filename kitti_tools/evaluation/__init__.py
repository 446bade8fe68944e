"""The official-compatible KITTI 3D-object evaluator (R11/R40 AP for bbox, BEV, 3D and AOS).

    from pointdistiller.kitti_tools.evaluation import evaluate, evaluate_dirs
    result = evaluate_dirs("training/label_2", "results/data", ids=read_ids("ImageSets/val.txt"))
    print(result.summary(), end="")
    result.to_json_dict()["strict"]["Car"]["3d"]["R40"]   # [easy, moderate, hard], percent
"""
from pointdistiller.kitti_tools.evaluation.core import EvalResult, ap_r11, ap_r40, evaluate, score_thresholds
from pointdistiller.kitti_tools.evaluation.files import MissingFramesError, evaluate_dirs
from pointdistiller.kitti_tools.evaluation.overlaps import bev_iou, camera_boxes, image_iou, iou3d

__all__ = ["EvalResult", "MissingFramesError", "ap_r11", "ap_r40", "bev_iou", "camera_boxes",
           "evaluate", "evaluate_dirs", "image_iou", "iou3d", "score_thresholds"]
