"""Where a PointRCNN model loses cars: recall of the ground-truth cars of the first val frames by
the stage-1 proposals, by the refined RoIs and by the final detections (BEV IoU 0.5 / 0.7, by
distance), whether stage 2 improves the proposals' boxes, and how well its IoU score ranks them.

    python scripts/point_rcnn_recall.py CONFIG CHECKPOINT [--frames 24]

A diagnostic for the PointRCNN issue (README, "PointRCNN"); one CPU thread.
"""
import argparse
from collections import defaultdict

import numpy as np
import torch

from pointdistiller.config import load_config
from pointdistiller.detectors.build import build_detector
from pointdistiller.detectors.heads.point_rcnn_roi_head import decode_roi_boxes
from pointdistiller.detectors.post_processing import class_wise_nms
from pointdistiller.engine.checkpoint import load_checkpoint, load_model_weights
from pointdistiller.engine.data import build_loader, resolve_dataset_root
from pointdistiller.engine.sections import DataConfig, TrainConfig
from pointdistiller.ops.iou3d import boxes_iou_bev

CAR = 0
BANDS = ((0.0, 20.0), (20.0, 35.0), (35.0, float("inf")))


def best_iou(gt: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Per ground-truth box, its best BEV IoU with ``boxes`` (0 without boxes)."""
    if len(boxes) == 0:
        return torch.zeros(len(gt))
    return boxes_iou_bev(gt, boxes).max(dim=1).values


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("checkpoint")
    parser.add_argument("--frames", type=int, default=24)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cfg = load_config(args.config)
    model = build_detector(cfg.model)
    load_model_weights(model, load_checkpoint(args.checkpoint), args.checkpoint)
    model.eval()
    data, train = cfg.data or DataConfig(), cfg.train or TrainConfig()
    loader, _ = build_loader(resolve_dataset_root(data, lambda *_: None), data, cfg.model, train,
                             data.val_split, training=False)
    rc = model.roi_head.cfg
    recall = defaultdict(lambda: [0, 0])          # (stage, IoU, band) -> [hits, cars]
    pairs = []                                    # car RoIs: (proposal IoU, refined IoU, IoU score)
    frames = 0
    with torch.no_grad():
        for batch in loader:
            out = model(batch)
            r = out.head.roi
            refined = decode_roi_boxes(r.rois.float(), r.reg.float())
            score = torch.sigmoid(r.cls[:, 0].float())
            for b in range(len(batch.frame_ids)):
                g = slice(int(batch.gt_offsets[b]), int(batch.gt_offsets[b + 1]))
                cars = batch.gt_boxes[g][batch.gt_labels[g] == CAR]
                s = slice(int(r.roi_offsets[b]), int(r.roi_offsets[b + 1]))
                if len(cars) == 0:
                    continue
                keep = score[s] > rc.score_threshold
                final = class_wise_nms(refined[s][keep], score[s][keep], r.roi_labels[s][keep],
                                       rc.nms_iou, rc.max_detections)
                is_car = r.roi_labels[s] == CAR
                stages = {"proposals": r.rois[s][is_car].float(), "refined RoIs": refined[s][is_car],
                          "final": final.boxes[final.labels == CAR]}
                dist = cars[:, :2].norm(dim=1)
                for stage, boxes in stages.items():
                    iou = best_iou(cars, boxes)
                    for thr in (0.5, 0.7):
                        for lo, hi in BANDS + ((0.0, float("inf")),):
                            m = (dist >= lo) & (dist < hi)
                            cell = recall[(stage, thr, (lo, hi))]
                            cell[0] += int((iou[m] >= thr).sum())
                            cell[1] += int(m.sum())
                if is_car.any():
                    ious = boxes_iou_bev(r.rois[s][is_car].float(), cars)
                    best = ious.max(dim=1)
                    after = boxes_iou_bev(refined[s][is_car], cars)[torch.arange(len(best.indices)),
                                                                      best.indices]
                    for a, c, d in zip(best.values.tolist(), after.tolist(), score[s][is_car].tolist()):
                        if a >= 0.3:
                            pairs.append((a, c, d))
            frames += len(batch.frame_ids)
            if frames >= args.frames:
                break
    print(f"{frames} val frames; final NMS: score > {rc.score_threshold}, IoU {rc.nms_iou}")
    print("car recall (BEV IoU >= thr), by distance from the sensor:")
    for (stage, thr, (lo, hi)), (hits, total) in sorted(recall.items()):
        band = "all" if (lo, hi) == (0.0, float("inf")) else f"{lo:.0f}-{hi:.0f} m"
        print(f"  {stage:<13} IoU {thr}  {band:<9} {hits:>4}/{total:<4} {hits / max(total, 1):.2f}")
    p = np.asarray(pairs).reshape(-1, 3)
    print("car RoIs by their proposal's IoU with the best car: median refined IoU, share improved, "
          "median IoU score")
    for lo, hi in ((0.3, 0.5), (0.5, 0.7), (0.7, 1.01)):
        m = (p[:, 0] >= lo) & (p[:, 0] < hi)
        if m.any():
            print(f"  {lo}-{min(hi, 1.0)}: {int(m.sum()):>4} RoIs, proposal {np.median(p[m, 0]):.3f} -> "
                  f"refined {np.median(p[m, 1]):.3f}, improved {np.mean(p[m, 1] > p[m, 0]):.2f}, "
                  f"score {np.median(p[m, 2]):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
